-- Haven's first schema. Times are Unix milliseconds (UTC).
-- Collected values (submission XML, instance names, attachments) are stored
-- encrypted under the project's data key; the key itself is wrapped by the
-- server's master key, so destroying a project key shreds every copy.

CREATE TABLE actors (
  id           INTEGER PRIMARY KEY,
  type         TEXT    NOT NULL CHECK (type IN ('user', 'field_key')),
  display_name TEXT    NOT NULL,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL,
  deleted_at   INTEGER
);

CREATE TABLE users (
  actor_id      INTEGER PRIMARY KEY REFERENCES actors(id),
  email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
  password_hash TEXT    NOT NULL,          -- argon2id, PHC string
  digest_ha1    BLOB    NOT NULL,          -- MD5(email:realm:password) for HTTP Digest, sealed by the master key
  admin         INTEGER NOT NULL DEFAULT 0
);

-- Sessions back the JWTs: a token is valid only while its row is, so logout
-- and disabling a user revoke at once.
CREATE TABLE sessions (
  id         TEXT    PRIMARY KEY,          -- the JWT's jti
  actor_id   INTEGER NOT NULL REFERENCES actors(id),
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);

CREATE TABLE projects (
  id          INTEGER PRIMARY KEY,
  name        TEXT    NOT NULL,
  description TEXT    NOT NULL DEFAULT '',
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL
);

CREATE TABLE project_keys (
  id           INTEGER PRIMARY KEY,
  project_id   INTEGER NOT NULL REFERENCES projects(id),
  wrapped      BLOB,                       -- NULL once destroyed
  created_at   INTEGER NOT NULL,
  destroyed_at INTEGER
);
CREATE UNIQUE INDEX project_keys_live ON project_keys(project_id) WHERE destroyed_at IS NULL;

CREATE TABLE assignments (
  actor_id   INTEGER NOT NULL REFERENCES actors(id),
  project_id INTEGER NOT NULL REFERENCES projects(id),
  role       TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (actor_id, project_id, role)
);

-- App users: device tokens. Only a SHA-256 of the token is kept.
CREATE TABLE field_keys (
  actor_id   INTEGER PRIMARY KEY REFERENCES actors(id),
  project_id INTEGER NOT NULL REFERENCES projects(id),
  token_hash BLOB    NOT NULL UNIQUE,
  revoked_at INTEGER
);

-- Encrypted objects in the blob store. The object name is random and reveals
-- nothing; the per-object key is wrapped by the project key.
CREATE TABLE blobs (
  id          INTEGER PRIMARY KEY,
  project_id  INTEGER NOT NULL REFERENCES projects(id),
  object      TEXT    NOT NULL UNIQUE,
  wrapped_key BLOB    NOT NULL,
  size        INTEGER NOT NULL,            -- plaintext bytes
  md5         TEXT    NOT NULL,            -- plaintext MD5, hex (the manifest needs it)
  created_at  INTEGER NOT NULL
);

CREATE TABLE forms (
  id                 INTEGER PRIMARY KEY,
  project_id         INTEGER NOT NULL REFERENCES projects(id),
  xml_form_id        TEXT    NOT NULL,
  state              TEXT    NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closing', 'closed')),
  current_version_id INTEGER,
  draft_version_id   INTEGER,
  created_at         INTEGER NOT NULL,
  updated_at         INTEGER NOT NULL,
  UNIQUE (project_id, xml_form_id)
);

CREATE TABLE form_versions (
  id           INTEGER PRIMARY KEY,
  form_id      INTEGER NOT NULL REFERENCES forms(id),
  version      TEXT    NOT NULL,
  name         TEXT    NOT NULL,
  xml          BLOB    NOT NULL,
  md5          TEXT    NOT NULL,
  created_at   INTEGER NOT NULL,
  published_at INTEGER
);
CREATE UNIQUE INDEX form_versions_published ON form_versions(form_id, version) WHERE published_at IS NOT NULL;

CREATE TABLE form_attachments (
  form_version_id INTEGER NOT NULL REFERENCES form_versions(id),
  name            TEXT    NOT NULL,
  type            TEXT    NOT NULL,
  blob_id         INTEGER REFERENCES blobs(id),
  updated_at      INTEGER,
  PRIMARY KEY (form_version_id, name)
);

CREATE TABLE submissions (
  id           INTEGER PRIMARY KEY,
  form_id      INTEGER NOT NULL REFERENCES forms(id),
  instance_id  TEXT    NOT NULL,
  submitter_id INTEGER NOT NULL REFERENCES actors(id),
  device_id    TEXT    NOT NULL DEFAULT '',
  review_state TEXT,
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER,
  UNIQUE (form_id, instance_id)
);
CREATE INDEX submissions_form_created ON submissions(form_id, created_at, id);

CREATE TABLE submission_versions (
  id              INTEGER PRIMARY KEY,
  submission_id   INTEGER NOT NULL REFERENCES submissions(id),
  form_id         INTEGER NOT NULL REFERENCES forms(id),
  form_version_id INTEGER NOT NULL REFERENCES form_versions(id),
  instance_id     TEXT    NOT NULL,
  deprecated_id   TEXT    NOT NULL DEFAULT '',
  instance_name   BLOB,                    -- sealed by the project key
  xml             BLOB    NOT NULL,        -- sealed by the project key
  xml_mac         BLOB    NOT NULL,        -- HMAC of the plaintext XML under the project key: tells a resend from a conflict
  submitter_id    INTEGER NOT NULL REFERENCES actors(id),
  device_id       TEXT    NOT NULL DEFAULT '',
  current         INTEGER NOT NULL,
  created_at      INTEGER NOT NULL,
  UNIQUE (form_id, instance_id)
);
CREATE INDEX submission_versions_submission ON submission_versions(submission_id, id);

-- The files a version's XML names; blob_id is NULL until the file arrives.
CREATE TABLE submission_attachments (
  version_id INTEGER NOT NULL REFERENCES submission_versions(id),
  name       TEXT    NOT NULL,
  blob_id    INTEGER REFERENCES blobs(id),
  PRIMARY KEY (version_id, name)
);
