-- Haven's database: run as the postgres superuser (psql -f postgres.sql).
-- Change the password, and give the same one in haven.env.
CREATE ROLE haven LOGIN PASSWORD 'change me';
CREATE DATABASE haven OWNER haven;
-- A project's destruction ends with a checkpoint past the WAL that held it.
GRANT pg_checkpoint TO haven;
-- And in postgresql.conf (then reload):
--   wal_recycle = off        # old WAL segments are removed, not renamed and kept
