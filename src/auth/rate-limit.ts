import { RegistryError } from "../errors";

/** Failed logins allowed per user name, and per client address, in one window. */
export const maxFailedLogins = 10;
/** Length of the failed-login window in seconds; the count resets when it ends. */
export const failedLoginWindowSeconds = 15 * 60;

interface FailureRow {
  failures: number;
  window_start: number;
}

/** Throws TOOMANYREQUESTS, with Retry-After, when the user or the address has used up its failed logins. */
export async function assertLoginAllowed(db: D1Database, keys: string[], now = Date.now()): Promise<void> {
  for (const key of keys) {
    const row = await db.prepare("SELECT failures, window_start FROM login_failures WHERE key = ?").bind(key).first<FailureRow>();
    if (!row) continue;
    const windowEnd = row.window_start + failedLoginWindowSeconds * 1000;
    if (now < windowEnd && row.failures >= maxFailedLogins) {
      const retryAfter = Math.ceil((windowEnd - now) / 1000);
      throw new RegistryError("TOOMANYREQUESTS", `too many failed logins; retry after ${retryAfter} seconds`, null, {
        "Retry-After": String(retryAfter),
      });
    }
  }
}

/** Counts one failed login against each key, starting a new window where the old one has ended. */
export async function recordFailedLogin(db: D1Database, keys: string[], now = Date.now()): Promise<void> {
  const windowStartLimit = now - failedLoginWindowSeconds * 1000;
  await db.batch(
    keys.map((key) =>
      db
        .prepare(
          `INSERT INTO login_failures (key, failures, window_start) VALUES (?, 1, ?)
           ON CONFLICT (key) DO UPDATE SET
             failures = CASE WHEN window_start <= ? THEN 1 ELSE failures + 1 END,
             window_start = CASE WHEN window_start <= ? THEN excluded.window_start ELSE window_start END`,
        )
        .bind(key, now, windowStartLimit, windowStartLimit),
    ),
  );
}

/** Returns the rate-limit keys of a login attempt. */
export function loginKeys(userName: string, clientAddress: string): string[] {
  return [`user:${userName}`, `address:${clientAddress}`];
}
