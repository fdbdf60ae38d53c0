import { env } from "cloudflare:workers";
import { decodeProtectedHeader } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { hashSecret } from "../../src/auth/passwords";
import { parseScope } from "../../src/auth/scopes";
import {
  basicFor,
  claimsOf,
  createAccessToken,
  createPermissionTarget,
  createRepository,
  createUser,
  createUserWith,
  fetchAs,
  issuer,
  repositoryAccess,
  requestToken,
  secondsFromNow,
  service,
  tokenPath,
  uniqueAddress,
  type TestUser,
  type TokenResponse,
} from "./auth-fixtures";
import { adminPassword, basicAuthorization, expectRegistryError, origin } from "./helpers";
import { pushImage } from "./manifest-helpers";

const catalogScope = "registry:catalog:*";
const catalogAccess = { type: "registry", name: "catalog", actions: ["*"] };

/** Images pushed by the administrator: one the reader may pull, one only the full user may pull, and one public. */
const readable = "docker-local/token/readable";
const hidden = "docker-local/token/hidden";
const publicImage = "docker-local/token-public/app";

let reader: TestUser;
let fullUser: TestUser;

beforeAll(async () => {
  for (const name of [readable, hidden, publicImage]) await pushImage(name, "v1");
  reader = await createUserWith("reader", ["read"], ["token/readable"]);
  fullUser = await createUserWith("full", ["read", "deploy", "delete"], ["token/**"]);
  await createPermissionTarget("public", { includes: ["token-public/**"], grants: [{ to: "anonymous", actions: ["read"] }] });
});

/** Sends the OAuth2 form to `POST /v2/token`. */
async function postForm(fields: [string, string][], address?: string): Promise<Response> {
  return fetchAs(
    null,
    "/v2/token",
    { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(fields) },
    address,
  );
}

async function postFormOk(fields: [string, string][]): Promise<TokenResponse> {
  const response = await postForm(fields);
  expect(response.status, await response.clone().text()).toBe(200);
  return (await response.json()) as TokenResponse;
}

