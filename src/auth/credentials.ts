import type { AppContext } from "../context";
import { RegistryError } from "../errors";
import { log } from "../log";
import { audit, clientAddress } from "./audit";
import { signingKeys, verifyRegistryToken } from "./jwt";
import { issuerOfToken, oidcGroupPrincipal, oidcLogin } from "./oidc";
import { hashSecret, verifyPassword } from "./passwords";
import { anonymousPrincipal, type Principal, type TokenScope } from "./permissions";
import { assertLoginAllowed, loginKeys, recordFailedLogin } from "./rate-limit";
import type { RequestedScope } from "./scopes";
import { findUserById, findUserByName, storedPassword, userPrincipal } from "./users";

/** The prefix of access token secrets, which sets them apart from passwords and JWTs. */
export const accessTokenPrefix = "erat_";
/** Refresh token secrets start with this prefix. */
export const refreshTokenPrefix = "errt_";

export interface Authentication {
  principal: Principal;
  /** The grants of the registry token the request carried, or null when it carried none. */
  tokenAccess: RequestedScope[] | null;
}

/**
 * Identifies the sender of a request from its Authorization header: Basic
 * with a password or an access token, or Bearer with a registry token or an
 * access token. No header means the anonymous user. Invalid credentials
 * throw UNAUTHORIZED; they never fall back to anonymous.
 */
export async function authenticate(c: AppContext): Promise<Authentication> {
  const header = c.req.header("Authorization");
  if (!header) return { principal: anonymousPrincipal, tokenAccess: null };

  const space = header.indexOf(" ");
  const scheme = space === -1 ? header.toLowerCase() : header.slice(0, space).toLowerCase();
  const value = space === -1 ? "" : header.slice(space + 1).trim();
  if (scheme === "basic") {
    const { user, secret } = decodeBasic(value);
    return { principal: await login(c, user, secret), tokenAccess: null };
  }
  if (scheme === "bearer" && value.startsWith(accessTokenPrefix)) {
    const principal = await accessTokenPrincipal(c, value, null);
    if (!principal) throw invalidCredentials("the access token is invalid, expired or revoked");
    return { principal, tokenAccess: null };
  }
  if (scheme === "bearer") return bearerAuthentication(c, value);
  throw invalidCredentials(`authorization scheme '${scheme}' is not supported; use Basic or Bearer`);
}

/**
 * Checks a user name with a password or an access token, counting failures
 * against the user and the client address. Throws UNAUTHORIZED on failure
 * and TOOMANYREQUESTS while the failed-login limit is reached. A password
 * that is a JWT from a configured OpenID Connect issuer is exchanged as an
 * ID token instead, whatever the user name.
 */
export async function login(c: AppContext, userName: string, secret: string): Promise<Principal> {
  const issuer = await issuerOfToken(c.env.DB, secret);
  if (issuer) return oidcLogin(c, userName, issuer, secret);

  const keys = loginKeys(userName, clientAddress(c));
  await assertLoginAllowed(c.env.DB, keys);

  const principal = secret.startsWith(accessTokenPrefix)
    ? await accessTokenPrincipal(c, secret, userName)
    : await passwordPrincipal(c, userName, secret, keys);
  if (principal) return principal;

  const limitReached = await recordFailedLogin(c.env.DB, keys);
  await audit(c, "login.failed", userName, {}, userName);
  throw limitReached ?? invalidCredentials("invalid user name or password");
}

/** Seconds a verified password stays in this isolate's cache. */
const verifiedPasswordSeconds = 60;

/**
 * Keys of recently verified passwords, mapped to their expiry time. Clients
 * that send Basic credentials on every request would otherwise pay a full
 * PBKDF2 derivation each time. The key covers the stored hash, so a password
 * change invalidates it.
 */
const verifiedPasswords = new Map<string, number>();

