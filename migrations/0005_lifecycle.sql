-- Project lifecycle: an end date, a retention period after it, and the
-- destruction that follows.
ALTER TABLE projects ADD COLUMN end_date INTEGER;            -- ms; NULL: no end date set
ALTER TABLE projects ADD COLUMN retention_days INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN destruction_started_at INTEGER;
ALTER TABLE projects ADD COLUMN destroyed_at INTEGER;

CREATE TABLE legal_holds (
  id         INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  reason     TEXT    NOT NULL,
  reference  TEXT    NOT NULL,
  placed_by  INTEGER NOT NULL REFERENCES actors(id),
  placed_at  INTEGER NOT NULL,
  lifted_by  INTEGER REFERENCES actors(id),
  lifted_at  INTEGER
);
CREATE UNIQUE INDEX legal_holds_standing ON legal_holds(project_id) WHERE lifted_at IS NULL;

-- What a destruction removed, counted as it goes (so a resumed destruction
-- still certifies the whole), and the certificate it ends with.
CREATE TABLE destruction_counts (
  project_id INTEGER NOT NULL REFERENCES projects(id),
  kind       TEXT    NOT NULL,
  count      INTEGER NOT NULL,
  PRIMARY KEY (project_id, kind)
);
CREATE TABLE destruction_certificates (
  project_id INTEGER PRIMARY KEY REFERENCES projects(id),
  body       TEXT    NOT NULL,  -- the certificate, JSON, as signed
  signature  BLOB    NOT NULL   -- Ed25519 by the server's key
);
