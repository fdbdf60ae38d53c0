import type { AppContext } from "../context";
import { RegistryError } from "../errors";
import { parseImageName } from "../names";
import { getRepository } from "../storage/metadata";
import { audit } from "./audit";
import { authenticate, login, refreshTokenPrefix, serviceName } from "./credentials";
import { signingKeys, signRegistryToken, tokenLifetimeSeconds } from "./jwt";
import { hashSecret, newSecret } from "./passwords";
import { effectivePermissions, type Principal } from "./permissions";
import { dockerActionPermission, parseScope, type RequestedScope } from "./scopes";
import { findUserById, userPrincipal } from "./users";

/** Days a refresh token (`offline_token=true`) stays valid. */
export const refreshTokenLifetimeDays = 30;

/**
 * `GET /v2/token`: the Docker token endpoint. It takes Basic credentials (a
 * password, an access token or an OpenID Connect ID token) or none for the
 * anonymous user. Each `scope` is granted as far as the user's permissions
 * reach, so asking for too much is never an error.
 */
export async function getToken(c: AppContext): Promise<Response> {
  const { principal, tokenAccess } = await authenticate(c);
  c.set("principal", principal);
  // A registry token that could buy its successor would never expire, and
  // would outlive the revocation of the access token it came from.
  if (tokenAccess !== null) {
    throw new RegistryError("UNAUTHORIZED", "a registry token cannot be exchanged for another; send Basic credentials or an access token");
  }
  const url = new URL(c.req.url);
  const offline = url.searchParams.get("offline_token") === "true";
  return issue(c, principal, url.searchParams.getAll("scope"), offline);
}

/**
 * `POST /v2/token`: the OAuth2 form with `grant_type=password` or
 * `grant_type=refresh_token`. The password may be an access token or an
 * OpenID Connect ID token.
 */
export async function postToken(c: AppContext): Promise<Response> {
  const form = await readForm(c);
  const scopes = form.getAll("scope").flatMap((value) =>
    String(value)
      .split(" ")
      .filter((scope) => scope !== ""),
  );
  const grantType = String(form.get("grant_type") ?? "");

  if (grantType === "password") {
    const principal = await login(c, String(form.get("username") ?? ""), String(form.get("password") ?? ""));
    c.set("principal", principal);
    return issue(c, principal, scopes, form.get("access_type") === "offline");
  }
  if (grantType === "refresh_token") {
    const principal = await refreshPrincipal(c, String(form.get("refresh_token") ?? ""));
    c.set("principal", principal);
    return issue(c, principal, scopes, false);
  }
  throw new RegistryError("INVALID_REQUEST", "grant_type must be 'password' or 'refresh_token'", { grantType });
}

async function issue(c: AppContext, principal: Principal, rawScopes: string[], offline: boolean): Promise<Response> {
  const keys = await signingKeys(c.env.TOKEN_SIGNING_KEY);
  const access: RequestedScope[] = [];
  for (const raw of rawScopes) {
    const scope = parseScope(raw);
    if (!scope) continue;
    const granted = await grantedActions(c, principal, scope);
    if (granted.length > 0) access.push({ ...scope, actions: granted });
  }

  const now = Date.now();
  const principalClaims = { token_scope: principal.tokenScope ?? undefined, oidc_group: principal.oidcGroup };
  const token = await signRegistryToken(
    keys,
    { issuer: c.env.TOKEN_ISSUER, audience: serviceName(c), subject: principal.name, access, principal: principalClaims },
    now,
  );
  const body: Record<string, unknown> = {
    token,
    access_token: token,
    expires_in: tokenLifetimeSeconds,
    issued_at: new Date(now).toISOString(),
  };
  // A refresh token carries the user's full permissions for 30 days, so only a
  // password login gets one: never a narrower access token or a short-lived ID token.
  if (offline && principal.via === "password") body.refresh_token = await createRefreshToken(c, principal);
  return c.json(body);
}

/** Intersects the actions a scope requests with what the principal may do there. */
async function grantedActions(c: AppContext, principal: Principal, scope: RequestedScope): Promise<string[]> {
  if (scope.type === "registry" && scope.name === "catalog") {
    return principal.kind === "user" && scope.actions.includes("*") ? ["*"] : [];
  }
  if (scope.type !== "repository") return [];

  let name;
  try {
    name = parseImageName(scope.name);
  } catch {
    return [];
  }
  const repository = (await getRepository(c.env.DB, name.repositoryKey)) ?? { key: name.repositoryKey, type: "local" };
  const effective = await effectivePermissions(c.env.DB, principal, repository, name.path);
  const requested = scope.actions.includes("*") ? Object.keys(dockerActionPermission) : scope.actions;
  return requested.filter((action) => {
    const permission = dockerActionPermission[action];
    return permission !== undefined && effective.has(permission);
  });
}

async function createRefreshToken(c: AppContext, principal: Principal): Promise<string> {
  const secret = newSecret(refreshTokenPrefix);
  const expiresAt = new Date(Date.now() + refreshTokenLifetimeDays * 86_400_000).toISOString();
  await c.env.DB.prepare("INSERT INTO access_tokens (id, user_id, kind, name, secret_hash, expires_at) VALUES (?, ?, 'refresh', ?, ?, ?)")
    .bind(crypto.randomUUID(), principal.userId, "refresh token", await hashSecret(secret), expiresAt)
    .run();
  await audit(c, "token.create", principal.name, { kind: "refresh" });
  return secret;
}

async function refreshPrincipal(c: AppContext, secret: string): Promise<Principal> {
  const row = await c.env.DB.prepare(
    `SELECT user_id FROM access_tokens
      WHERE secret_hash = ? AND kind = 'refresh' AND revoked_at IS NULL
        AND (expires_at IS NULL OR expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`,
  )
    .bind(await hashSecret(secret))
    .first<{ user_id: number }>();
  const user = row ? await findUserById(c.env.DB, row.user_id) : null;
  if (!user || user.disabled === 1) throw new RegistryError("UNAUTHORIZED", "the refresh token is invalid, expired or revoked");
  return userPrincipal(c.env.DB, user, "bearer-token");
}

async function readForm(c: AppContext): Promise<URLSearchParams> {
  const type = c.req.header("Content-Type") ?? "";
  if (!type.startsWith("application/x-www-form-urlencoded")) {
    throw new RegistryError("INVALID_REQUEST", "the token request must be application/x-www-form-urlencoded");
  }
  return new URLSearchParams(await c.req.text());
}
