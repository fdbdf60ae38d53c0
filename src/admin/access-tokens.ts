import { Hono } from "hono";
import { z } from "zod";
import { audit } from "../auth/audit";
import { accessTokenPrefix } from "../auth/credentials";
import { hashSecret, newSecret } from "../auth/passwords";
import { actions, anyRepository, type TokenScope } from "../auth/permissions";
import { findUserByName } from "../auth/users";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";
import { isRepositoryKey } from "../names";
import { actsAsAdministrator, requireUser } from "./access";
import { parseJsonBody, parseQuery, rejectMethod, resourceName } from "./shared";

/** Days an access token stays valid when the request sets no expiry. */
const defaultTokenLifetimeDays = 90;
/** The maximum lifetime of an access token, in days. */
const maxTokenLifetimeDays = 365;

const dayMilliseconds = 86_400_000;

const scopeSchema = z.strictObject({
  repositories: z
    .array(
      z
        .string()
        .refine((key) => key === anyRepository || isRepositoryKey(key), `each repository must be a repository key or "${anyRepository}"`),
    )
    .min(1, "repositories must name at least one repository; leave it out for all of them")
    .max(100)
    .optional(),
  actions: z.array(z.enum(actions)).min(1, "actions must name at least one action; leave it out for all of them").optional(),
});

const createTokenSchema = z
  .strictObject({
    name: z.string().trim().min(1, "name must not be empty").max(128, "name must be at most 128 characters long"),
    expiresInDays: z.int().min(1).max(maxTokenLifetimeDays).optional(),
    expiresAt: z.iso.datetime({ offset: true }).optional(),
    scope: scopeSchema.optional(),
  })
  .refine((body) => body.expiresInDays === undefined || body.expiresAt === undefined, {
    message: "set at most one of expiresInDays and expiresAt",
    path: ["expiresAt"],
  });

const listQuerySchema = z.strictObject({ user: resourceName("user").optional() });

interface TokenRow {
  id: string;
  user_id: number;
  user_name: string;
  kind: "access" | "refresh";
  name: string;
  scope: string | null;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
}

const tokenColumns = `t.id, t.user_id, u.name AS user_name, t.kind, t.name, t.scope, t.created_at, t.expires_at, t.last_used_at`;

/**
 * JSON API for the caller's access tokens under `/api/v1/tokens`. A token
 * works in place of its user's password, narrowed to its scope. Only its
 * SHA-256 is stored, so the secret is shown once, in the creation response.
 */
export const accessTokenAdmin = new Hono<AppEnv>();

accessTokenAdmin.use(requireUser);

/**
 * Creates an access token for the caller. Only a password login may do
 * this, so that no token, whether an access token, a registry token or an
 * OpenID Connect login, can mint a longer-lived or wider one.
 */
accessTokenAdmin.post("/", async (c) => {
  const principal = c.get("principal");
  if (principal.via !== "password" || principal.userId === null) {
    throw new RegistryError("DENIED", "creating an access token requires Basic authentication with the user's password, not a token");
  }
  const body = await parseJsonBody(c, createTokenSchema, "access token definition");

  const expiresAt = expiryOf(body.expiresInDays, body.expiresAt);
  const scope = normalizeScope(body.scope);
  const id = crypto.randomUUID();
  const secret = newSecret(accessTokenPrefix);
  await c.env.DB.prepare(
    "INSERT INTO access_tokens (id, user_id, kind, name, secret_hash, scope, expires_at) VALUES (?, ?, 'access', ?, ?, ?, ?)",
  )
    .bind(id, principal.userId, body.name, await hashSecret(secret), scope ? JSON.stringify(scope) : null, expiresAt)
    .run();

  await audit(c, "token.create", principal.name, { id, kind: "access", name: body.name, scope, expiresAt });
  const created = await findToken(c.env.DB, id);
  return c.json({ ...present(created!), token: secret }, 201, { Location: `/api/v1/tokens/${id}` });
});

/**
 * Lists the caller's access and refresh tokens that are not revoked,
 * including expired ones. An administrator may list another user's with `?user=`.
 */
