/**
 * Upstream Bearer tokens kept in the memory of the isolate, keyed by the
 * upstream origin, the identity of the credentials and the scope. Each isolate
 * has its own cache, so a cold isolate fetches a token again.
 */

/** Lifetime of a token whose response has no `expires_in`, as the Docker token specification defines. */
export const defaultTokenSeconds = 60;

/** A cached token is dropped this many seconds before it expires, so that it does not expire on its way upstream. */
const expiryMarginSeconds = 10;

/** Entries beyond this are evicted oldest first, which bounds the memory of an isolate that pulls many images. */
const maxEntries = 1000;

const tokens = new Map<string, { token: string; expiresAt: number }>();

/** Builds the cache key of a token. `identity` must not contain the password itself. */
export function tokenCacheKey(origin: string, identity: string, scope: string): string {
  return JSON.stringify([origin, identity, scope]);
}

/** Returns the cached token for `key`, or null when none is cached or it has expired. */
export function cachedToken(key: string, nowMs: number = Date.now()): string | null {
  const entry = tokens.get(key);
  if (!entry) return null;
  if (entry.expiresAt > nowMs) return entry.token;
  tokens.delete(key);
  return null;
}

/**
 * Caches `token` until `expiresInSeconds` minus the margin after the moment it
 * was issued. `issuedAtMs` later than now counts as now, so a token endpoint
 * whose clock runs ahead cannot extend a token's life here.
 */
export function cacheToken(key: string, token: string, expiresInSeconds: number, issuedAtMs: number, nowMs: number = Date.now()): void {
  const expiresAt = Math.min(issuedAtMs, nowMs) + (expiresInSeconds - expiryMarginSeconds) * 1000;
  if (expiresAt <= nowMs) {
    tokens.delete(key);
    return;
  }
  tokens.delete(key);
  tokens.set(key, { token, expiresAt });
  if (tokens.size > maxEntries) tokens.delete(tokens.keys().next().value!);
}

/** Drops the cached token for `key`, after the upstream rejected it. */
export function dropToken(key: string): void {
  tokens.delete(key);
}
