import { env, exports } from "cloudflare:workers";
import { decodeJwt, importPKCS8, SignJWT, type JWTPayload } from "jose";
import { expect } from "vitest";
import { hashPassword, hashSecret, newSecret } from "../../src/auth/passwords";
import type { Action, TokenScope } from "../../src/auth/permissions";
import { basicAuthorization, origin } from "./helpers";

/**
 * Fixtures for the authentication and authorisation tests, written straight
 * into D1 so that these tests do not depend on the admin API.
 */

/** The host of `origin`: the `service` of token requests and the audience of registry tokens. */
export const service = new URL(origin).host;

/** The registry token issuer, from TOKEN_ISSUER in wrangler.toml. */
export const issuer = "edge-registry";

let fixtureCounter = 0;

/** Returns a name that no other fixture of the test file uses, such as `reader-3`. */
export function uniqueName(label: string): string {
  fixtureCounter += 1;
  return `${label}-${fixtureCounter}`;
}

let addressCounter = 0;

/**
 * Returns a client address from the documentation ranges 198.51.100.0/24
 * (or 2001:db8::/32, one /64 each, after 250 calls) that no other request of
 * the test file uses. Failed logins count against the address, so tests that
 * fail logins send their own address in CF-Connecting-IP and do not lock out
 * other tests.
 */
export function uniqueAddress(): string {
  addressCounter += 1;
  return addressCounter <= 250 ? `198.51.100.${addressCounter}` : `2001:db8:${addressCounter.toString(16)}::1`;
}

export interface TestUser {
  id: number;
  name: string;
  password: string;
}

/** Inserts an enabled user with a random password, hashed as the registry hashes passwords. */
export async function createUser(label: string, options: { admin?: boolean; disabled?: boolean } = {}): Promise<TestUser> {
  const name = uniqueName(label);
  const password = `password-${crypto.randomUUID()}`;
  const hash = await hashPassword(password);
  const row = await env.DB.prepare(
    `INSERT INTO users (name, password_hash, password_salt, password_iterations, admin, disabled)
     VALUES (?, ?, ?, ?, ?, ?) RETURNING id`,
  )
    .bind(name, hash.hash, hash.salt, hash.iterations, options.admin ? 1 : 0, options.disabled ? 1 : 0)
    .first<{ id: number }>();
  return { id: row!.id, name, password };
}

/** Inserts a group, optionally an administrator group, with the given members. */
export async function createGroup(label: string, members: TestUser[], options: { admin?: boolean } = {}): Promise<string> {
  const name = uniqueName(label);
  const group = await env.DB.prepare("INSERT INTO groups (name, admin) VALUES (?, ?) RETURNING id")
    .bind(name, options.admin ? 1 : 0)
    .first<{ id: number }>();
  for (const member of members) {
    await env.DB.prepare("INSERT INTO group_members (group_id, user_id) VALUES (?, ?)").bind(group!.id, member.id).run();
  }
  return name;
}

/** Who a permission grant applies to. */
export type Grantee = { user: TestUser } | { group: string } | "anonymous";

export interface TargetDefinition {
  /** Repository keys, or "ANY" or "ANY LOCAL"; `docker-local` when omitted. */
  repositories?: string[];
  /** Ant-style patterns over the image path; `**` when omitted. */
  includes?: string[];
  excludes?: string[];
  grants: { to: Grantee; actions: Action[] }[];
}

/** Inserts a permission target with its grants and returns the target's name. */
export async function createPermissionTarget(label: string, definition: TargetDefinition): Promise<string> {
  const name = uniqueName(label);
  const target = await env.DB.prepare(
    "INSERT INTO permission_targets (name, repositories, include_patterns, exclude_patterns) VALUES (?, ?, ?, ?) RETURNING id",
  )
    .bind(
      name,
      JSON.stringify(definition.repositories ?? ["docker-local"]),
      JSON.stringify(definition.includes ?? ["**"]),
      JSON.stringify(definition.excludes ?? []),
    )
    .first<{ id: number }>();

  for (const grant of definition.grants) {
    const [type, principal] =
      grant.to === "anonymous" ? ["anonymous", ""] : "user" in grant.to ? ["user", grant.to.user.name] : ["group", grant.to.group];
    await env.DB.prepare("INSERT INTO permission_grants (target_id, principal_type, principal_name, actions) VALUES (?, ?, ?, ?)")
      .bind(target!.id, type, principal, JSON.stringify(grant.actions))
      .run();
  }
  return name;
}

/** Inserts a user with its own permission target that grants `actions` on `includes` in docker-local. */
export async function createUserWith(label: string, actions: Action[], includes: string[] = ["**"]): Promise<TestUser> {
  const user = await createUser(label);
  await createPermissionTarget(`${label}-target`, { includes, grants: [{ to: { user }, actions }] });
  return user;
}

