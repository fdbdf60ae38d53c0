import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { maxFailedLogins } from "../../src/auth/rate-limit";
import { anonymousAdminRequest, auditRows, createUser, insertAccessToken, issuePaths, loginStatus } from "./admin-helpers";
import { basicAuthorization, expectRegistryError, registryFetch } from "./helpers";

const newPassword = "a-brand-new-password";

let addressCounter = 0;

/** Returns a client address that no other request in this file uses, so failed-login counts stay per test. */
function freshAddress(): string {
  addressCounter += 1;
  return `192.0.2.${addressCounter}`;
}

function changePassword(authorization: string, body: unknown, address = freshAddress()): Promise<Response> {
  return registryFetch("/api/v1/users/me/password", {
    method: "PUT",
    headers: { Authorization: authorization, "Content-Type": "application/json", "CF-Connecting-IP": address },
    body: JSON.stringify(body),
  });
}

async function storedHash(name: string): Promise<{ password_hash: string; password_iterations: number }> {
  const row = await env.DB.prepare("SELECT password_hash, password_iterations FROM users WHERE name = ?")
    .bind(name)
    .first<{ password_hash: string; password_iterations: number }>();
  return row!;
}

describe("own password change", () => {
  it("changes the password with 204", async () => {
    const user = await createUser("changer");

    const response = await changePassword(user.authorization, { currentPassword: user.password, newPassword });

    expect(response.status).toBe(204);
    expect(await response.text()).toBe("");
    expect(await loginStatus(user.name, newPassword)).toBe(200);
    expect(await loginStatus(user.name, user.password)).toBe(401);
  });

  it("stores PBKDF2 with 100000 iterations", async () => {
    const user = await createUser("iterations");
    const before = await storedHash(user.name);

    await changePassword(user.authorization, { currentPassword: user.password, newPassword });

    const after = await storedHash(user.name);
    expect(after.password_iterations).toBe(100_000);
    expect(after.password_hash).not.toBe(before.password_hash);
  });

  it("writes an audit entry by the user", async () => {
    const user = await createUser("audited");

    await changePassword(user.authorization, { currentPassword: user.password, newPassword });

    const rows = await auditRows(user.name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([
      ["admin", "user.create"],
      [user.name, "user.password.change"],
    ]);
    expect(rows[1]!.detail).not.toContain(newPassword);
    expect(rows[1]!.detail).not.toContain(user.password);
  });

  it("returns 401 for a wrong current password", async () => {
    const user = await createUser("mistaken");
    const before = await storedHash(user.name);

    const response = await changePassword(user.authorization, { currentPassword: "not-the-password", newPassword });

    const error = await expectRegistryError(response, 401, "UNAUTHORIZED");
    expect(error.message).toContain("currentPassword");
    expect(await storedHash(user.name)).toEqual(before);
  });

  it("audits and counts a wrong current password", async () => {
    const user = await createUser("counted");

    await changePassword(user.authorization, { currentPassword: "not-the-password", newPassword });

    const rows = await auditRows(user.name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([
      ["admin", "user.create"],
      [user.name, "user.password.failed"],
    ]);
    const failures = await env.DB.prepare("SELECT failures FROM login_failures WHERE key = ?")
      .bind(`user:${user.name}`)
      .first<{ failures: number }>();
    expect(failures?.failures).toBe(1);
  });

  it("returns 429 after too many wrong passwords", async () => {
    const user = await createUser("guesser");
    for (let attempt = 0; attempt < maxFailedLogins; attempt += 1) {
      const response = await changePassword(user.authorization, { currentPassword: `guess-${attempt}`, newPassword });
      expect(response.status).toBe(401);
    }

    const response = await changePassword(user.authorization, { currentPassword: user.password, newPassword });

    await expectRegistryError(response, 429, "TOOMANYREQUESTS");
    expect(Number(response.headers.get("Retry-After"))).toBeGreaterThan(0);
    expect(await loginStatus(user.name, newPassword)).toBe(429);
  });

  it("rate-limits wrong passwords per client address", async () => {
    const address = freshAddress();
    for (let attempt = 0; attempt < maxFailedLogins; attempt += 1) {
      const user = await createUser("spray");
      const response = await changePassword(user.authorization, { currentPassword: "not-the-password", newPassword }, address);
      expect(response.status).toBe(401);
    }
    const user = await createUser("neighbour");

    const response = await changePassword(user.authorization, { currentPassword: user.password, newPassword }, address);

    await expectRegistryError(response, 429, "TOOMANYREQUESTS");
  });

  it("returns 403 for an access token in Basic", async () => {
    const user = await createUser("token-basic");
    const secret = await insertAccessToken(user);

    const response = await changePassword(basicAuthorization(user.name, secret), { currentPassword: user.password, newPassword });

    await expectRegistryError(response, 403, "DENIED");
    expect(await loginStatus(user.name, user.password)).toBe(200);
  });

  it("returns 403 for a Bearer access token", async () => {
    const user = await createUser("token-bearer");
    const secret = await insertAccessToken(user);

    const response = await changePassword(`Bearer ${secret}`, { currentPassword: user.password, newPassword });

    await expectRegistryError(response, 403, "DENIED");
    expect(await loginStatus(user.name, user.password)).toBe(200);
  });

  it("returns 401 for a registry token", async () => {
    const user = await createUser("registry-token");
    const tokenResponse = await registryFetch("/v2/token?service=registry.test", { headers: { Authorization: user.authorization } });
    expect(tokenResponse.status).toBe(200);
    const { token } = (await tokenResponse.json()) as { token: string };

    const response = await changePassword(`Bearer ${token}`, { currentPassword: user.password, newPassword });

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  it("returns 401 to the anonymous user", async () => {
    const response = await anonymousAdminRequest("PUT", "/api/v1/users/me/password", { currentPassword: "x", newPassword });

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  const invalidBodies: [string, Record<string, unknown>, string[]][] = [
    ["a short new password", { currentPassword: "whatever-it-is", newPassword: "short" }, ["newPassword"]],
    ["a missing current password", { newPassword }, ["currentPassword"]],
    ["an empty current password", { currentPassword: "", newPassword }, ["currentPassword"]],
    ["a missing new password", { currentPassword: "whatever-it-is" }, ["newPassword"]],
    ["an unknown field", { currentPassword: "whatever-it-is", newPassword, user: "admin" }, [""]],
  ];
  for (const [label, body, paths] of invalidBodies) {
    it(`rejects ${label}`, async () => {
      const user = await createUser("invalid");

      const error = await expectRegistryError(await changePassword(user.authorization, body), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toEqual(paths);
    });
  }

  it("rejects a new password equal to the current one", async () => {
    const user = await createUser("same");

    const response = await changePassword(user.authorization, { currentPassword: user.password, newPassword: user.password });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["newPassword"]);
  });

  it("lets an administrator change their own password", async () => {
    const user = await createUser("own-admin", { admin: true });

    const response = await changePassword(user.authorization, { currentPassword: user.password, newPassword });

    expect(response.status).toBe(204);
    expect(await loginStatus(user.name, newPassword)).toBe(200);
  });

  it("returns 405 for GET", async () => {
    const user = await createUser("reader");

    const response = await registryFetch("/api/v1/users/me/password", { headers: { Authorization: user.authorization } });

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("PUT");
  });
});
