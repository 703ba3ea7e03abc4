-- Entities (ODK entity lists, Central's "datasets"): lists declared by the
-- forms that save to them, their properties with a purpose and a tier like
-- any field, the entities and every version of each. A version's label and
-- values are sealed under the entity's own key (a slot in the project's
-- slot file, as submissions have): erasing an entity zeroes it.
CREATE TABLE entity_lists (
  id                INTEGER PRIMARY KEY,
  project_id        INTEGER NOT NULL REFERENCES projects(id),
  name              TEXT    NOT NULL,
  approval_required INTEGER NOT NULL DEFAULT 0,
  created_at        INTEGER NOT NULL,
  -- Counts every change of the list's entities: a list made for a device
  -- is kept while it stays the same.
  changes           INTEGER NOT NULL DEFAULT 0,
  UNIQUE (project_id, name)
);

-- A property's purpose and tier: the strictest any form saving to it gives.
CREATE TABLE entity_properties (
  list_id    INTEGER NOT NULL REFERENCES entity_lists(id),
  name       TEXT    NOT NULL,
  purpose    TEXT    NOT NULL,
  tier       TEXT    NOT NULL,
  position   INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (list_id, name)
);

-- The form versions that save to a list, what they may do to it, and the
-- tier of the label they build.
CREATE TABLE entity_list_forms (
  list_id         INTEGER NOT NULL REFERENCES entity_lists(id),
  form_version_id INTEGER NOT NULL,
  actions         TEXT    NOT NULL,
  label_tier      TEXT    NOT NULL,
  PRIMARY KEY (list_id, form_version_id)
);

CREATE TABLE entities (
  id         INTEGER PRIMARY KEY,
  list_id    INTEGER NOT NULL REFERENCES entity_lists(id),
  uuid       TEXT    NOT NULL,
  key_slot   INTEGER NOT NULL,
  version    INTEGER NOT NULL,
  conflict   TEXT,
  creator_id INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER,
  deleted_at INTEGER,
  UNIQUE (list_id, uuid)
);

CREATE TABLE entity_versions (
  id                    INTEGER PRIMARY KEY,
  entity_id             INTEGER NOT NULL REFERENCES entities(id),
  version               INTEGER NOT NULL,
  base_version          INTEGER,
  trunk_version         INTEGER,
  branch_id             TEXT,
  branch_base_version   INTEGER,
  conflicting           TEXT,
  sealed                BLOB    NOT NULL,
  source                TEXT    NOT NULL,
  submission_id         INTEGER,
  submission_version_id INTEGER,
  creator_id            INTEGER NOT NULL,
  created_at            INTEGER NOT NULL,
  UNIQUE (entity_id, version)
);
CREATE INDEX entity_versions_submission ON entity_versions(submission_id);

-- Submissions whose entity blocks are still to apply: queued in the
-- transaction that stores the submission (or approves it), so a crash
-- loses none. A held row waits for an earlier offline update of the same
-- entity (held_uuid, held_branch, held_base), as Central's backlog does.
CREATE TABLE entity_queue (
  id                    INTEGER PRIMARY KEY,
  project_id            INTEGER NOT NULL,
  submission_version_id INTEGER NOT NULL,
  trigger               TEXT    NOT NULL,
  actor_id              INTEGER NOT NULL,
  queued_at             INTEGER NOT NULL,
  held_uuid             TEXT,
  held_branch           TEXT,
  held_base             INTEGER,
  UNIQUE (submission_version_id, trigger)
);

-- What one app user's devices get of a list, beyond clearance: only the
-- entities whose property holds one of the values (an enumerator's area).
CREATE TABLE entity_filters (
  list_id  INTEGER NOT NULL REFERENCES entity_lists(id),
  actor_id INTEGER NOT NULL,
  property TEXT    NOT NULL,
  vals     TEXT    NOT NULL,
  PRIMARY KEY (list_id, actor_id)
);

-- How many entities a subject's erasure erased with their submissions.
ALTER TABLE subject_erasures ADD COLUMN entities INTEGER NOT NULL DEFAULT 0;
