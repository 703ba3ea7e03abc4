-- A key per submission (storage/subkeys.go). key_slot names the slot of
-- the submission's key in its project's slot file, in the key store;
-- NULL for a submission still sealed under its project's key (stored
-- before submissions had keys, until the migration on start reseals it).
ALTER TABLE submissions ADD COLUMN key_slot INTEGER;
-- The submission key that wraps a file's own key; NULL: the project key.
ALTER TABLE blobs ADD COLUMN key_slot INTEGER;
-- Slots whose submission was erased: zeroed in the key store right after
-- the erasure commits, and again when the store opens (in case it stopped
-- in between), then forgotten.
CREATE TABLE key_slot_erasures (
  project_key_id INTEGER NOT NULL,
  slot           INTEGER NOT NULL,
  PRIMARY KEY (project_key_id, slot)
);
