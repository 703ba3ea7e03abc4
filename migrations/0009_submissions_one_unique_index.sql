-- haven: foreign keys off
-- (The line above tells the runner that this migration rebuilds a table
-- other tables refer to: SQLite's foreign keys are switched off while it
-- runs, and every reference is checked before it commits.)
--
-- submissions carried its own UNIQUE (form_id, instance_id), an index that
-- repeats one submission_versions already has: a submission's instanceID is
-- its first version's, and versions are only ever removed with their
-- submission. Devices' instanceIDs are random UUIDs, so every submission
-- wrote one more random index page to the write-ahead log: of about 5.5
-- pages per small submission, 1.3 were this index (see BENCHMARKS.md).
-- Lookups by instanceID now go through the versions' index.
--
-- SQLite cannot drop an index that belongs to a table's constraint, so the
-- table is rebuilt as SQLite's documentation describes: new table, copy,
-- drop, rename, indexes. The references of submission_versions,
-- consent_records and subject_index name "submissions" and so point at the
-- new table once it is renamed. secure_delete overwrites the old pages.
CREATE TABLE submissions_new (
  id           INTEGER PRIMARY KEY,
  form_id      INTEGER NOT NULL REFERENCES forms(id),
  instance_id  TEXT    NOT NULL,
  submitter_id INTEGER NOT NULL REFERENCES actors(id),
  device_id    TEXT    NOT NULL DEFAULT '',
  review_state TEXT,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER
);
INSERT INTO submissions_new (id, form_id, instance_id, submitter_id, device_id, review_state, created_at, updated_at)
  SELECT id, form_id, instance_id, submitter_id, device_id, review_state, created_at, updated_at FROM submissions;
DROP TABLE submissions;
ALTER TABLE submissions_new RENAME TO submissions;
CREATE INDEX submissions_form_created ON submissions(form_id, created_at, id);
