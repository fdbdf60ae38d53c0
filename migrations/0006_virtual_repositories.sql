-- Virtual repositories serve an ordered list of local and remote repositories
-- under one key. As with remote repositories, the CHECK on repositories.type
-- allows only 'local', so a virtual repository is a repositories row plus one
-- row here, and queries report the type as 'virtual' whenever this row exists.
CREATE TABLE virtual_repositories (
  repository_key              TEXT PRIMARY KEY REFERENCES repositories(key) ON DELETE CASCADE,
  -- The local member that receives pushes through the virtual key; NULL
  -- refuses pushes. Deleting that repository also removes its member row.
  default_deployment_key      TEXT REFERENCES repositories(key) ON DELETE SET NULL
);

-- Members of each virtual repository in configured order. Deleting a member
-- repository removes it from every virtual repository that lists it.
CREATE TABLE virtual_repository_members (
  virtual_key  TEXT NOT NULL REFERENCES virtual_repositories(repository_key) ON DELETE CASCADE,
  member_key   TEXT NOT NULL REFERENCES repositories(key) ON DELETE CASCADE,
  position     INTEGER NOT NULL CHECK (position >= 0),
  PRIMARY KEY (virtual_key, member_key),
  UNIQUE (virtual_key, position)
);
CREATE INDEX virtual_repository_members_by_member ON virtual_repository_members(member_key);
