-- Remote repositories are pull-through caches of another registry. SQLite
-- cannot change the CHECK on repositories.type, and dropping that table to
-- recreate it would cascade the delete to its images. So a remote repository
-- is a repositories row (type 'local' in that column) plus one row here, and
-- queries report the type as 'remote' whenever this row exists.
CREATE TABLE remote_repositories (
  repository_key          TEXT PRIMARY KEY REFERENCES repositories(key) ON DELETE CASCADE,
  -- Base URL of the upstream registry, without /v2, such as https://registry-1.docker.io.
  url                     TEXT NOT NULL CHECK (url LIKE 'http://%' OR url LIKE 'https://%'),
  username                TEXT,
  tag_cache_seconds       INTEGER NOT NULL DEFAULT 600 CHECK (tag_cache_seconds >= 0),
  negative_cache_seconds  INTEGER NOT NULL DEFAULT 60 CHECK (negative_cache_seconds >= 0),
  offline                 INTEGER NOT NULL DEFAULT 0 CHECK (offline IN (0, 1)),
  -- Docker Hub stores official images under library/, so a one-component
  -- path such as "alpine" is requested upstream as "library/alpine".
  docker_hub              INTEGER NOT NULL DEFAULT 0 CHECK (docker_hub IN (0, 1))
);
