-- The data directory a database belongs to: while the key store and local
-- files are a node's own, one directory (one node, and its admin commands)
-- uses a database. PostgreSQL only: SQLite's database is in the directory.
CREATE TABLE deployment (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  data_dir_id TEXT    NOT NULL
);

-- Submission-key slots, numbered by the database so that nodes sharing it
-- never number two keys alike (SQLite's single process counts in memory).
CREATE TABLE key_slot_counters (
  project_key_id BIGINT PRIMARY KEY,
  last           BIGINT NOT NULL
);

-- Digest nonces in use, shared by the nodes: a captured Authorization
-- header replayed to another node is refused there too. Unlogged: losing
-- it in a database crash only makes devices answer one more challenge.
CREATE UNLOGGED TABLE digest_nonces (
  nonce  TEXT   PRIMARY KEY,
  addr   TEXT   NOT NULL,
  nc     BIGINT NOT NULL,
  issued BIGINT NOT NULL
);
CREATE INDEX digest_nonces_issued ON digest_nonces(issued);

-- Failed logins, counted by every node alike (app/guard.go): per account
-- and address, per address, per account; and where accounts signed in.
-- Unlogged: a database crash forgets them, as a restart does on SQLite.
CREATE UNLOGGED TABLE login_strikes (
  key   TEXT    PRIMARY KEY,
  n     INTEGER NOT NULL,
  last  BIGINT  NOT NULL,
  until BIGINT  NOT NULL
);
CREATE UNLOGGED TABLE login_known (
  pair TEXT   PRIMARY KEY,
  at   BIGINT NOT NULL
);
