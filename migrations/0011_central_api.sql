-- What ODK Central's clients expect of Haven.

-- An app user's token, sealed by the master key, so that those who manage
-- app users can see it again (the form access page, a QR code printed
-- later) as in Central. The SHA-256 beside it still answers the devices.
-- App users made before this migration have none: their tokens are shown
-- only at creation.
ALTER TABLE field_keys ADD COLUMN token_sealed BLOB;

-- Archived projects are kept but set aside.
ALTER TABLE projects ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;

-- The XLSForm a version was converted from, as uploaded (a form
-- definition, not collected data), and its content type.
ALTER TABLE form_versions ADD COLUMN xlsx BLOB;
ALTER TABLE form_versions ADD COLUMN xlsx_type TEXT;

-- Which forms an app user may list, download and submit to, as in
-- Central. App users that existed before keep every form of their project.
CREATE TABLE form_assignments (
  form_id    INTEGER NOT NULL REFERENCES forms(id),
  actor_id   INTEGER NOT NULL REFERENCES actors(id),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (form_id, actor_id)
);
INSERT INTO form_assignments (form_id, actor_id, created_at)
  SELECT f.id, k.actor_id, CAST(strftime('%s', 'now') AS INTEGER) * 1000
  FROM field_keys k JOIN forms f ON f.project_id = k.project_id;

-- Comments on submissions, sealed under the project's key (they are free
-- text about collected data). tier is the author's clearance when they
-- wrote it: a reader sees the comments of tiers they are cleared for.
CREATE TABLE submission_comments (
  id            INTEGER PRIMARY KEY,
  submission_id INTEGER NOT NULL REFERENCES submissions(id),
  actor_id      INTEGER NOT NULL REFERENCES actors(id),
  tier          TEXT    NOT NULL,
  body          BLOB    NOT NULL,
  created_at    INTEGER NOT NULL
);
CREATE INDEX submission_comments_submission ON submission_comments(submission_id);
