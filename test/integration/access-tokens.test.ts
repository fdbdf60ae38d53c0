import { env } from "cloudflare:workers";
import { decodeJwt } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { hashSecret } from "../../src/auth/passwords";
import { adminRequest, auditRows, createUser, type TestUser } from "./admin-helpers";
import { adminPassword, anonymousFetch, basicAuthorization, expectRegistryError, registryFetch, uniqueImage } from "./helpers";
import { pushImage } from "./manifest-helpers";

/** A token as `GET /api/v1/tokens` lists it. */
interface ListedToken {
  id: string;
  name: string;
  user: string;
  kind: "access" | "refresh";
  scope: { repositories?: string[]; actions?: string[] } | null;
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
}

/** The creation response: the listed fields plus the secret, shown once. */
interface CreatedToken extends ListedToken {
  token: string;
}

const dayMilliseconds = 86_400_000;

let addressCounter = 0;

/**
 * Returns a client address that no other request of this file uses. Failed
 * logins count against the client address, so each expected failure sends
 * its own address so that no other test is locked out.
 */
function uniqueAddress(): string {
  addressCounter += 1;
  return `203.0.113.${addressCounter}`;
}

function createTokenResponse(authorization: string, body: unknown): Promise<Response> {
  return adminRequest("POST", "/api/v1/tokens", body, authorization);
}

/** Creates a token with the user's password and fails the test unless it returns 201. */
async function createToken(user: TestUser, body: Record<string, unknown> = {}): Promise<CreatedToken> {
  const response = await createTokenResponse(user.authorization, { name: "ci", ...body });
  expect(response.status, `creating a token for ${user.name}: ${await response.clone().text()}`).toBe(201);
  return (await response.json()) as CreatedToken;
}

async function listTokens(authorization: string, query = ""): Promise<Response> {
  return registryFetch(`/api/v1/tokens${query}`, { headers: { Authorization: authorization } });
}

async function listedTokens(authorization: string, query = ""): Promise<ListedToken[]> {
  const response = await listTokens(authorization, query);
  expect(response.status).toBe(200);
  return ((await response.json()) as { tokens: ListedToken[] }).tokens;
}

/** Sends `GET /v2/` with Basic credentials from a fresh client address. */
function baseWithBasic(user: string, secret: string): Promise<Response> {
  return registryFetch("/v2/", { headers: { Authorization: basicAuthorization(user, secret), "CF-Connecting-IP": uniqueAddress() } });
}

function bearer(token: string): string {
  return `Bearer ${token}`;
}

async function storedRow(id: string) {
  return env.DB.prepare("SELECT secret_hash, scope, expires_at, last_used_at, revoked_at FROM access_tokens WHERE id = ?")
    .bind(id)
    .first<{ secret_hash: string; scope: string | null; expires_at: string; last_used_at: string | null; revoked_at: string | null }>();
}

/** Requests a registry token at `GET /v2/token` with Basic credentials and returns the response. */
function tokenEndpoint(user: string, secret: string, query: string): Promise<Response> {
  return registryFetch(`/v2/token?${query}`, {
    headers: { Authorization: basicAuthorization(user, secret), "CF-Connecting-IP": uniqueAddress() },
  });
}

