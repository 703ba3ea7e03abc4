-- Access rules. Address allowlists per project, for the API and console and
-- separately for device endpoints: comma-separated CIDR ranges, empty for
-- "any address the site allows".
ALTER TABLE projects ADD COLUMN api_allow TEXT NOT NULL DEFAULT '';
ALTER TABLE projects ADD COLUMN device_allow TEXT NOT NULL DEFAULT '';

-- A session's refresh token: only its SHA-256 is kept, and it changes at
-- every refresh, so a stolen and replayed one ends the session.
ALTER TABLE sessions ADD COLUMN refresh_hash BLOB;
