-- Local user accounts. Passwords are PBKDF2-SHA-256 hashes with a per-user salt.
CREATE TABLE users (
  id                   INTEGER PRIMARY KEY,
  name                 TEXT NOT NULL UNIQUE,
  email                TEXT NOT NULL DEFAULT '',
  password_hash        TEXT,
  password_salt        TEXT,
  password_iterations  INTEGER,
  admin                INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
  disabled             INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
  created_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  updated_at           TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE groups (
  id           INTEGER PRIMARY KEY,
  name         TEXT NOT NULL UNIQUE,
  description  TEXT NOT NULL DEFAULT '',
  admin        INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
  created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE group_members (
  group_id  INTEGER NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
  user_id   INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_by_user ON group_members(user_id);

-- A permission target selects repositories and image paths, then grants
-- actions to users, groups and the anonymous user.
--   repositories: JSON array of repository keys, or ["ANY LOCAL"] or ["ANY"].
--   include_patterns, exclude_patterns: JSON arrays of Ant-style patterns
--   matched against the image path; an exclude match wins.
CREATE TABLE permission_targets (
  id                INTEGER PRIMARY KEY,
  name              TEXT NOT NULL UNIQUE,
  repositories      TEXT NOT NULL,
  include_patterns  TEXT NOT NULL DEFAULT '["**"]',
  exclude_patterns  TEXT NOT NULL DEFAULT '[]',
  created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  updated_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- principal_type 'anonymous' has principal_name ''. actions is a JSON array
-- of read, annotate, deploy, delete and manage.
CREATE TABLE permission_grants (
  target_id       INTEGER NOT NULL REFERENCES permission_targets(id) ON DELETE CASCADE,
  principal_type  TEXT NOT NULL CHECK (principal_type IN ('user', 'group', 'anonymous')),
  principal_name  TEXT NOT NULL,
  actions         TEXT NOT NULL,
  PRIMARY KEY (target_id, principal_type, principal_name)
);
CREATE INDEX permission_grants_by_principal ON permission_grants(principal_type, principal_name);

-- Access tokens and refresh tokens. Only the SHA-256 of the secret is stored.
--   scope: JSON {"repositories": [...], "actions": [...]} that narrows the
--   user's permissions, or NULL for all of them.
CREATE TABLE access_tokens (
  id            TEXT PRIMARY KEY,
  user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  kind          TEXT NOT NULL CHECK (kind IN ('access', 'refresh')),
  name          TEXT NOT NULL,
  secret_hash   TEXT NOT NULL UNIQUE,
  scope         TEXT,
  expires_at    TEXT,
  created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  last_used_at  TEXT,
  revoked_at    TEXT
);
CREATE INDEX access_tokens_by_user ON access_tokens(user_id, kind);

-- Failed logins counted per key ("user:<name>" or "address:<ip>") in a
-- fixed window.
CREATE TABLE login_failures (
  key           TEXT PRIMARY KEY,
  failures      INTEGER NOT NULL,
  window_start  INTEGER NOT NULL
);

CREATE TABLE audit_log (
  id          INTEGER PRIMARY KEY,
  time        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  actor       TEXT NOT NULL,
  action      TEXT NOT NULL,
  target      TEXT NOT NULL DEFAULT '',
  client_address TEXT NOT NULL DEFAULT '',
  detail      TEXT
);
CREATE INDEX audit_log_by_time ON audit_log(time);

-- Trusted OpenID Connect issuers for keyless CI logins.
--   rules: JSON array of {"claims": {name: value or "prefix*"}, "user": name}
--   or {..., "group": name}; the first rule whose claims all match wins.
CREATE TABLE oidc_issuers (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  issuer      TEXT NOT NULL UNIQUE,
  audience    TEXT NOT NULL,
  jwks_url    TEXT NOT NULL,
  rules       TEXT NOT NULL,
  created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