describe("token create", () => {
  let user: TestUser;
  beforeAll(async () => {
    user = await createUser("creator");
  });

  it("returns the secret once", async () => {
    const response = await createTokenResponse(user.authorization, { name: "laptop" });

    expect(response.status).toBe(201);
    const created = (await response.json()) as CreatedToken;
    expect(response.headers.get("Location")).toBe(`/api/v1/tokens/${created.id}`);
    expect(created.token).toMatch(/^erat_[A-Za-z0-9_-]{43}$/);
    expect(created).toMatchObject({ name: "laptop", user: user.name, kind: "access", scope: null, lastUsedAt: null });

    const listed = await listedTokens(user.authorization);
    const entry = listed.find((token) => token.id === created.id);
    expect(entry).toBeDefined();
    expect(Object.keys(entry!).sort()).toEqual(["createdAt", "expiresAt", "id", "kind", "lastUsedAt", "name", "scope", "user"]);
  });

  it("stores only the SHA-256", async () => {
    const created = await createToken(user);

    const row = await storedRow(created.id);
    expect(row!.secret_hash).toBe(await hashSecret(created.token));
    const { results } = await env.DB.prepare("SELECT * FROM access_tokens WHERE id = ?").bind(created.id).all();
    expect(JSON.stringify(results)).not.toContain(created.token);
  });

  it("expires in 90 days by default", async () => {
    const before = Date.now();
    const created = await createToken(user);

    const expiresAt = new Date(created.expiresAt!).getTime();
    expect(expiresAt).toBeGreaterThanOrEqual(before + 90 * dayMilliseconds);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 90 * dayMilliseconds);
  });

  it("honours expiresInDays", async () => {
    const before = Date.now();
    const created = await createToken(user, { expiresInDays: 7 });

    const expiresAt = new Date(created.expiresAt!).getTime();
    expect(expiresAt).toBeGreaterThanOrEqual(before + 7 * dayMilliseconds);
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + 7 * dayMilliseconds);
  });

  it("honours expiresAt", async () => {
    const expiresAt = new Date(Date.now() + 30 * dayMilliseconds).toISOString();

    const created = await createToken(user, { expiresAt });

    expect(created.expiresAt).toBe(expiresAt);
  });

  it("stores the scope without duplicates", async () => {
    const created = await createToken(user, { scope: { repositories: ["docker-local", "docker-local"], actions: ["deploy", "read"] } });

    expect(created.scope).toEqual({ repositories: ["docker-local"], actions: ["read", "deploy"] });
    expect(JSON.parse((await storedRow(created.id))!.scope!)).toEqual(created.scope);
  });

  it("stores an empty scope as none", async () => {
    const created = await createToken(user, { scope: {} });

    expect(created.scope).toBeNull();
  });

  it("audits the creation", async () => {
    const created = await createToken(user, { name: "audited" });

    const entries = (await auditRows(user.name)).filter((row) => row.action === "token.create");
    const entry = entries.find((row) => JSON.parse(row.detail!).id === created.id);
    expect(entry).toBeDefined();
    expect(entry!.actor).toBe(user.name);
    expect(JSON.parse(entry!.detail!)).toMatchObject({ kind: "access", name: "audited" });
    expect(entry!.detail).not.toContain(created.token);
  });

  const invalidBodies: [string, unknown, string][] = [
    ["no name", {}, "name"],
    ["empty name", { name: " " }, "name"],
    ["zero days", { name: "t", expiresInDays: 0 }, "expiresInDays"],
    ["366 days", { name: "t", expiresInDays: 366 }, "expiresInDays"],
    ["fractional days", { name: "t", expiresInDays: 1.5 }, "expiresInDays"],
    ["both expiries", { name: "t", expiresInDays: 3, expiresAt: new Date(Date.now() + dayMilliseconds).toISOString() }, "expiresAt"],
    ["past expiresAt", { name: "t", expiresAt: "2001-01-01T00:00:00Z" }, "expiresAt"],
    ["far expiresAt", { name: "t", expiresAt: new Date(Date.now() + 400 * dayMilliseconds).toISOString() }, "expiresAt"],
    ["malformed expiresAt", { name: "t", expiresAt: "tomorrow" }, "expiresAt"],
    ["unknown action", { name: "t", scope: { actions: ["push"] } }, "scope.actions.0"],
    ["empty actions", { name: "t", scope: { actions: [] } }, "scope.actions"],
    ["invalid repository", { name: "t", scope: { repositories: ["Docker Local"] } }, "scope.repositories.0"],
    ["ANY LOCAL repository", { name: "t", scope: { repositories: ["ANY LOCAL"] } }, "scope.repositories.0"],
    ["unknown scope field", { name: "t", scope: { images: ["a"] } }, "scope"],
    ["unknown field", { name: "t", admin: true }, ""],
  ];
  for (const [label, body, path] of invalidBodies) {
    it(`rejects ${label}`, async () => {
      const error = await expectRegistryError(await createTokenResponse(user.authorization, body), 400, "INVALID_REQUEST");

      const { issues } = error.detail as { issues: { path: string }[] };
      expect(issues.map((issue) => issue.path)).toContain(path);
    });
  }

  it("rejects a body that is not JSON", async () => {
    await expectRegistryError(await createTokenResponse(user.authorization, "{"), 400, "INVALID_REQUEST");
  });

  it("rejects an anonymous request", async () => {
    const response = await anonymousFetch("/api/v1/tokens", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: "anonymous" }),
    });

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });
});

