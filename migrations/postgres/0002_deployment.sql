-- The data directory a database belongs to: while the key store and local
-- files are a node's own, one directory (one node, and its admin commands)
-- uses a database. PostgreSQL only: SQLite's database is in the directory.
CREATE TABLE deployment (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  data_dir_id TEXT    NOT NULL
);
