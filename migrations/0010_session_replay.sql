-- The refresh token a session had before its last refresh. Presenting it
-- again is a replay (the token was copied) and ends the session; a token
-- that was never the session's is refused and ends nothing, so knowing a
-- session's id (it is inside every access token) is not enough to end it.
ALTER TABLE sessions ADD COLUMN previous_refresh_hash BLOB;