/** Inserts a local repository. */
export async function createRepository(label: string): Promise<string> {
  const key = uniqueName(label);
  await env.DB.prepare("INSERT INTO repositories (key, type) VALUES (?, 'local')").bind(key).run();
  return key;
}

export interface AccessTokenOptions {
  scope?: TokenScope | null;
  /** ISO 8601 expiry time; no expiry when omitted. */
  expiresAt?: string | null;
  revokedAt?: string | null;
  kind?: "access" | "refresh";
}

/** Inserts an access token (or a refresh token) for the user and returns its secret. */
export async function createAccessToken(user: TestUser, options: AccessTokenOptions = {}): Promise<string> {
  const kind = options.kind ?? "access";
  const secret = newSecret(kind === "access" ? "erat_" : "errt_");
  await env.DB.prepare(
    `INSERT INTO access_tokens (id, user_id, kind, name, secret_hash, scope, expires_at, revoked_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  )
    .bind(
      crypto.randomUUID(),
      user.id,
      kind,
      uniqueName("token"),
      await hashSecret(secret),
      options.scope ? JSON.stringify(options.scope) : null,
      options.expiresAt ?? null,
      options.revokedAt ?? null,
    )
    .run();
  return secret;
}

/** Returns the ISO 8601 time `seconds` from now, or before now when negative. */
export function secondsFromNow(seconds: number): string {
  return new Date(Date.now() + seconds * 1000).toISOString();
}

/** Returns the Basic Authorization header of a user's password. */
export function basicFor(user: TestUser): string {
  return basicAuthorization(user.name, user.password);
}

/**
 * Sends a request to the Worker with exactly the given Authorization header,
 * or none when it is null, and optionally a CF-Connecting-IP client address.
 */
export async function fetchAs(authorization: string | null, path: string, init: RequestInit = {}, address?: string): Promise<Response> {
  const request = new Request(`${origin}${path}`, init);
  request.headers.delete("Authorization");
  if (authorization !== null) request.headers.set("Authorization", authorization);
  if (address !== undefined) request.headers.set("CF-Connecting-IP", address);
  return exports.default.fetch(request);
}

/** The JSON body of a successful token endpoint response. */
export interface TokenResponse {
  token: string;
  access_token: string;
  expires_in: number;
  issued_at: string;
  refresh_token?: string;
}

/** The claims of a registry token as the tests read them. */
export interface RegistryClaims extends JWTPayload {
  access: { type: string; name: string; actions: string[] }[];
}

/** Builds a `/v2/token` path with a `scope` parameter for each scope. */
export function tokenPath(scopes: string[], extra: Record<string, string> = {}): string {
  const query = new URLSearchParams({ service, ...extra });
  for (const scope of scopes) query.append("scope", scope);
  return `/v2/token?${query.toString()}`;
}

/** Requests a registry token with GET and fails the test unless the endpoint returns 200. */
export async function requestToken(
  authorization: string | null,
  scopes: string[],
  extra: Record<string, string> = {},
): Promise<TokenResponse> {
  const response = await fetchAs(authorization, tokenPath(scopes, extra));
  expect(response.status, await response.clone().text()).toBe(200);
  return (await response.json()) as TokenResponse;
}

/** Requests a registry token with GET and returns it as a Bearer Authorization header. */
export async function bearerFor(authorization: string | null, scopes: string[]): Promise<string> {
  return `Bearer ${(await requestToken(authorization, scopes)).token}`;
}

/** Decodes a registry token's claims without verifying it. */
export function claimsOf(token: string): RegistryClaims {
  return decodeJwt(token) as RegistryClaims;
}

/** Imports the registry's own token signing key, from TOKEN_SIGNING_KEY in vitest.config.ts. */
export async function registrySigningKey(): Promise<CryptoKey> {
  return (await importPKCS8(env.TOKEN_SIGNING_KEY!, "ES256", { extractable: true })) as CryptoKey;
}

/** Claims for `signToken`; each one can be replaced or, with `undefined`, left out. */
export interface TokenClaims {
  iss?: string;
  aud?: string;
  sub?: string;
  iat?: number;
  nbf?: number;
  exp?: number;
  access?: unknown;
}

/**
 * Signs an ES256 token with the given key, by default with claims that the
 * registry accepts: its issuer, this service, `sub`, and a lifetime of 300 s
 * from now. Tests change one claim at a time.
 */
export async function signToken(key: CryptoKey, claims: TokenClaims, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const payload: Record<string, unknown> = { iss: issuer, aud: service, iat: now, nbf: now, exp: now + 300, access: [], ...claims };
  for (const [name, value] of Object.entries(payload)) if (value === undefined) delete payload[name];
  return new SignJWT(payload).setProtectedHeader({ alg: "ES256", typ: "JWT", ...header }).sign(key);
}

/** Builds a repository grant for a registry token's `access` claim. */
export function repositoryAccess(name: string, actions: string[]) {
  return { type: "repository", name, actions };
}
