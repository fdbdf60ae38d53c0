import { RegistryError } from "../errors";
import { isConstraintFailure } from "./shared";

/** Counts enabled users who are administrators themselves or through an administrator group. */
const countEnabledAdministrators = `
  SELECT COUNT(*) FROM users u
   WHERE u.disabled = 0
     AND (u.admin = 1 OR EXISTS (SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = u.id AND g.admin = 1))`;

/**
 * Runs `statements` as one D1 batch, which is a transaction, followed by a
 * check that at least one enabled administrator remains. Throws CONFLICT
 * with `message` and changes nothing when none would remain.
 */
export async function batchKeepingAdministrator(
  db: D1Database,
  statements: D1PreparedStatement[],
  message: string,
  detail: unknown = null,
): Promise<D1Result[]> {
  const guard = [
    db.prepare(`INSERT INTO administrator_guard (enabled_administrators) ${countEnabledAdministrators}`),
    db.prepare("DELETE FROM administrator_guard"),
  ];
  try {
    const results = await db.batch([...statements, ...guard]);
    return results.slice(0, statements.length);
  } catch (error) {
    if (isConstraintFailure(error, "CHECK", "enabled_administrators")) throw new RegistryError("CONFLICT", message, detail);
    throw error;
  }
}
