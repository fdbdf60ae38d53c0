import { env } from "cloudflare:workers";
import { expect } from "vitest";
import { hashSecret } from "../../src/auth/passwords";
import { anonymousFetch, basicAuthorization, registryFetch } from "./helpers";

/** A password that passes the 12-character minimum. */
export const userPassword = "correct-horse-battery";

/** Returns a name for a user, group or target that no other test uses. */
export function uniqueName(label: string): string {
  return `${label}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Sends a JSON admin API request as the administrator, or with the given Authorization header. */
export function adminRequest(method: string, path: string, body?: unknown, authorization?: string): Promise<Response> {
  const headers: Record<string, string> = { "Content-Type": "application/json" };
  if (authorization) headers.Authorization = authorization;
  const init: RequestInit = { method, headers };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  return registryFetch(path, init);
}

/** Sends a JSON admin API request without credentials. */
export function anonymousAdminRequest(method: string, path: string, body?: unknown): Promise<Response> {
  const init: RequestInit = { method, headers: { "Content-Type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  return anonymousFetch(path, init);
}

/** A user created through the admin API, with the Authorization header to act as them. */
export interface TestUser {
  name: string;
  password: string;
  authorization: string;
}

/** Creates a user through the admin API and fails the test unless it returns 201. */
export async function createUser(label = "user", fields: Record<string, unknown> = {}): Promise<TestUser> {
  const name = uniqueName(label);
  const response = await adminRequest("POST", "/api/v1/users", { name, password: userPassword, ...fields });
  expect(response.status, `creating user ${name}: ${await response.clone().text()}`).toBe(201);
  return { name, password: userPassword, authorization: basicAuthorization(name, userPassword) };
}

/** Creates a group through the admin API and fails the test unless it returns 201. */
export async function createGroup(label = "group", fields: Record<string, unknown> = {}): Promise<string> {
  const name = uniqueName(label);
  const response = await adminRequest("POST", "/api/v1/groups", { name, ...fields });
  expect(response.status, `creating group ${name}: ${await response.clone().text()}`).toBe(201);
  return name;
}

/** Creates a permission target through the admin API and fails the test unless it returns 201. */
export async function createTarget(fields: Record<string, unknown>, label = "target"): Promise<string> {
  const name = uniqueName(label);
  const response = await adminRequest("POST", "/api/v1/permissions", { name, ...fields });
  expect(response.status, `creating target ${name}: ${await response.clone().text()}`).toBe(201);
  return name;
}

/** Creates a local repository through the admin API and fails the test unless it returns 201. */
export async function createRepository(label = "repo"): Promise<string> {
  const key = uniqueName(label);
  const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "local" });
  expect(response.status, `creating repository ${key}: ${await response.clone().text()}`).toBe(201);
  return key;
}

/** One row of the audit log, read from D1. */
export interface AuditRow {
  actor: string;
  action: string;
  target: string;
  detail: string | null;
}

/** Reads the audit entries for a target, oldest first, straight from D1. */
export async function auditRows(target: string): Promise<AuditRow[]> {
  const { results } = await env.DB.prepare("SELECT actor, action, target, detail FROM audit_log WHERE target = ? ORDER BY id")
    .bind(target)
    .all<AuditRow>();
  return results;
}

/** Returns the zod issue paths of an INVALID_REQUEST error's detail, sorted. */
export function issuePaths(detail: unknown): string[] {
  const { issues } = detail as { issues: { path: string; message: string }[] };
  for (const issue of issues) expect(issue.message.length).toBeGreaterThan(0);
  return issues.map((issue) => issue.path).sort();
}

/** Returns the messages of an INVALID_REQUEST error's zod issues. */
export function issueMessages(detail: unknown): string[] {
  return (detail as { issues: { message: string }[] }).issues.map((issue) => issue.message);
}

let addressCounter = 0;

/**
 * Sends `GET /v2/` with Basic credentials from a client address that no other
 * request uses, and returns the status. Failed logins count against the
 * client address, so expected failures must not share the default one.
 */
export async function loginStatus(user: string, password: string): Promise<number> {
  addressCounter += 1;
  const response = await registryFetch("/v2/", {
    headers: {
      Authorization: basicAuthorization(user, password),
      "CF-Connecting-IP": `10.77.${Math.floor(addressCounter / 250)}.${addressCounter % 250}`,
    },
  });
  return response.status;
}

/** Stores an access token for the user straight in D1, with an optional scope, and returns its secret. */
export async function insertAccessToken(user: TestUser, scope: Record<string, string[]> | null = null): Promise<string> {
  const secret = `erat_${crypto.randomUUID().replaceAll("-", "")}`;
  await env.DB.prepare(
    `INSERT INTO access_tokens (id, user_id, kind, name, secret_hash, scope)
     SELECT ?, id, 'access', 'test token', ?, ? FROM users WHERE name = ?`,
  )
    .bind(crypto.randomUUID(), await hashSecret(secret), scope === null ? null : JSON.stringify(scope), user.name)
    .run();
  return secret;
}