describe("token use", () => {
  let user: TestUser;
  let image: string;
  beforeAll(async () => {
    user = await createUser("token-user", { admin: true });
    image = uniqueImage("token");
    await pushImage(image, "v1");
  });

  it("works as the Basic password", async () => {
    const created = await createToken(user);

    const response = await baseWithBasic(user.name, created.token);

    expect(response.status).toBe(200);
  });

  it("pulls a manifest with Basic", async () => {
    const created = await createToken(user);

    const response = await registryFetch(`/v2/${image}/manifests/v1`, {
      headers: { Authorization: basicAuthorization(user.name, created.token) },
    });

    expect(response.status).toBe(200);
  });

  it("logs in at the token endpoint", async () => {
    const created = await createToken(user);

    const response = await tokenEndpoint(user.name, created.token, `service=registry.test&scope=repository:${image}:pull`);

    expect(response.status).toBe(200);
    const { token } = (await response.json()) as { token: string };
    const pulled = await registryFetch(`/v2/${image}/manifests/v1`, { headers: { Authorization: bearer(token) } });
    expect(pulled.status).toBe(200);
  });

  it("works as a Bearer token on the API", async () => {
    const created = await createToken(user);

    const tokens = await listedTokens(bearer(created.token));

    expect(tokens.map((token) => token.id)).toContain(created.id);
  });

  it("records the last use", async () => {
    const created = await createToken(user);
    expect((await storedRow(created.id))!.last_used_at).toBeNull();

    const before = new Date(Date.now() - 1000).toISOString();
    expect((await baseWithBasic(user.name, created.token)).status).toBe(200);

    const lastUsedAt = (await storedRow(created.id))!.last_used_at;
    expect(lastUsedAt).not.toBeNull();
    expect(lastUsedAt! >= before).toBe(true);
    const listed = (await listedTokens(user.authorization)).find((token) => token.id === created.id);
    expect(listed!.lastUsedAt).toBe(lastUsedAt);
  });

  it("gets no refresh token", async () => {
    const created = await createToken(user);

    const response = await tokenEndpoint(user.name, created.token, "service=registry.test&offline_token=true");

    expect(response.status).toBe(200);
    expect(await response.json()).not.toHaveProperty("refresh_token");
  });

  it("gives a password login a refresh token", async () => {
    const response = await tokenEndpoint(user.name, user.password, "service=registry.test&offline_token=true");

    expect(response.status).toBe(200);
    expect(((await response.json()) as { refresh_token?: string }).refresh_token).toMatch(/^errt_/);
  });
});

describe("token rejection", () => {
  let owner: TestUser;
  let other: TestUser;
  beforeAll(async () => {
    owner = await createUser("owner");
    other = await createUser("other");
  });

  it("rejects an expired token", async () => {
    const created = await createToken(owner);
    await env.DB.prepare("UPDATE access_tokens SET expires_at = ? WHERE id = ?")
      .bind(new Date(Date.now() - 1000).toISOString(), created.id)
      .run();

    await expectRegistryError(await baseWithBasic(owner.name, created.token), 401, "UNAUTHORIZED");
  });

  it("rejects an expired Bearer token", async () => {
    const created = await createToken(owner);
    await env.DB.prepare("UPDATE access_tokens SET expires_at = ? WHERE id = ?")
      .bind(new Date(Date.now() - 1000).toISOString(), created.id)
      .run();

    await expectRegistryError(await listTokens(bearer(created.token)), 401, "UNAUTHORIZED");
  });

  it("rejects a revoked token", async () => {
    const created = await createToken(owner);
    expect((await baseWithBasic(owner.name, created.token)).status).toBe(200);

    const revoked = await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, owner.authorization);
    expect(revoked.status).toBe(204);

    await expectRegistryError(await baseWithBasic(owner.name, created.token), 401, "UNAUTHORIZED");
  });

  it("rejects a revoked Bearer token", async () => {
    const created = await createToken(owner);
    expect((await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, owner.authorization)).status).toBe(204);

    await expectRegistryError(await listTokens(bearer(created.token)), 401, "UNAUTHORIZED");
  });

  it("rejects another user's name", async () => {
    const created = await createToken(owner);

    await expectRegistryError(await baseWithBasic(other.name, created.token), 401, "UNAUTHORIZED");
  });

  it("rejects another name at /v2/token", async () => {
    const created = await createToken(owner);

    await expectRegistryError(await tokenEndpoint(other.name, created.token, "service=registry.test"), 401, "UNAUTHORIZED");
  });

  it("rejects a disabled user's token", async () => {
    const user = await createUser("disabled-later");
    const created = await createToken(user);
    expect((await adminRequest("PATCH", `/api/v1/users/${user.name}`, { disabled: true })).status).toBe(200);

    await expectRegistryError(await baseWithBasic(user.name, created.token), 401, "UNAUTHORIZED");
  });
});

