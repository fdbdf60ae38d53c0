import { RegistryError } from "../errors";
import { unknownClientAddress } from "./audit";

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
    if (now < windowEnd && row.failures >= maxFailedLogins) throw tooManyFailedLogins(windowEnd, now);
  }
}

/**
 * Counts one failed login against each key. Returns the TOOMANYREQUESTS
 * error to send instead of UNAUTHORIZED when this failure took a key past the
 * limit, or null. Concurrent attempts all pass `assertLoginAllowed` before
 * any of them has failed, and only the failures up to the limit may tell the
 * client that a password was wrong.
 */
export async function recordFailedLogin(db: D1Database, keys: string[], now = Date.now()): Promise<RegistryError | null> {
  if (keys.length === 0) return null;
  const rows = await countFailure(db, keys, now);
  const exceeded = rows.find((row) => row.failures > maxFailedLogins);
  return exceeded ? tooManyFailedLogins(exceeded.window_start + failedLoginWindowSeconds * 1000, now) : null;
}

/**
 * Adds one failure to each key, starting a new window where the old one has
 * ended, and returns each key's count and window start.
 *
 * NOTE: no code deletes rows, so every user name and address that ever
 * failed a login keeps its row in login_failures.
 */
async function countFailure(db: D1Database, keys: string[], now: number): Promise<FailureRow[]> {
  const windowStartLimit = now - failedLoginWindowSeconds * 1000;
  const results = await db.batch<FailureRow>(
    keys.map((key) =>
      db
        .prepare(
          `INSERT INTO login_failures (key, failures, window_start) VALUES (?, 1, ?)
           ON CONFLICT (key) DO UPDATE SET
             failures = CASE WHEN window_start <= ? THEN 1 ELSE failures + 1 END,
             window_start = CASE WHEN window_start <= ? THEN excluded.window_start ELSE window_start END
           RETURNING failures, window_start`,
        )
        .bind(key, now, windowStartLimit, windowStartLimit),
    ),
  );
  return results.map((result) => result.results[0]!);
}

function tooManyFailedLogins(windowEnd: number, now: number): RegistryError {
  const retryAfter = Math.max(1, Math.ceil((windowEnd - now) / 1000));
  return new RegistryError("TOOMANYREQUESTS", `too many failed logins; retry after ${retryAfter} seconds`, null, {
    "Retry-After": String(retryAfter),
  });
}

/** Returns the rate-limit keys of a login attempt: the user name, and the client address when it is known. */
export function loginKeys(userName: string, clientAddress: string): string[] {
  return [`user:${userName}`, ...addressKeys(clientAddress)];
}

/**
 * Returns the rate-limit key of a client address, or none when the address is
 * unknown. Only Cloudflare's network sets CF-Connecting-IP, so under
 * `wrangler dev` every client would otherwise share one key, and ten typos
 * by anyone would lock out everyone.
 */
export function addressKeys(clientAddress: string): string[] {
  return clientAddress === unknownClientAddress ? [] : [`address:${addressKey(clientAddress)}`];
}

/**
 * Returns the part of a client address that counts as one client: an IPv4
 * address whole, and an IPv6 address by its /64 prefix. A host is usually
 * assigned a whole /64, so it could otherwise spread its failed logins over
 * as many addresses as it likes. Anything else is returned unchanged.
 */
export function addressKey(address: string): string {
  // An IPv4-mapped IPv6 address such as ::ffff:192.0.2.1 is its IPv4 address.
  if (address.includes(".")) return address.slice(address.lastIndexOf(":") + 1);

  const groups = ipv6Groups(address);
  return groups ? `${groups.slice(0, 4).join(":")}::/64` : address;
}

/** Expands an IPv6 address into its eight groups in lowercase hex without leading zeros, or returns null. */
function ipv6Groups(address: string): string[] | null {
  const halves = address.split("::");
  if (halves.length > 2) return null;

  const head = halves[0] === "" ? [] : halves[0]!.split(":");
  const tail = halves.length === 1 || halves[1] === "" ? [] : halves[1]!.split(":");
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;

  const groups = [...head, ...Array<string>(halves.length === 1 ? 0 : missing).fill("0"), ...tail];
  if (!groups.every((group) => /^[0-9a-f]{1,4}$/i.test(group))) return null;
  return groups.map((group) => parseInt(group, 16).toString(16));
}
