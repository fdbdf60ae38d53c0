import { createRemoteJWKSet, decodeJwt, errors, jwtVerify, type JWTPayload } from "jose";
import type { AppContext } from "../context";
import { RegistryError } from "../errors";
import { log } from "../log";
import { audit, clientAddress } from "./audit";
import type { Principal } from "./permissions";
import { addressKeys, assertLoginAllowed, recordFailedLogin } from "./rate-limit";
import { findUserByName, userPrincipal } from "./users";

/** The signature algorithms accepted on ID tokens. */
const idTokenAlgorithms = ["RS256", "ES256"];

/** Seconds of clock difference tolerated when checking an ID token's `exp`, `nbf` and `iat`. */
const clockToleranceSeconds = 30;

/** Principals of OIDC logins mapped to a group are named with this prefix and the token's `sub`. */
const oidcPrincipalPrefix = "oidc:";

/** Maps ID tokens whose claims all match to a user, or to a group. */
export interface OidcRule {
  /** Claim names with the value each must have; a value ending in `*` matches any string value with that prefix. */
  claims: Record<string, string>;
  user?: string;
  group?: string;
}

/** A trusted OpenID Connect issuer, as the admin API shows it. */
export interface OidcIssuer {
  name: string;
  /** The exact `iss` claim of the issuer's ID tokens. */
  issuer: string;
  /** The `aud` claim that ID tokens must contain. */
  audience: string;
  jwksUrl: string;
  rules: OidcRule[];
  createdAt: string;
}

interface OidcIssuerRow {
  name: string;
  issuer: string;
  audience: string;
  jwks_url: string;
  rules: string;
  created_at: string;
}

const issuerColumns = "name, issuer, audience, jwks_url, rules, created_at";

export async function listIssuers(db: D1Database): Promise<OidcIssuer[]> {
  const { results } = await db.prepare(`SELECT ${issuerColumns} FROM oidc_issuers ORDER BY name`).all<OidcIssuerRow>();
  return results.map(issuerFromRow);
}

export async function findIssuerByName(db: D1Database, name: string): Promise<OidcIssuer | null> {
  const row = await db.prepare(`SELECT ${issuerColumns} FROM oidc_issuers WHERE name = ?`).bind(name).first<OidcIssuerRow>();
  return row ? issuerFromRow(row) : null;
}

function issuerFromRow(row: OidcIssuerRow): OidcIssuer {
  return {
    name: row.name,
    issuer: row.issuer,
    audience: row.audience,
    jwksUrl: row.jwks_url,
    rules: JSON.parse(row.rules) as OidcRule[],
    createdAt: row.created_at,
  };
}

/**
 * Returns the configured issuer that the unverified `iss` claim of a
 * password names, or null when the password is not a JWT or names no
 * configured issuer. Nothing here is trusted until `oidcLogin` verifies it.
 */
export async function issuerOfToken(db: D1Database, password: string): Promise<OidcIssuer | null> {
  let issuer: unknown;
  try {
    issuer = decodeJwt(password).iss;
  } catch {
    return null;
  }
  if (typeof issuer !== "string") return null;

  const row = await db.prepare(`SELECT ${issuerColumns} FROM oidc_issuers WHERE issuer = ?`).bind(issuer).first<OidcIssuerRow>();
  return row ? issuerFromRow(row) : null;
}

/**
 * Exchanges an ID token from a configured issuer for the principal of the
 * first rule whose claims match it. A rejected token counts as a failed
 * login of the client address, is audited and throws UNAUTHORIZED.
 *
 * Failures are not counted against a user name: the client's user name is
 * ignored, and a key derived from the issuer or the unverified `sub` would
 * let anyone lock out the CI jobs of that issuer or subject. Guessing is no
 * threat here, because every token must carry the issuer's signature.
 */
export async function oidcLogin(c: AppContext, userName: string, issuer: OidcIssuer, idToken: string): Promise<Principal> {
  const keys = addressKeys(clientAddress(c));
  await assertLoginAllowed(c.env.DB, keys);

  // A key set that cannot be loaded, like any other server-side error, throws
  // here and is no failed login of the client.
  const result = await exchangeIdToken(c, issuer, idToken);
  if (result.ok) {
    log.info("OIDC login", {
      requestId: c.get("requestId"),
      issuer: issuer.name,
      subject: result.subject,
      rule: result.rule,
      principal: result.principal.name,
    });
    return result.principal;
  }

  const limitReached = await recordFailedLogin(c.env.DB, keys);
  await audit(c, "login.failed", issuer.name, { via: "oidc", reason: result.reason }, userName);
  if (limitReached) throw limitReached;
  throw new RegistryError("UNAUTHORIZED", `the ID token was rejected: ${result.reason}`, { issuer: issuer.name });
}

type ExchangeResult = { ok: true; principal: Principal; subject: string; rule: number } | { ok: false; reason: string };