describe("token scope", () => {
  let administrator: TestUser;
  let image: string;
  let readOnly: CreatedToken;
  beforeAll(async () => {
    administrator = await createUser("scoped-admin", { admin: true });
    image = uniqueImage("scoped");
    await pushImage(image, "v1");
    readOnly = await createToken(administrator, { scope: { repositories: ["docker-local"], actions: ["read"] } });
  });

  function asScopedToken(path: string, init: RequestInit = {}): Promise<Response> {
    return registryFetch(path, {
      ...init,
      headers: { ...init.headers, Authorization: basicAuthorization(administrator.name, readOnly.token) },
    });
  }

  it("pulls with a read scope", async () => {
    const response = await asScopedToken(`/v2/${image}/manifests/v1`);

    expect(response.status).toBe(200);
  });

  it("cannot push with a read scope", async () => {
    const response = await asScopedToken(`/v2/${image}/blobs/uploads/`, { method: "POST" });

    await expectRegistryError(response, 403, "DENIED");
  });

  it("cannot delete with a read scope", async () => {
    const response = await asScopedToken(`/v2/${image}/manifests/v1`, { method: "DELETE" });

    await expectRegistryError(response, 403, "DENIED");
  });

  it("cannot read other repositories", async () => {
    const repository = `scoped-${crypto.randomUUID().slice(0, 8)}`;
    expect((await adminRequest("POST", "/api/v1/repositories", { key: repository, type: "local" })).status).toBe(201);
    const elsewhere = `${repository}/app`;
    await pushImage(elsewhere, "v1");

    const response = await asScopedToken(`/v2/${elsewhere}/manifests/v1`);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("gets only pull at the token endpoint", async () => {
    const response = await tokenEndpoint(administrator.name, readOnly.token, `service=registry.test&scope=repository:${image}:pull,push`);

    expect(response.status).toBe(200);
    const { token } = (await response.json()) as { token: string };
    expect(decodeJwt(token).access).toEqual([{ type: "repository", name: image, actions: ["pull"] }]);

    const upload = await registryFetch(`/v2/${image}/blobs/uploads/`, { method: "POST", headers: { Authorization: bearer(token) } });
    await expectRegistryError(upload, 403, "DENIED");
  });

  it("is no administrator on the API", async () => {
    const response = await adminRequest("GET", "/api/v1/users", undefined, bearer(readOnly.token));

    await expectRegistryError(response, 403, "DENIED");
  });

  it("gives its registry token no admin API access", async () => {
    const issued = await tokenEndpoint(administrator.name, readOnly.token, "service=registry.test");
    const { token } = (await issued.json()) as { token: string };

    const response = await adminRequest("GET", "/api/v1/users", undefined, bearer(token));

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  it("leaves an unscoped token administrator", async () => {
    const created = await createToken(administrator);

    const response = await adminRequest("GET", "/api/v1/users", undefined, bearer(created.token));

    expect(response.status).toBe(200);
  });
});

describe("token creation by tokens", () => {
  let user: TestUser;
  let created: CreatedToken;
  beforeAll(async () => {
    user = await createUser("no-widening", { admin: true });
    created = await createToken(user);
  });

  it("rejects a Basic access token", async () => {
    const response = await createTokenResponse(basicAuthorization(user.name, created.token), { name: "wider" });

    await expectRegistryError(response, 403, "DENIED");
  });

  it("rejects a Bearer access token", async () => {
    const response = await createTokenResponse(bearer(created.token), { name: "wider" });

    await expectRegistryError(response, 403, "DENIED");
  });

  it("rejects a registry token", async () => {
    const issued = await tokenEndpoint(user.name, user.password, "service=registry.test");
    const { token } = (await issued.json()) as { token: string };

    const response = await createTokenResponse(bearer(token), { name: "wider" });

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });
});

describe("token list", () => {
  let alice: TestUser;
  let bob: TestUser;
  beforeAll(async () => {
    alice = await createUser("alice");
    bob = await createUser("bob");
  });

  it("lists only the caller's tokens", async () => {
    const own = await createToken(alice);
    const foreign = await createToken(bob);

    const ids = (await listedTokens(alice.authorization)).map((token) => token.id);

    expect(ids).toContain(own.id);
    expect(ids).not.toContain(foreign.id);
  });

  it("never shows a secret or hash", async () => {
    const created = await createToken(alice);

    const response = await listTokens(alice.authorization);
    const text = await response.text();

    expect(text).not.toContain(created.token);
    expect(text).not.toContain(await hashSecret(created.token));
  });

  it("omits revoked tokens", async () => {
    const created = await createToken(alice);
    expect((await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, alice.authorization)).status).toBe(204);

    const ids = (await listedTokens(alice.authorization)).map((token) => token.id);

    expect(ids).not.toContain(created.id);
  });

  it("lets administrators pass ?user=", async () => {
    const created = await createToken(bob);

    const tokens = await listedTokens(basicAuthorization("admin", adminPassword), `?user=${bob.name}`);

    expect(tokens.map((token) => token.id)).toContain(created.id);
    expect(new Set(tokens.map((token) => token.user))).toEqual(new Set([bob.name]));
  });

  it("accepts ?user= naming the caller", async () => {
    const created = await createToken(alice);

    const tokens = await listedTokens(alice.authorization, `?user=${alice.name}`);

    expect(tokens.map((token) => token.id)).toContain(created.id);
  });

  it("denies ?user= to other users", async () => {
    await expectRegistryError(await listTokens(alice.authorization, `?user=${bob.name}`), 403, "DENIED");
  });

  it("reports an unknown ?user=", async () => {
    const response = await listTokens(basicAuthorization("admin", adminPassword), "?user=nobody-here");

    await expectRegistryError(response, 404, "NOT_FOUND");
  });

  it("shows one token", async () => {
    const created = await createToken(alice, { name: "single" });

    const response = await registryFetch(`/api/v1/tokens/${created.id}`, { headers: { Authorization: alice.authorization } });

    expect(response.status).toBe(200);
    const { token: _secret, ...listed } = created;
    expect(await response.json()).toEqual(listed);
  });
});

describe("token revoke", () => {
  let alice: TestUser;
  let mallory: TestUser;
  beforeAll(async () => {
    alice = await createUser("revoker");
    mallory = await createUser("mallory");
  });

  it("sets revoked_at", async () => {
    const created = await createToken(alice);

    const response = await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, alice.authorization);

    expect(response.status).toBe(204);
    expect((await storedRow(created.id))!.revoked_at).not.toBeNull();
  });

  it("audits the revocation", async () => {
    const created = await createToken(alice);

    await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, alice.authorization);

    const entry = (await auditRows(alice.name)).find((row) => row.action === "token.revoke" && JSON.parse(row.detail!).id === created.id);
    expect(entry).toBeDefined();
    expect(entry!.actor).toBe(alice.name);
  });

  it("hides other users' tokens", async () => {
    const created = await createToken(alice);

    const response = await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, mallory.authorization);

    await expectRegistryError(response, 404, "NOT_FOUND");
    expect((await storedRow(created.id))!.revoked_at).toBeNull();
  });

  it("lets an administrator revoke", async () => {
    const created = await createToken(alice);

    const response = await adminRequest("DELETE", `/api/v1/tokens/${created.id}`);

    expect(response.status).toBe(204);
    const entry = (await auditRows(alice.name)).find((row) => row.action === "token.revoke" && JSON.parse(row.detail!).id === created.id);
    expect(entry!.actor).toBe("admin");
  });

  it("reports a revoked token as not found", async () => {
    const created = await createToken(alice);
    expect((await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, alice.authorization)).status).toBe(204);

    const again = await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, alice.authorization);

    await expectRegistryError(again, 404, "NOT_FOUND");
  });

  it("lets a token revoke itself", async () => {
    const created = await createToken(alice);

    const response = await adminRequest("DELETE", `/api/v1/tokens/${created.id}`, undefined, bearer(created.token));

    expect(response.status).toBe(204);
  });

  it("rejects PUT with 405", async () => {
    const created = await createToken(alice);

    const response = await adminRequest("PUT", `/api/v1/tokens/${created.id}`, {}, alice.authorization);

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, DELETE");
  });
});
