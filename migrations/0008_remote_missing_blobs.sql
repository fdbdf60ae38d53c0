-- Blobs that the upstream of a remote repository returned 404 for, so that
-- a repeated request for a missing blob sends no upstream request within
-- negative_cache_seconds. Keyed by image name, because registries scope
-- blobs to a repository path. Times are Unix seconds.
CREATE TABLE remote_missing_blobs (
  repository_key  TEXT NOT NULL REFERENCES repositories(key) ON DELETE CASCADE,
  image_name      TEXT NOT NULL,
  digest          TEXT NOT NULL,
  missed_at       INTEGER NOT NULL,
  PRIMARY KEY (image_name, digest)
);
