-- Where the deployment's keys are: the key store folder of one data
-- directory (data_dir_id), or a bucket of the object store that every node
-- reads (key_store_id, the id written in that bucket). And a check value
-- of the master key (an HMAC under it of a fixed text), so that a node
-- started with another master key is refused before it writes anything.
ALTER TABLE deployment ALTER COLUMN data_dir_id DROP NOT NULL;
ALTER TABLE deployment ADD COLUMN key_store_id TEXT;
ALTER TABLE deployment ADD COLUMN master_check BYTEA;
