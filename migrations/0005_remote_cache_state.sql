-- Cache state of remote repositories. Times are Unix seconds.

-- When each cached tag was last checked against the upstream. A tag whose
-- check is older than tag_cache_seconds is revalidated with a HEAD upstream.
CREATE TABLE remote_tags (
  image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  tag         TEXT NOT NULL,
  checked_at  INTEGER NOT NULL,
  PRIMARY KEY (image_id, tag)
);

-- Manifest references that the upstream returned 404 for. The image may not
-- exist locally, so rows are keyed by image name, not image id.
CREATE TABLE remote_missing_manifests (
  repository_key  TEXT NOT NULL REFERENCES repositories(key) ON DELETE CASCADE,
  image_name      TEXT NOT NULL,
  reference       TEXT NOT NULL,
  missed_at       INTEGER NOT NULL,
  PRIMARY KEY (image_name, reference)
);

-- After an upstream 429, no upstream request is sent for the repository
-- before this time. NULL when the upstream has not rate-limited it.
ALTER TABLE remote_repositories ADD COLUMN upstream_retry_at INTEGER;