accessTokenAdmin.get("/", async (c) => {
  const principal = c.get("principal");
  const query = parseQuery(c, listQuerySchema, "token list query");

  let userId = principal.userId;
  if (query.user !== undefined && query.user !== principal.name) {
    if (!actsAsAdministrator(principal)) throw new RegistryError("DENIED", "only an administrator may list another user's tokens");
    const user = await findUserByName(c.env.DB, query.user);
    if (!user) throw new RegistryError("NOT_FOUND", `user '${query.user}' does not exist`, { name: query.user });
    userId = user.id;
  }
  if (userId === null) return c.json({ tokens: [] });

  const { results } = await c.env.DB.prepare(
    `SELECT ${tokenColumns} FROM access_tokens t JOIN users u ON u.id = t.user_id
      WHERE t.user_id = ? AND t.revoked_at IS NULL ORDER BY t.created_at, t.id`,
  )
    .bind(userId)
    .all<TokenRow>();
  return c.json({ tokens: results.map(present) });
});

accessTokenAdmin.get("/:id", async (c) => {
  const token = await requireVisibleToken(c, c.req.param("id"));
  return c.json(present(token));
});

/** Revokes a token of the caller, or of anyone for an administrator. */
accessTokenAdmin.delete("/:id", async (c) => {
  const id = c.req.param("id");
  const token = await requireVisibleToken(c, id);

  await c.env.DB.prepare("UPDATE access_tokens SET revoked_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?").bind(id).run();
  await audit(c, "token.revoke", token.user_name, { id, kind: token.kind, name: token.name });
  return c.body(null, 204);
});

// Registered last, so these only run for methods that no route above handles.
accessTokenAdmin.all("/", (c) => rejectMethod(c.req.method, "GET, HEAD, POST"));
accessTokenAdmin.all("/:id", (c) => rejectMethod(c.req.method, "GET, HEAD, DELETE"));

/**
 * Returns a token that is not revoked and that the caller owns, or any such
 * token for an administrator. Other users' tokens are reported as not found,
 * like missing ones, so that ids cannot be probed.
 */
async function requireVisibleToken(c: AppContext, id: string): Promise<TokenRow> {
  const principal = c.get("principal");
  const token = await findToken(c.env.DB, id);
  if (!token || (token.user_id !== principal.userId && !actsAsAdministrator(principal))) {
    throw new RegistryError("NOT_FOUND", `token '${id}' does not exist or is revoked`, { id });
  }
  return token;
}

async function findToken(db: D1Database, id: string): Promise<TokenRow | null> {
  return db
    .prepare(`SELECT ${tokenColumns} FROM access_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ? AND t.revoked_at IS NULL`)
    .bind(id)
    .first<TokenRow>();
}

/** Returns the expiry as an ISO timestamp: `expiresAt`, or `expiresInDays` from now, which defaults to 90. */
function expiryOf(expiresInDays: number | undefined, expiresAt: string | undefined): string {
  if (expiresAt === undefined) return new Date(Date.now() + (expiresInDays ?? defaultTokenLifetimeDays) * dayMilliseconds).toISOString();

  const time = new Date(expiresAt).getTime();
  const issues: { path: string; message: string }[] = [];
  if (time <= Date.now()) issues.push({ path: "expiresAt", message: "expiresAt must be in the future" });
  if (time > Date.now() + maxTokenLifetimeDays * dayMilliseconds) {
    issues.push({ path: "expiresAt", message: `expiresAt must be at most ${maxTokenLifetimeDays} days from now` });
  }
  if (issues.length > 0) throw new RegistryError("INVALID_REQUEST", "access token definition is invalid", { issues });
  return new Date(time).toISOString();
}

/** Drops duplicates, and returns null for a scope that narrows nothing. */
function normalizeScope(scope: TokenScope | undefined): TokenScope | null {
  const normalized: TokenScope = {};
  if (scope?.repositories) normalized.repositories = [...new Set(scope.repositories)];
  if (scope?.actions) normalized.actions = actions.filter((action) => scope.actions!.includes(action));
  return Object.keys(normalized).length > 0 ? normalized : null;
}

function present(token: TokenRow) {
  return {
    id: token.id,
    name: token.name,
    user: token.user_name,
    kind: token.kind,
    scope: token.scope ? (JSON.parse(token.scope) as TokenScope) : null,
    createdAt: token.created_at,
    expiresAt: token.expires_at,
    lastUsedAt: token.last_used_at,
  };
}
