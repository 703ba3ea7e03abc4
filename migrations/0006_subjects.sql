-- Data subject requests. A form may name the field that identifies the
-- person a submission is about; Haven keeps only a keyed hash of its value
-- (HMAC under the project's key, so it becomes meaningless once the key is
-- destroyed), never the value itself.
CREATE TABLE subject_index (
  submission_id INTEGER PRIMARY KEY REFERENCES submissions(id),
  project_id    INTEGER NOT NULL REFERENCES projects(id),
  subject_mac   BLOB    NOT NULL
);
CREATE INDEX subject_index_mac ON subject_index(project_id, subject_mac);

-- A person who objected: new submissions carrying the identifier are refused.
CREATE TABLE subject_objections (
  project_id  INTEGER NOT NULL REFERENCES projects(id),
  subject_mac BLOB    NOT NULL,
  recorded_at INTEGER NOT NULL,
  recorded_by INTEGER NOT NULL REFERENCES actors(id),
  PRIMARY KEY (project_id, subject_mac)
);

-- That an erasure happened, without any personal data: when, who recorded
-- it and how much it removed.
CREATE TABLE subject_erasures (
  id          INTEGER PRIMARY KEY,
  project_id  INTEGER NOT NULL REFERENCES projects(id),
  erased_at   INTEGER NOT NULL,
  recorded_by INTEGER NOT NULL REFERENCES actors(id),
  submissions INTEGER NOT NULL,
  files       INTEGER NOT NULL
);
-- The instances an erasure removed, by keyed hash, so a device resending one
-- of them does not bring it back.
CREATE TABLE erased_instances (
  form_id      INTEGER NOT NULL REFERENCES forms(id),
  instance_mac BLOB    NOT NULL,
  PRIMARY KEY (form_id, instance_mac)
);

-- A correction made on the server is a new version with a reason (sealed).
ALTER TABLE submission_versions ADD COLUMN edit_reason BLOB;
