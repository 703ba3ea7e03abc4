-- Consent evidence of each stored submission. Device times and the device
-- are kept here because they are the evidence; destroyed with the submission.
CREATE TABLE consent_records (
  submission_id     INTEGER PRIMARY KEY REFERENCES submissions(id),
  form_version_id   INTEGER NOT NULL REFERENCES form_versions(id),
  outcome           TEXT    NOT NULL,
  legal_basis       TEXT    NOT NULL,
  field             TEXT    NOT NULL DEFAULT '',
  statement_version TEXT    NOT NULL DEFAULT '',
  language          TEXT    NOT NULL DEFAULT '',
  device_start      INTEGER,
  device_end        INTEGER,
  received_at       INTEGER NOT NULL,
  device_user_id    INTEGER NOT NULL,
  device_id         TEXT    NOT NULL DEFAULT ''
);

-- Submissions not kept because consent was refused or not recorded: a count
-- per form and day, nothing else.
CREATE TABLE consent_refusals (
  form_id INTEGER NOT NULL REFERENCES forms(id),
  day     TEXT    NOT NULL,
  count   INTEGER NOT NULL,
  PRIMARY KEY (form_id, day)
);

-- Withdrawn consent: that it happened and when, and a keyed hash of the
-- instanceID (under the project key) so a device's resend is not stored again.
CREATE TABLE consent_withdrawals (
  id           INTEGER PRIMARY KEY,
  form_id      INTEGER NOT NULL REFERENCES forms(id),
  instance_mac BLOB    NOT NULL,
  submitted_on TEXT    NOT NULL,
  withdrawn_at INTEGER NOT NULL,
  recorded_by  INTEGER NOT NULL REFERENCES actors(id)
);
CREATE INDEX consent_withdrawals_mac ON consent_withdrawals(form_id, instance_mac);

-- The audit trail: append-only, each event chained to the one before by a
-- keyed hash (HMAC under a key derived from the master key).
CREATE TABLE audits (
  id         INTEGER PRIMARY KEY,
  at         INTEGER NOT NULL,
  actor_id   INTEGER,
  actor      TEXT    NOT NULL DEFAULT '',
  action     TEXT    NOT NULL,
  project_id INTEGER,
  object     TEXT    NOT NULL DEFAULT '',
  address    TEXT    NOT NULL DEFAULT '',
  outcome    TEXT    NOT NULL,
  details    TEXT    NOT NULL DEFAULT '',
  hash       BLOB    NOT NULL
);
CREATE INDEX audits_actor ON audits(actor_id, id);
CREATE INDEX audits_action ON audits(action, id);
CREATE INDEX audits_at ON audits(at);
CREATE TRIGGER audits_no_update BEFORE UPDATE ON audits BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audits_no_delete BEFORE DELETE ON audits BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