async function passwordPrincipal(c: AppContext, userName: string, password: string, keys: string[]): Promise<Principal | null> {
  const user = await findUserByName(c.env.DB, userName);
  const stored = user ? storedPassword(user) : null;
  if (!user || !stored || user.disabled === 1) return null;

  const cacheKey = await hashSecret(`${user.id}\u0000${stored.hash}\u0000${password}`);
  const cachedUntil = verifiedPasswords.get(cacheKey);
  if (cachedUntil === undefined || cachedUntil < Date.now()) {
    if (!(await verifyPassword(password, stored))) return null;
    // Concurrent guesses all pass the limit check in `login` before any of them
    // fails, so a right password is accepted only while their failures stay below the limit.
    await assertLoginAllowed(c.env.DB, keys);
    if (verifiedPasswords.size > 1000) verifiedPasswords.clear();
    verifiedPasswords.set(cacheKey, Date.now() + verifiedPasswordSeconds * 1000);
  }
  return userPrincipal(c.env.DB, user, "password");
}

interface AccessTokenRow {
  id: string;
  user_id: number;
  scope: string | null;
  last_used_at: string | null;
}

/** Resolves an access token secret to its user, narrowed to the token's scope; `userName`, when given, must be the owner. */
async function accessTokenPrincipal(c: AppContext, secret: string, userName: string | null): Promise<Principal | null> {
  const row = await c.env.DB.prepare(
    `SELECT id, user_id, scope, last_used_at FROM access_tokens
      WHERE secret_hash = ? AND kind = 'access' AND revoked_at IS NULL
        AND (expires_at IS NULL OR expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`,
  )
    .bind(await hashSecret(secret))
    .first<AccessTokenRow>();
  if (!row) return null;

  const user = await findUserById(c.env.DB, row.user_id);
  if (!user || user.disabled === 1 || (userName !== null && user.name !== userName)) return null;

  await c.env.DB.prepare("UPDATE access_tokens SET last_used_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?").bind(row.id).run();
  const scope = row.scope ? (JSON.parse(row.scope) as TokenScope) : null;
  return userPrincipal(c.env.DB, user, "access-token", scope);
}

async function bearerAuthentication(c: AppContext, token: string): Promise<Authentication> {
  const keys = await signingKeys(c.env.TOKEN_SIGNING_KEY);
  const claims = await verifyRegistryToken(keys, token, c.env.TOKEN_ISSUER, serviceName(c));
  if (!claims) throw invalidCredentials("the bearer token is invalid or expired; request a new one from the token endpoint");

  if (claims.sub === anonymousPrincipal.name) return { principal: anonymousPrincipal, tokenAccess: claims.access };
  if (claims.oidc_group !== undefined) {
    const principal = await oidcGroupPrincipal(c.env.DB, claims.sub ?? "", claims.oidc_group, "bearer-token");
    if (!principal) throw invalidCredentials("the bearer token's group no longer exists");
    return { principal, tokenAccess: claims.access };
  }
  const user = await findUserByName(c.env.DB, claims.sub ?? "");
  if (!user || user.disabled === 1) {
    log.warn("bearer token names a missing or disabled user", { requestId: c.get("requestId"), user: claims.sub });
    throw invalidCredentials("the bearer token's user no longer exists or is disabled");
  }
  const principal = await userPrincipal(c.env.DB, user, "bearer-token", claims.token_scope ?? null);
  return { principal, tokenAccess: claims.access };
}

/** Returns this registry's `service` name in token requests and the audience of its tokens: the request's host. */
export function serviceName(c: AppContext): string {
  return new URL(c.req.url).host;
}

function decodeBasic(value: string): { user: string; secret: string } {
  let decoded: string;
  try {
    decoded = new TextDecoder().decode(Uint8Array.from(atob(value), (char) => char.charCodeAt(0)));
  } catch {
    throw invalidCredentials("Basic credentials are not valid base64");
  }
  const colon = decoded.indexOf(":");
  if (colon <= 0) throw invalidCredentials("Basic credentials must be '<user>:<password>'");
  return { user: decoded.slice(0, colon), secret: decoded.slice(colon + 1) };
}

function invalidCredentials(message: string): RegistryError {
  return new RegistryError("UNAUTHORIZED", message);
}
