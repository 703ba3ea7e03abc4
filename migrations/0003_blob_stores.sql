-- Which blob store holds an object ('local' or 's3'), so objects can move
-- between stores one at a time (haven storage migrate) and still be found.
ALTER TABLE blobs ADD COLUMN store TEXT NOT NULL DEFAULT 'local';
CREATE INDEX blobs_store ON blobs(store, id);
