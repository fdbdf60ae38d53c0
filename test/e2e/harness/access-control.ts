/**
 * Repositories, users, permission targets and access tokens for the tests
 * of logins and permissions, created through the admin API of a running
 * `wrangler dev`.
 */
import { authorizationHeaders, type Credentials } from "./registry-client.ts";
import type { WranglerDev } from "./wrangler.ts";

/** The actions that a permission target grants. */
export type Action = "read" | "annotate" | "deploy" | "delete" | "manage";

/** The body of `POST /api/v1/permissions`. */
export interface PermissionTarget {
  name: string;
  /** Repository keys, or ["ANY LOCAL"] or ["ANY"]. */
  repositories: string[];
  /** Ant-style patterns of image paths below the repository key; ["**"] when unset. */
  includePatterns?: string[];
  excludePatterns?: string[];
  /** Actions per user name. */
  users?: Record<string, Action[]>;
  /** Actions per group name. */
  groups?: Record<string, Action[]>;
  /** Actions of the anonymous user, which apply to every request. */
  anonymous?: Action[];
}

/** An access token's narrowing of its user's permissions. */
export interface TokenScope {
  repositories?: string[];
  actions?: Action[];
}

/** Creates a local repository as the administrator. */
export async function createRepository(registry: WranglerDev, key: string): Promise<void> {
  await postJson(registry, "/api/v1/repositories", registry.adminCredentials, { key, type: "local" });
}

/** Creates a user who is not an administrator, as the administrator. */
export async function createUser(registry: WranglerDev, user: Credentials): Promise<void> {
  await postJson(registry, "/api/v1/users", registry.adminCredentials, { name: user.username, password: user.password });
}

/** Creates a permission target with its grants, as the administrator. */
export async function createPermissionTarget(registry: WranglerDev, target: PermissionTarget): Promise<void> {
  await postJson(registry, "/api/v1/permissions", registry.adminCredentials, target);
}

/**
 * Creates an access token as its owner, who must log in with their
 * password, and returns its secret, which clients send as the password.
 * `scope` narrows the owner's permissions; without it the token has all of them.
 */
export async function createAccessToken(registry: WranglerDev, owner: Credentials, name: string, scope?: TokenScope): Promise<string> {
  const created = (await postJson(registry, "/api/v1/tokens", owner, { name, scope })) as { token?: unknown };
  if (typeof created.token !== "string") throw new Error(`POST /api/v1/tokens returned no token: ${JSON.stringify(created)}`);
  return created.token;
}

/** Sends a JSON POST with Basic credentials and returns the JSON body. Raises unless the status is 201. */
async function postJson(registry: WranglerDev, path: string, credentials: Credentials, body: unknown): Promise<unknown> {
  return sendAdminJson(registry, "POST", path, credentials, body, 201);
}

/**
 * Sends an admin API request with a JSON body and Basic credentials, and
 * returns the JSON body of the response. Raises, with the response body,
 * unless the status is `expectedStatus`.
 */
export async function sendAdminJson(
  registry: WranglerDev,
  method: "POST" | "PATCH",
  path: string,
  credentials: Credentials,
  body: unknown,
  expectedStatus: number,
): Promise<unknown> {
  const response = await fetch(`${registry.url}${path}`, {
    method,
    headers: { "Content-Type": "application/json", ...authorizationHeaders(credentials) },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  if (response.status !== expectedStatus) {
    throw new Error(`${method} ${path} as ${credentials.username} returned ${response.status}, expected ${expectedStatus}: ${text}`);
  }
  return JSON.parse(text);
}
