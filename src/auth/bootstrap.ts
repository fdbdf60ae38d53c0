import type { Env } from "../env";
import { log } from "../log";
import { hashPassword } from "./passwords";

/** The name of the administrator that the first start creates from ADMIN_PASSWORD. */
export const initialAdministrator = "admin";

let bootstrapped = false;

/**
 * Creates the `admin` user from the ADMIN_PASSWORD secret when the users
 * table is empty. Returns false while the registry has no user and no
 * secret, in which case it must not serve writes.
 */
export async function ensureAdministrator(env: Env): Promise<boolean> {
  if (bootstrapped) return true;

  const existing = await env.DB.prepare("SELECT COUNT(*) AS count FROM users").first<{ count: number }>();
  if ((existing?.count ?? 0) > 0) {
    bootstrapped = true;
    return true;
  }
  if (!env.ADMIN_PASSWORD) return false;

  const password = await hashPassword(env.ADMIN_PASSWORD);
  const inserted = await env.DB.prepare(
    `INSERT INTO users (name, password_hash, password_salt, password_iterations, admin) VALUES (?, ?, ?, ?, 1)
     ON CONFLICT (name) DO NOTHING`,
  )
    .bind(initialAdministrator, password.hash, password.salt, password.iterations)
    .run();
  bootstrapped = true;
  // Concurrent first requests all find the table empty, and only the one whose insert went through records it.
  if (inserted.meta.changes === 0) return true;

  await env.DB.prepare("INSERT INTO audit_log (actor, action, target) VALUES ('system', 'user.create', ?)")
    .bind(initialAdministrator)
    .run();
  log.info("created the initial administrator from ADMIN_PASSWORD", { user: initialAdministrator });
  return true;
}
