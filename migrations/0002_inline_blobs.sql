-- Small encrypted objects live in the database itself: they become durable
-- with the commit's one fsync instead of two fsyncs (file and folder) each.
ALTER TABLE blobs ADD COLUMN data BLOB;
