-- Upstream credentials, automatic offline periods and the scheduled refresh
-- of remote repositories. Times are Unix seconds.

-- The upstream password, encrypted with AES-GCM under the CREDENTIALS_KEY
-- secret, as "v1:<base64 IV>:<base64 ciphertext and tag>". NULL when none is set.
ALTER TABLE remote_repositories ADD COLUMN password_ciphertext TEXT;

-- Consecutive upstream failures (connection error, timeout, 5xx, 429) after
-- which no upstream request is sent for offline_seconds.
ALTER TABLE remote_repositories ADD COLUMN failure_threshold INTEGER NOT NULL DEFAULT 3 CHECK (failure_threshold BETWEEN 1 AND 100);
ALTER TABLE remote_repositories ADD COLUMN offline_seconds INTEGER NOT NULL DEFAULT 300 CHECK (offline_seconds BETWEEN 0 AND 86400);
ALTER TABLE remote_repositories ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0);
-- No upstream request is sent before this time. NULL when not offline automatically.
ALTER TABLE remote_repositories ADD COLUMN offline_until INTEGER;

-- Tags pulled within this many seconds are refreshed by the Cron Trigger; 0 turns refresh off.
ALTER TABLE remote_repositories ADD COLUMN recent_pull_seconds INTEGER NOT NULL DEFAULT 86400 CHECK (recent_pull_seconds BETWEEN 0 AND 31536000);

-- When a client last pulled the cached tag, recorded at most once a minute. NULL when never pulled.
ALTER TABLE remote_tags ADD COLUMN pulled_at INTEGER;
CREATE INDEX remote_tags_by_checked_at ON remote_tags (checked_at);
