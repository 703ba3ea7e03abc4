-- Background exports, in the database so that any node answers for them:
-- started on one node, watched and downloaded through any other. The node
-- running a job writes its progress every second (seen_at); a job not seen
-- for a while died with its node. The finished file is an encrypted blob
-- of the project (its key wrapped by the project key), removed with the
-- row once downloaded or an hour after it finished.
CREATE TABLE export_jobs (
  id           TEXT    PRIMARY KEY,
  owner_id     INTEGER NOT NULL,
  project_id   INTEGER NOT NULL REFERENCES projects(id),
  xml_form_id  TEXT    NOT NULL,
  state        TEXT    NOT NULL,
  total        INTEGER NOT NULL,
  submissions  INTEGER NOT NULL DEFAULT 0,
  bytes        INTEGER NOT NULL DEFAULT 0,
  file_name    TEXT    NOT NULL,
  content_type TEXT    NOT NULL,
  omitted      TEXT    NOT NULL,
  error        TEXT    NOT NULL DEFAULT '',
  started_at   INTEGER NOT NULL,
  seen_at      INTEGER NOT NULL,
  finished_at  INTEGER,
  expires_at   INTEGER,
  blob_id      INTEGER REFERENCES blobs(id)
);
CREATE INDEX export_jobs_owner ON export_jobs(owner_id, state);