async function exchangeIdToken(c: AppContext, issuer: OidcIssuer, idToken: string): Promise<ExchangeResult> {
  const db = c.env.DB;
  let claims: JWTPayload;
  try {
    claims = await verifyIdToken(issuer, idToken);
  } catch (error) {
    const reason = rejectionReason(error);
    if (reason === null) throw unavailableKeySet(c, issuer, error);
    return { ok: false, reason };
  }

  const subject = claims.sub;
  if (typeof subject !== "string" || subject === "") return { ok: false, reason: "the ID token's 'sub' claim must be a non-empty string" };
  const index = issuer.rules.findIndex((rule) => matchesRule(rule, claims));
  const rule = issuer.rules[index];
  if (!rule) return { ok: false, reason: `no rule of issuer '${issuer.name}' matches the ID token's claims` };

  if (rule.user !== undefined) {
    const user = await findUserByName(db, rule.user);
    if (!user || user.disabled === 1)
      return { ok: false, reason: `user '${rule.user}' of the matching rule does not exist or is disabled` };
    return { ok: true, principal: await userPrincipal(db, user, "oidc"), subject, rule: index };
  }

  const principal = await oidcGroupPrincipal(db, `${oidcPrincipalPrefix}${subject}`, rule.group!, "oidc");
  if (!principal) return { ok: false, reason: `group '${rule.group}' of the matching rule does not exist` };
  return { ok: true, principal, subject, rule: index };
}

/**
 * Builds the principal of an OIDC login that a rule maps to a group: it has
 * the group's permissions, and is an administrator only when the group is.
 * Returns null when the group no longer exists.
 */
export async function oidcGroupPrincipal(
  db: D1Database,
  name: string,
  groupName: string,
  via: Principal["via"],
): Promise<Principal | null> {
  const group = await db.prepare("SELECT name, admin FROM groups WHERE name = ?").bind(groupName).first<{ name: string; admin: number }>();
  if (!group) return null;
  return {
    kind: "user",
    name,
    userId: null,
    admin: group.admin === 1,
    groups: [group.name],
    tokenScope: null,
    via,
    oidcGroup: group.name,
  };
}

/**
 * Key sets by JWKS URL, cached per isolate so that jose's caching of the
 * fetched keys (10 minutes by default) lasts across requests.
 */
const keySets = new Map<string, ReturnType<typeof createRemoteJWKSet>>();
const maxCachedKeySets = 100;

function keySetOf(jwksUrl: string): ReturnType<typeof createRemoteJWKSet> {
  let keySet = keySets.get(jwksUrl);
  if (!keySet) {
    if (keySets.size >= maxCachedKeySets) keySets.clear();
    keySet = createRemoteJWKSet(new URL(jwksUrl));
    keySets.set(jwksUrl, keySet);
  }
  return keySet;
}

async function verifyIdToken(issuer: OidcIssuer, idToken: string): Promise<JWTPayload> {
  const { payload } = await jwtVerify(idToken, keySetOf(issuer.jwksUrl), {
    algorithms: idTokenAlgorithms,
    issuer: issuer.issuer,
    audience: issuer.audience,
    requiredClaims: ["exp", "sub"],
    clockTolerance: clockToleranceSeconds,
  });
  return payload;
}

/**
 * Explains why jose rejected a token, or returns null when the failure lies
 * with the issuer's key set (unreachable, timed out or malformed) rather than
 * with the token.
 */
function rejectionReason(error: unknown): string | null {
  if (error instanceof errors.JWTExpired) return "the ID token has expired";
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.reason === "missing") return `the ID token has no '${error.claim}' claim`;
    if (error.reason === "invalid") return `the ID token's '${error.claim}' claim is not a valid date`;
    if (error.claim === "nbf" || error.claim === "iat") return `the ID token's '${error.claim}' claim is in the future`;
    return `the ID token's '${error.claim}' claim does not match the issuer configuration`;
  }
  if (error instanceof errors.JOSEAlgNotAllowed) return `the ID token must be signed with ${idTokenAlgorithms.join(" or ")}`;
  if (error instanceof errors.JWSSignatureVerificationFailed || error instanceof errors.JWKSNoMatchingKey) {
    return "the ID token's signature does not verify with the issuer's keys";
  }
  if (error instanceof errors.JWKSMultipleMatchingKeys) return "the ID token's key id matches more than one of the issuer's keys";
  if (error instanceof errors.JWSInvalid || error instanceof errors.JWTInvalid || error instanceof errors.JOSENotSupported) {
    return "the ID token is not a valid signed JWT";
  }
  return null;
}

function unavailableKeySet(c: AppContext, issuer: OidcIssuer, error: unknown): RegistryError {
  log.warn("loading an OIDC key set failed", {
    requestId: c.get("requestId"),
    issuer: issuer.name,
    jwksUrl: issuer.jwksUrl,
    error: String(error),
  });
  return new RegistryError("UNAVAILABLE", `the key set of OpenID Connect issuer '${issuer.name}' could not be loaded; retry later`, {
    issuer: issuer.name,
  });
}

/** Returns whether every claim of the rule matches the token's claim of that name. */
function matchesRule(rule: OidcRule, claims: JWTPayload): boolean {
  return Object.entries(rule.claims).every(([name, expected]) => matchesClaim(expected, claims[name]));
}

/** Compares a string, number or boolean claim as text; a claim of any other type never matches. */
function matchesClaim(expected: string, actual: unknown): boolean {
  if (typeof actual !== "string" && typeof actual !== "number" && typeof actual !== "boolean") return false;
  const value = String(actual);
  if (expected.endsWith("*")) return value.startsWith(expected.slice(0, -1));
  return value === expected;
}
