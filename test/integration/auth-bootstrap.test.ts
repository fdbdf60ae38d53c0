import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { adminPassword, basicAuthorization, expectRegistryError, origin, registryFetch } from "./helpers";

/**
 * The registry before its first administrator exists. Each test file has its
 * own D1 database and module instances, and no request in this file has run
 * the bootstrap yet, so the users table starts empty. The tests call the
 * Worker's app directly with ADMIN_PASSWORD unset, and the last describe
 * block lets the bootstrap run with the real environment.
 */

/** Returns the Worker's environment with the ADMIN_PASSWORD secret set to `password`, or unset. */
function envWithPassword(password: string | undefined) {
  return { ...env, ADMIN_PASSWORD: password };
}

async function userCount(): Promise<number> {
  return (await env.DB.prepare("SELECT COUNT(*) AS count FROM users").first<{ count: number }>())!.count;
}

const writes: [string, string, RequestInit][] = [
  ["POST", "/v2/docker-local/app/blobs/uploads/", {}],
  ["PUT", "/v2/docker-local/app/manifests/v1", { headers: { "Content-Type": "application/vnd.oci.image.manifest.v1+json" }, body: "{}" }],
  ["DELETE", "/v2/docker-local/app/manifests/v1", {}],
  ["PATCH", `/v2/docker-local/app/blobs/uploads/${crypto.randomUUID()}`, { body: "bytes" }],
  ["POST", "/api/v1/repositories", { headers: { "Content-Type": "application/json" }, body: '{"key":"other","type":"local"}' }],
  ["POST", "/v2/token", { headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: "grant_type=password" }],
];

describe("without an administrator", () => {
  for (const [method, path, init] of writes) {
    it(`rejects ${method} ${path.replace(/[0-9a-f-]{36}$/, "<id>")}`, async () => {
      expect(await userCount(), "the bootstrap ran before this test").toBe(0);

      const request = new Request(`${origin}${path}`, {
        method,
        ...init,
        headers: { ...(init.headers as Record<string, string>), Authorization: basicAuthorization("admin", adminPassword) },
      });
      const response = await app.fetch(request, envWithPassword(undefined));

      const error = await expectRegistryError(response, 503, "UNAVAILABLE");
      expect(error.message).toContain("ADMIN_PASSWORD");
      expect(await userCount()).toBe(0);
    });
  }

  it("rejects writes with an empty ADMIN_PASSWORD", async () => {
    const response = await app.fetch(new Request(`${origin}/v2/docker-local/app/blobs/uploads/`, { method: "POST" }), envWithPassword(""));

    await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(await userCount()).toBe(0);
  });

  it("serves reads", async () => {
    const response = await app.fetch(new Request(`${origin}/v2/`), envWithPassword(undefined));

    await expectRegistryError(response, 401, "UNAUTHORIZED");
    expect(await userCount()).toBe(0);
  });

  it("issues anonymous tokens", async () => {
    const response = await app.fetch(new Request(`${origin}/v2/token?service=registry.test`), envWithPassword(undefined));

    expect(response.status).toBe(200);
  });
});

describe("first administrator", () => {
  it("comes from ADMIN_PASSWORD", async () => {
    const responses = await Promise.all(
      Array.from({ length: 5 }, () => registryFetch("/v2/docker-local/app/blobs/uploads/", { method: "POST" })),
    );

    expect(responses.map((response) => response.status)).toEqual([202, 202, 202, 202, 202]);
    const users = await env.DB.prepare("SELECT name, admin, disabled FROM users").all();
    expect(users.results).toEqual([{ name: "admin", admin: 1, disabled: 0 }]);
    const audit = await env.DB.prepare("SELECT actor, action, target FROM audit_log WHERE action = 'user.create'").all();
    expect(audit.results).toEqual([{ actor: "system", action: "user.create", target: "admin" }]);
  });

  it("keeps writes open once created", async () => {
    const request = new Request(`${origin}/v2/docker-local/app/blobs/uploads/`, {
      method: "POST",
      headers: { Authorization: basicAuthorization("admin", adminPassword) },
    });

    const response = await app.fetch(request, envWithPassword(undefined));

    expect(response.status).toBe(202);
  });
});