describe("GET /v2/token", () => {
  it("issues an anonymous token", async () => {
    const before = Math.floor(Date.now() / 1000);

    const body = await requestToken(null, []);

    const claims = claimsOf(body.token);
    expect(Object.keys(body).sort()).toEqual(["access_token", "expires_in", "issued_at", "token"]);
    expect(body.access_token).toBe(body.token);
    expect(body.expires_in).toBe(300);
    expect(Math.abs(Date.parse(body.issued_at) / 1000 - before)).toBeLessThan(5);
    expect(claims.sub).toBe("anonymous");
    expect(claims.iss).toBe(issuer);
    expect(claims.aud).toBe(service);
    expect(claims.access).toEqual([]);
    expect(claims.exp! - claims.iat!).toBe(300);
    expect(claims.nbf).toBeLessThanOrEqual(claims.iat!);
    expect(decodeProtectedHeader(body.token).alg).toBe("ES256");
  });

  it("grants a readable scope", async () => {
    const body = await requestToken(basicFor(reader), [`repository:${readable}:pull`]);

    expect(claimsOf(body.token).sub).toBe(reader.name);
    expect(claimsOf(body.token).access).toEqual([repositoryAccess(readable, ["pull"])]);
  });

  it("narrows push to pull for a reader", async () => {
    const body = await requestToken(basicFor(reader), [`repository:${readable}:pull,push`]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(readable, ["pull"])]);
  });

  it("omits a scope with nothing granted", async () => {
    const body = await requestToken(basicFor(reader), [`repository:${readable}:push,delete`, `repository:${hidden}:pull`]);

    expect(claimsOf(body.token).access).toEqual([]);
  });

  it("grants every scope parameter", async () => {
    const body = await requestToken(basicFor(fullUser), [`repository:${readable}:pull`, `repository:${hidden}:push`, catalogScope]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(readable, ["pull"]), repositoryAccess(hidden, ["push"]), catalogAccess]);
  });

  it("expands the wildcard action", async () => {
    const body = await requestToken(basicFor(fullUser), [`repository:${hidden}:*`]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(hidden, ["pull", "push", "delete"])]);
  });

  it("grants anonymous pull of a public image", async () => {
    const body = await requestToken(null, [`repository:${publicImage}:pull,push`, `repository:${readable}:pull`]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(publicImage, ["pull"])]);
  });

  it("grants the catalog to users", async () => {
    const body = await requestToken(basicFor(reader), [catalogScope]);

    expect(claimsOf(body.token).access).toEqual([catalogAccess]);
  });

  it("withholds the catalog from anonymous", async () => {
    const body = await requestToken(null, [catalogScope]);

    expect(claimsOf(body.token).access).toEqual([]);
  });

  it("ignores malformed and unknown scopes", async () => {
    const malformed = [
      "garbage",
      "repository::pull",
      "repository:pull",
      ":docker-local/app:pull",
      "unknown:thing:pull",
      "registry:catalog:pull",
    ];

    const body = await requestToken(basicFor(fullUser), [...malformed, `repository:${readable}:pull`]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(readable, ["pull"])]);
  });

  it("ignores names outside the OCI grammar", async () => {
    const names = [
      "docker-local/Token/readable",
      "docker-local/token/../token/hidden",
      "docker-local//token/hidden",
      "docker-local/token%2Fhidden",
    ];

    const body = await requestToken(
      basicFor(fullUser),
      names.map((name) => `repository:${name}:pull`),
    );

    expect(claimsOf(body.token).access).toEqual([]);
  });

  it("rejects a wrong password", async () => {
    const response = await fetchAs(
      basicAuthorization(reader.name, "wrong"),
      tokenPath([`repository:${readable}:pull`]),
      {},
      uniqueAddress(),
    );

    await expectRegistryError(response, 401, "UNAUTHORIZED");
    expect(response.headers.get("WWW-Authenticate")).toBe(`Bearer realm="${origin}/v2/token",service="${service}"`);
  });

  it("rejects a registry token as credentials", async () => {
    const first = await requestToken(basicFor(fullUser), [`repository:${readable}:pull`]);

    const response = await fetchAs(`Bearer ${first.token}`, tokenPath([`repository:${hidden}:pull,push,delete`]));

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  it("rejects an anonymous registry token as credentials", async () => {
    const first = await requestToken(null, []);

    const response = await fetchAs(`Bearer ${first.token}`, tokenPath([`repository:${publicImage}:pull`]));

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  it("narrows an access token's grants", async () => {
    const secret = await createAccessToken(fullUser, { scope: { actions: ["read"] } });

    const body = await requestToken(basicAuthorization(fullUser.name, secret), [`repository:${hidden}:pull,push,delete`, catalogScope]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(hidden, ["pull"]), catalogAccess]);
  });

  it("accepts an access token as Bearer", async () => {
    const secret = await createAccessToken(fullUser);

    const body = await requestToken(`Bearer ${secret}`, [`repository:${hidden}:pull`]);

    expect(claimsOf(body.token).sub).toBe(fullUser.name);
    expect(claimsOf(body.token).access).toEqual([repositoryAccess(hidden, ["pull"])]);
  });

  it("grants nothing outside an access token's repositories", async () => {
    const otherRepository = await createRepository("token-other");
    const secret = await createAccessToken(fullUser, { scope: { repositories: [otherRepository] } });

    const body = await requestToken(basicAuthorization(fullUser.name, secret), [`repository:${hidden}:pull`]);

    expect(claimsOf(body.token).access).toEqual([]);
  });
});

describe("scope parsing", () => {
  it("keeps host and port in the name", () => {
    expect(parseScope("repository:localhost:5000/docker-local/app:pull")).toEqual({
      type: "repository",
      name: "localhost:5000/docker-local/app",
      actions: ["pull"],
    });
  });

  it("splits several actions", () => {
    expect(parseScope("repository:docker-local/app:pull,push")).toEqual({
      type: "repository",
      name: "docker-local/app",
      actions: ["pull", "push"],
    });
  });

  for (const malformed of ["repository", "repository:pull", "repository::pull", ":name:pull"]) {
    it(`rejects '${malformed}'`, () => {
      expect(parseScope(malformed)).toBeNull();
    });
  }

  it("grants around a name with host and port", async () => {
    const body = await requestToken(basicFor(fullUser), [`repository:localhost:5000/${readable}:pull`, `repository:${readable}:pull`]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(readable, ["pull"])]);
  });
});

