-- The nodes serving from this database, each refreshing its row every few
-- seconds: a node with files of its own (not on the object store) is
-- refused while another serves, and a node is refused while one with
-- files of its own serves. Unlogged: a database crash forgets them, and
-- the nodes write them again at their next beat.
CREATE UNLOGGED TABLE nodes (
  id           TEXT    PRIMARY KEY,
  host         TEXT    NOT NULL,
  pid          BIGINT  NOT NULL,
  shared_files INTEGER NOT NULL,
  started_at   BIGINT  NOT NULL,
  seen_at      BIGINT  NOT NULL
);
