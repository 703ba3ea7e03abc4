-- Background exports: the same table as SQLite's 0014_export_jobs.sql.
CREATE TABLE export_jobs (
  id           TEXT    PRIMARY KEY,
  owner_id     BIGINT  NOT NULL,
  project_id   BIGINT  NOT NULL REFERENCES projects(id),
  xml_form_id  TEXT    NOT NULL,
  state        TEXT    NOT NULL,
  total        BIGINT  NOT NULL,
  submissions  BIGINT  NOT NULL DEFAULT 0,
  bytes        BIGINT  NOT NULL DEFAULT 0,
  file_name    TEXT    NOT NULL,
  content_type TEXT    NOT NULL,
  omitted      TEXT    NOT NULL,
  error        TEXT    NOT NULL DEFAULT '',
  started_at   BIGINT  NOT NULL,
  seen_at      BIGINT  NOT NULL,
  finished_at  BIGINT,
  expires_at   BIGINT,
  blob_id      BIGINT  REFERENCES blobs(id)
);
CREATE INDEX export_jobs_owner ON export_jobs(owner_id, state);