describe("catalog with registry tokens", () => {
  async function catalogWith(authorization: string): Promise<string[]> {
    const response = await fetchAs(authorization, "/v2/_catalog");
    expect(response.status, await response.clone().text()).toBe(200);
    return ((await response.json()) as { repositories: string[] }).repositories;
  }

  it("lists only readable images", async () => {
    const { token } = await requestToken(basicFor(reader), [catalogScope]);

    const names = await catalogWith(`Bearer ${token}`);

    expect(names).toContain(readable);
    expect(names).toContain(publicImage);
    expect(names).not.toContain(hidden);
  });

  it("lists everything for the administrator", async () => {
    const { token } = await requestToken(basicAuthorization("admin", adminPassword), [catalogScope]);

    const names = await catalogWith(`Bearer ${token}`);

    expect(names).toEqual(expect.arrayContaining([readable, hidden, publicImage]));
  });

  it("keeps an access token's repositories", async () => {
    const otherRepository = await createRepository("catalog-other");
    await pushImage(`${otherRepository}/app`, "v1");
    const secret = await createAccessToken(fullUser, { scope: { repositories: [otherRepository] } });
    await createPermissionTarget("catalog-other", {
      repositories: [otherRepository],
      grants: [{ to: { user: fullUser }, actions: ["read"] }],
    });
    const { token } = await requestToken(basicAuthorization(fullUser.name, secret), [catalogScope]);

    const names = await catalogWith(`Bearer ${token}`);

    expect(names).toEqual([`${otherRepository}/app`]);
  });

  it("requires the catalog scope", async () => {
    const { token } = await requestToken(basicFor(fullUser), [`repository:${readable}:pull`]);

    const response = await fetchAs(`Bearer ${token}`, "/v2/_catalog");

    await expectRegistryError(response, 401, "UNAUTHORIZED");
    expect(response.headers.get("WWW-Authenticate")).toBe(
      `Bearer realm="${origin}/v2/token",service="${service}",scope="registry:catalog:*",error="insufficient_scope"`,
    );
  });
});

