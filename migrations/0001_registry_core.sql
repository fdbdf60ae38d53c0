-- Repositories are the top-level containers that users create (docker-local).
-- Image names inside them are "<repository key>/<path>".
CREATE TABLE repositories (
  key          TEXT PRIMARY KEY,
  type         TEXT NOT NULL CHECK (type IN ('local')),
  description  TEXT NOT NULL DEFAULT '',
  created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- One row per OCI repository (an image name such as docker-local/team/app).
CREATE TABLE images (
  id              INTEGER PRIMARY KEY,
  repository_key  TEXT NOT NULL REFERENCES repositories(key) ON DELETE CASCADE,
  name            TEXT NOT NULL UNIQUE,
  created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX images_by_repository ON images(repository_key, name);

-- Blob content, stored once per deployment whatever image it was pushed to.
CREATE TABLE blobs (
  digest       TEXT PRIMARY KEY,
  size         INTEGER NOT NULL,
  storage_key  TEXT NOT NULL,
  sha1         TEXT NOT NULL,
  md5          TEXT NOT NULL,
  created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX blobs_by_sha1 ON blobs(sha1);
CREATE INDEX blobs_by_md5 ON blobs(md5);

-- An image serves a blob only when the blob is linked to it.
CREATE TABLE blob_links (
  image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  digest      TEXT NOT NULL REFERENCES blobs(digest),
  created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (image_id, digest)
);
CREATE INDEX blob_links_by_digest ON blob_links(digest);

-- Manifest bytes live in R2 under manifests/<algorithm>/<hex>; this row is
-- the image's claim on them plus what the referrers API needs.
CREATE TABLE manifests (
  image_id        INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  digest          TEXT NOT NULL,
  media_type      TEXT NOT NULL,
  artifact_type   TEXT,
  size            INTEGER NOT NULL,
  subject_digest  TEXT,
  annotations     TEXT,
  created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (image_id, digest)
);
CREATE INDEX manifests_by_subject ON manifests(image_id, subject_digest);

-- What each manifest references: layers and config (kind 'blob') or child
-- manifests of an index (kind 'manifest').
CREATE TABLE manifest_references (
  image_id         INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  manifest_digest  TEXT NOT NULL,
  target_digest    TEXT NOT NULL,
  kind             TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
  PRIMARY KEY (image_id, manifest_digest, target_digest)
);
CREATE INDEX manifest_references_by_target ON manifest_references(image_id, target_digest);

CREATE TABLE tags (
  image_id    INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  name        TEXT NOT NULL,
  digest      TEXT NOT NULL,
  updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  PRIMARY KEY (image_id, name),
  -- Deleting a manifest removes its tags, so no tag points at a missing one.
  FOREIGN KEY (image_id, digest) REFERENCES manifests(image_id, digest) ON DELETE CASCADE
);
CREATE INDEX tags_by_digest ON tags(image_id, digest);

INSERT INTO repositories (key, type, description)
VALUES ('docker-local', 'local', 'Default local Docker repository');
