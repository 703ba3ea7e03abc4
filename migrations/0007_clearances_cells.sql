-- Each user's clearance per project: the most sensitive tier (public,
-- level_1, level_2, level_3) whose values they may read there. No row means
-- public only.
CREATE TABLE clearances (
  actor_id   INTEGER NOT NULL REFERENCES actors(id),
  project_id INTEGER NOT NULL REFERENCES projects(id),
  clearance  TEXT    NOT NULL CHECK (clearance IN ('public', 'level_1', 'level_2', 'level_3')),
  granted_by INTEGER NOT NULL REFERENCES actors(id),
  granted_at INTEGER NOT NULL,
  PRIMARY KEY (actor_id, project_id)
);

-- The smallest count an aggregate publishes (k of the small-cell rule).
ALTER TABLE projects ADD COLUMN min_cell_size INTEGER NOT NULL DEFAULT 5 CHECK (min_cell_size >= 3);