describe("refresh tokens", () => {
  async function refreshRow(secret: string) {
    return env.DB.prepare("SELECT user_id, kind, expires_at, revoked_at FROM access_tokens WHERE secret_hash = ?")
      .bind(await hashSecret(secret))
      .first<{ user_id: number; kind: string; expires_at: string; revoked_at: string | null }>();
  }

  it("returns one for offline_token=true", async () => {
    const body = await requestToken(basicFor(reader), [], { offline_token: "true" });

    expect(body.refresh_token).toMatch(/^errt_[A-Za-z0-9_-]{43}$/);
    const row = await refreshRow(body.refresh_token!);
    expect(row?.user_id).toBe(reader.id);
    expect(row?.kind).toBe("refresh");
    expect(Date.parse(row!.expires_at) - Date.now()).toBeGreaterThan(29 * 86_400_000);
    expect(Date.parse(row!.expires_at) - Date.now()).toBeLessThanOrEqual(30 * 86_400_000);
  });

  it("stores only the secret's hash", async () => {
    const body = await requestToken(basicFor(reader), [], { offline_token: "true" });

    const stored = await env.DB.prepare("SELECT COUNT(*) AS count FROM access_tokens WHERE secret_hash = ? OR name = ? OR id = ?")
      .bind(body.refresh_token, body.refresh_token, body.refresh_token)
      .first<{ count: number }>();
    expect(stored?.count).toBe(0);
  });

  it("omits one without offline_token", async () => {
    const body = await requestToken(basicFor(reader), []);

    expect(body.refresh_token).toBeUndefined();
  });

  it("omits one for anonymous", async () => {
    const body = await requestToken(null, [], { offline_token: "true" });

    expect(body.refresh_token).toBeUndefined();
  });

  it("omits one for an access token login", async () => {
    const secret = await createAccessToken(fullUser, { scope: { actions: ["read"] } });

    const body = await requestToken(basicAuthorization(fullUser.name, secret), [], { offline_token: "true" });

    expect(body.refresh_token).toBeUndefined();
  });

  it("is no password", async () => {
    const { refresh_token } = await requestToken(basicFor(reader), [], { offline_token: "true" });

    const response = await fetchAs(basicAuthorization(reader.name, refresh_token!), `/v2/${readable}/tags/list`, {}, uniqueAddress());

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  it("is no bearer token", async () => {
    const { refresh_token } = await requestToken(basicFor(reader), [], { offline_token: "true" });

    const response = await fetchAs(`Bearer ${refresh_token}`, `/v2/${readable}/tags/list`);

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });
});

describe("POST /v2/token", () => {
  it("accepts grant_type=password", async () => {
    const body = await postFormOk([
      ["grant_type", "password"],
      ["username", reader.name],
      ["password", reader.password],
      ["service", service],
      ["client_id", "docker"],
      ["scope", `repository:${readable}:pull`],
    ]);

    expect(Object.keys(body).sort()).toEqual(["access_token", "expires_in", "issued_at", "token"]);
    expect(body.access_token).toBe(body.token);
    expect(body.expires_in).toBe(300);
    expect(claimsOf(body.token).sub).toBe(reader.name);
    expect(claimsOf(body.token).access).toEqual([repositoryAccess(readable, ["pull"])]);
  });

  it("splits and repeats scope fields", async () => {
    const body = await postFormOk([
      ["grant_type", "password"],
      ["username", fullUser.name],
      ["password", fullUser.password],
      ["scope", `repository:${readable}:pull repository:${hidden}:push`],
      ["scope", catalogScope],
    ]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(readable, ["pull"]), repositoryAccess(hidden, ["push"]), catalogAccess]);
  });

  it("returns a refresh token for access_type=offline", async () => {
    const body = await postFormOk([
      ["grant_type", "password"],
      ["username", reader.name],
      ["password", reader.password],
      ["access_type", "offline"],
    ]);

    expect(body.refresh_token).toMatch(/^errt_/);
  });

  it("accepts an access token as password", async () => {
    const secret = await createAccessToken(fullUser, { scope: { actions: ["read", "deploy"] } });

    const body = await postFormOk([
      ["grant_type", "password"],
      ["username", fullUser.name],
      ["password", secret],
      ["scope", `repository:${hidden}:pull,push,delete`],
    ]);

    expect(claimsOf(body.token).access).toEqual([repositoryAccess(hidden, ["pull", "push"])]);
  });

  it("accepts grant_type=refresh_token", async () => {
    const { refresh_token } = await requestToken(basicFor(reader), [], { offline_token: "true" });

    const body = await postFormOk([
      ["grant_type", "refresh_token"],
      ["refresh_token", refresh_token!],
      ["scope", `repository:${readable}:pull,push`],
    ]);

    expect(claimsOf(body.token).sub).toBe(reader.name);
    expect(claimsOf(body.token).access).toEqual([repositoryAccess(readable, ["pull"])]);
    expect(body.refresh_token).toBeUndefined();
    const pulled = await fetchAs(`Bearer ${body.token}`, `/v2/${readable}/manifests/v1`);
    expect(pulled.status).toBe(200);
  });

  it("rejects a wrong password", async () => {
    const response = await postForm(
      [
        ["grant_type", "password"],
        ["username", reader.name],
        ["password", "wrong"],
      ],
      uniqueAddress(),
    );

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  const rejectedRefreshTokens: [string, () => Promise<string>][] = [
    ["an unknown refresh token", async () => "errt_unknown"],
    ["a revoked refresh token", () => createAccessToken(reader, { kind: "refresh", revokedAt: secondsFromNow(-1) })],
    ["an expired refresh token", () => createAccessToken(reader, { kind: "refresh", expiresAt: secondsFromNow(-1) })],
    ["an access token as refresh token", () => createAccessToken(reader)],
    [
      "a disabled user's refresh token",
      async () => createAccessToken(await createUser("disabled", { disabled: true }), { kind: "refresh", expiresAt: secondsFromNow(3600) }),
    ],
  ];

  for (const [label, secret] of rejectedRefreshTokens) {
    it(`rejects ${label}`, async () => {
      const response = await postForm([
        ["grant_type", "refresh_token"],
        ["refresh_token", await secret()],
      ]);

      await expectRegistryError(response, 401, "UNAUTHORIZED");
    });
  }

  it("rejects an unknown grant_type", async () => {
    const response = await postForm([["grant_type", "client_credentials"]]);

    await expectRegistryError(response, 400, "INVALID_REQUEST");
  });

  it("rejects a missing grant_type", async () => {
    const response = await postForm([["username", reader.name]]);

    await expectRegistryError(response, 400, "INVALID_REQUEST");
  });

  it("rejects a JSON body", async () => {
    const response = await fetchAs(null, "/v2/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ grant_type: "password", username: reader.name, password: reader.password }),
    });

    await expectRegistryError(response, 400, "INVALID_REQUEST");
  });
});
