-- The admin API ends every batch that changes users, groups or group members
-- by inserting the number of enabled administrators that remain, then
-- deleting that row again. At zero the CHECK constraint fails the insert, and
-- D1 rolls back the whole batch, so no request, and no pair of concurrent
-- requests, can remove the last enabled administrator. The table stays empty.
CREATE TABLE administrator_guard (
  enabled_administrators  INTEGER NOT NULL CHECK (enabled_administrators > 0)
);
