import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { maxFailedLogins } from "../../src/auth/rate-limit";
import { basicFor, bearerFor, createUser, fetchAs, uniqueName } from "./auth-fixtures";
import { adminPassword, basicAuthorization, expectRegistryError } from "./helpers";

const admin = basicAuthorization("admin", adminPassword);

describe("admin API with a registry token", () => {
  it("rejects an administrator's pull token", async () => {
    const bearer = await bearerFor(admin, ["repository:docker-local/public/app:pull"]);
    const name = uniqueName("via-token");

    const response = await fetchAs(bearer, "/api/v1/users", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name, password: "long-enough-password", admin: true }),
    });

    await expectRegistryError(response, 401, "UNAUTHORIZED");
    const created = await env.DB.prepare("SELECT 1 FROM users WHERE name = ?").bind(name).first();
    expect(created).toBeNull();
  });

  it("rejects a registry token on a read endpoint", async () => {
    const bearer = await bearerFor(admin, ["registry:catalog:*"]);

    const response = await fetchAs(bearer, "/api/v1/repositories");

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  it("still accepts Basic credentials", async () => {
    const response = await fetchAs(admin, "/api/v1/repositories");

    expect(response.status).toBe(200);
  });
});

describe("failed logins without a client address", () => {
  it("lock only the user who failed", async () => {
    const careless = await createUser("careless");
    const bystander = await createUser("bystander");
    for (let attempt = 0; attempt <= maxFailedLogins; attempt += 1) {
      await fetchAs(basicAuthorization(careless.name, "wrong password"), "/v2/");
    }

    const lockedOut = await fetchAs(basicFor(careless), "/v2/");
    const unaffected = await fetchAs(basicFor(bystander), "/v2/");

    await expectRegistryError(lockedOut, 429, "TOOMANYREQUESTS");
    expect(unaffected.status).toBe(200);
  });

  it("record no address key", async () => {
    const careless = await createUser("no-address");
    await fetchAs(basicAuthorization(careless.name, "wrong password"), "/v2/");

    const { results } = await env.DB.prepare("SELECT key FROM login_failures WHERE key LIKE 'address:%'").all<{ key: string }>();

    expect(results.map((row) => row.key)).not.toContain("address:unknown");
  });
});
