import { env } from "cloudflare:workers";
import { decodeJwt, generateKeyPair, SignJWT, UnsecuredJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { adminRequest, createGroup, createTarget, createUser, type TestUser } from "./admin-helpers";
import { basicAuthorization, expectRegistryError, registryFetch, uniqueImage } from "./helpers";
import { pushImage } from "./manifest-helpers";
import { ciClaims, configureIssuer, mintIdToken, testAudience, testIssuer } from "./oidc-helpers";

let addressCounter = 0;

/**
 * Returns a client address that no other request of this file uses. Failed
 * exchanges count against the client address, so each test sends its own.
 */
function uniqueAddress(): string {
  addressCounter += 1;
  return `192.0.2.${addressCounter}`;
}

/** `GET /v2/token` with Basic `<user>:<ID token>`, as `docker login -u oidc -p "$ID_TOKEN"` sends it. */
function getToken(idToken: string, query = "service=registry.test", user = "oidc", address = uniqueAddress()): Promise<Response> {
  return registryFetch(`/v2/token?${query}`, {
    headers: { Authorization: basicAuthorization(user, idToken), "CF-Connecting-IP": address },
  });
}

/** `POST /v2/token` with the OAuth2 password grant and the ID token as the password. */
function postToken(idToken: string, fields: Record<string, string> = {}): Promise<Response> {
  const form = new URLSearchParams({ grant_type: "password", username: "oidc", password: idToken, service: "registry.test", ...fields });
  return registryFetch("/v2/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", "CF-Connecting-IP": uniqueAddress() },
    body: form,
  });
}

/** Exchanges an ID token at `GET /v2/token`, fails the test unless it returns 200, and returns the registry token. */
async function exchange(idToken: string, query?: string): Promise<string> {
  const response = await getToken(idToken, query);
  expect(response.status, `exchanging an ID token: ${await response.clone().text()}`).toBe(200);
  return ((await response.json()) as { token: string }).token;
}

/** Expects a 401 whose message names the reason. */
async function expectRejected(response: Response, reason: string | RegExp): Promise<void> {
  const error = await expectRegistryError(response, 401, "UNAUTHORIZED");
  expect(error.message).toMatch(reason);
}

let ciUser: TestUser;
let disabledUser: TestUser;
let readers: string;
let administrators: string;
let removedGroup: string;
let image: string;

beforeAll(async () => {
  ciUser = await createUser("ci");
  disabledUser = await createUser("ci-disabled");
  readers = await createGroup("ci-readers");
  administrators = await createGroup("ci-admins", { admin: true });
  removedGroup = await createGroup("ci-removed");
  await createTarget({ repositories: ["docker-local"], users: { [ciUser.name]: ["read", "deploy"] }, groups: { [readers]: ["read"] } });

  await configureIssuer({
    name: "test",
    issuer: testIssuer.issuer,
    audience: testAudience,
    jwksUrl: testIssuer.jwksUrl,
    rules: [
      { claims: { repository: "acme/app", ref: "refs/heads/main" }, user: ciUser.name },
      { claims: { repository: "acme/readonly", ref: "refs/heads/*" }, group: readers },
      { claims: { repository: "acme/admin" }, group: administrators },
      { claims: { repository: "acme/disabled" }, user: disabledUser.name },
      { claims: { repository: "acme/removed" }, group: removedGroup },
      { claims: { repository: "acme/app", ref: "refs/tags/*" }, group: readers },
    ],
  });
  await configureIssuer({
    name: "other",
    issuer: `${testIssuer.issuer}/other`,
    audience: testAudience,
    jwksUrl: testIssuer.otherJwksUrl,
    rules: [{ claims: { repository: "acme/app" }, user: ciUser.name }],
  });
  // Nothing listens on port 1 of the loopback address, so fetching these keys fails.
  await configureIssuer({
    name: "offline",
    issuer: `${testIssuer.issuer}/offline`,
    audience: testAudience,
    jwksUrl: "http://127.0.0.1:1/jwks.json",
    rules: [{ claims: { repository: "acme/app" }, user: ciUser.name }],
  });

  expect((await adminRequest("PATCH", `/api/v1/users/${disabledUser.name}`, { disabled: true })).status).toBe(200);
  expect((await adminRequest("DELETE", `/api/v1/groups/${removedGroup}`)).status).toBe(204);

  image = uniqueImage("oidc");
  await pushImage(image, "v1");
});

describe("OIDC exchange to a user", () => {
  it("issues a token for the user", async () => {
    const token = await exchange(await mintIdToken(), `service=registry.test&scope=repository:${image}:pull`);

    const claims = decodeJwt(token);
    expect(claims.sub).toBe(ciUser.name);
    expect(claims.access).toEqual([{ type: "repository", name: image, actions: ["pull"] }]);
    expect(claims).not.toHaveProperty("oidc_group");
  });

  it("pulls with the registry token", async () => {
    const token = await exchange(await mintIdToken(), `service=registry.test&scope=repository:${image}:pull`);

    const response = await registryFetch(`/v2/${image}/manifests/v1`, { headers: { Authorization: `Bearer ${token}` } });

    expect(response.status).toBe(200);
  });

  it("pushes with the user's permission", async () => {
    const token = await exchange(await mintIdToken(), `service=registry.test&scope=repository:${image}:pull,push`);

    const response = await registryFetch(`/v2/${image}/blobs/uploads/`, { method: "POST", headers: { Authorization: `Bearer ${token}` } });

    expect(response.status).toBe(202);
  });

  it("accepts ES256", async () => {
    const token = await exchange(await mintIdToken({}, { alg: "ES256" }));

    expect(decodeJwt(token).sub).toBe(ciUser.name);
  });

  it("accepts the POST password grant", async () => {
    const response = await postToken(await mintIdToken());

    expect(response.status).toBe(200);
    const { token } = (await response.json()) as { token: string };
    expect(decodeJwt(token).sub).toBe(ciUser.name);
  });

  it("ignores the user name", async () => {
    const response = await getToken(await mintIdToken(), "service=registry.test", "admin");

    expect(response.status).toBe(200);
    const { token } = (await response.json()) as { token: string };
    expect(decodeJwt(token).sub).toBe(ciUser.name);
  });

  it("works as a Basic password", async () => {
    const response = await registryFetch("/v2/", {
      headers: { Authorization: basicAuthorization("oidc", await mintIdToken()), "CF-Connecting-IP": uniqueAddress() },
    });

    expect(response.status).toBe(200);
  });

  it("gets no refresh token", async () => {
    const response = await postToken(await mintIdToken(), { access_type: "offline" });

    expect(response.status).toBe(200);
    expect(await response.json()).not.toHaveProperty("refresh_token");
  });

  it("cannot create an access token", async () => {
    const response = await adminRequest("POST", "/api/v1/tokens", { name: "from-ci" }, basicAuthorization("oidc", await mintIdToken()));

    await expectRegistryError(response, 403, "DENIED");
  });

  it("rejects a disabled user", async () => {
    const response = await getToken(await mintIdToken({ repository: "acme/disabled" }));

    await expectRejected(response, /user '.*' of the matching rule does not exist or is disabled/);
  });
});

describe("OIDC exchange to a group", () => {
  it("names the principal after sub", async () => {
    const idToken = await mintIdToken({ repository: "acme/readonly", sub: "repo:acme/readonly:ref:refs/heads/dev", ref: "refs/heads/dev" });

    const claims = decodeJwt(await exchange(idToken));

    expect(claims.sub).toBe("oidc:repo:acme/readonly:ref:refs/heads/dev");
    expect(claims.oidc_group).toBe(readers);
  });

  it("pulls with the group's permission", async () => {
    const idToken = await mintIdToken({ repository: "acme/readonly" });
    const token = await exchange(idToken, `service=registry.test&scope=repository:${image}:pull,push`);

    expect(decodeJwt(token).access).toEqual([{ type: "repository", name: image, actions: ["pull"] }]);
    const pulled = await registryFetch(`/v2/${image}/manifests/v1`, { headers: { Authorization: `Bearer ${token}` } });
    expect(pulled.status).toBe(200);
  });

  it("cannot push without the permission", async () => {
    const response = await registryFetch(`/v2/${image}/blobs/uploads/`, {
      method: "POST",
      headers: {
        Authorization: basicAuthorization("oidc", await mintIdToken({ repository: "acme/readonly" })),
        "CF-Connecting-IP": uniqueAddress(),
      },
    });

    await expectRegistryError(response, 403, "DENIED");
  });

  it("is no administrator", async () => {
    const authorization = basicAuthorization("oidc", await mintIdToken({ repository: "acme/readonly" }));

    const response = await adminRequest("GET", "/api/v1/users", undefined, authorization);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("is administrator through an admin group", async () => {
    const authorization = basicAuthorization("oidc", await mintIdToken({ repository: "acme/admin" }));

    const response = await adminRequest("GET", "/api/v1/users", undefined, authorization);

    expect(response.status).toBe(200);
  });

  it("owns no access tokens", async () => {
    const authorization = basicAuthorization("oidc", await mintIdToken({ repository: "acme/readonly" }));

    const listed = await adminRequest("GET", "/api/v1/tokens", undefined, authorization);
    const created = await adminRequest("POST", "/api/v1/tokens", { name: "from-ci" }, authorization);

    expect(listed.status).toBe(200);
    expect(await listed.json()).toEqual({ tokens: [] });
    await expectRegistryError(created, 403, "DENIED");
  });

  it("matches a prefix rule", async () => {
    const token = await exchange(await mintIdToken({ ref: "refs/tags/v1.2.3" }));

    expect(decodeJwt(token).oidc_group).toBe(readers);
  });

  it("rejects a removed group", async () => {
    const response = await getToken(await mintIdToken({ repository: "acme/removed" }));

    await expectRejected(response, /group '.*' of the matching rule does not exist/);
  });

  it("rejects tokens of a deleted group", async () => {
    const group = await createGroup("ci-short-lived");
    await configureIssuer({
      name: "short-lived",
      issuer: `${testIssuer.issuer}/short-lived`,
      audience: testAudience,
      jwksUrl: testIssuer.jwksUrl,
      rules: [{ claims: { repository: "acme/app" }, group }],
    });
    const token = await exchange(await mintIdToken({ iss: `${testIssuer.issuer}/short-lived` }));
    expect((await registryFetch("/v2/", { headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);

    expect((await adminRequest("DELETE", `/api/v1/groups/${group}`)).status).toBe(204);

    await expectRegistryError(await registryFetch("/v2/", { headers: { Authorization: `Bearer ${token}` } }), 401, "UNAUTHORIZED");
  });
});

describe("OIDC exchange rejection", () => {
  it("rejects a wrong audience", async () => {
    const response = await getToken(await mintIdToken({ aud: "someone-else" }));

    await expectRejected(response, /'aud' claim does not match/);
  });

  it("rejects a missing audience", async () => {
    const response = await getToken(await mintIdToken({ aud: undefined }));

    await expectRejected(response, /no 'aud' claim/);
  });

  it("rejects a token for another issuer", async () => {
    // Signed with the test issuer's key but claiming the issuer whose key set does not contain it.
    const response = await getToken(await mintIdToken({ iss: `${testIssuer.issuer}/other` }));

    await expectRejected(response, /signature does not verify/);
  });

  it("rejects an unconfigured issuer", async () => {
    const response = await getToken(await mintIdToken({ iss: "https://token.actions.githubusercontent.com" }));

    await expectRejected(response, /invalid user name or password/);
  });

  it("rejects an issuer with a trailing slash", async () => {
    const response = await getToken(await mintIdToken({ iss: `${testIssuer.issuer}/` }));

    await expectRejected(response, /invalid user name or password/);
  });

  it("rejects an expired token", async () => {
    const response = await getToken(await mintIdToken({}, { expiresIn: -120, notBefore: -600 }));

    await expectRejected(response, /expired/);
  });

  it("rejects a token not valid yet", async () => {
    const response = await getToken(await mintIdToken({}, { notBefore: 120, expiresIn: 600 }));

    await expectRejected(response, /'nbf' claim is in the future/);
  });

  it("rejects a token without exp", async () => {
    const response = await getToken(await mintIdToken({ exp: undefined }));

    await expectRejected(response, /no 'exp' claim/);
  });

  it("rejects a token without sub", async () => {
    const response = await getToken(await mintIdToken({ sub: undefined }));

    await expectRejected(response, /no 'sub' claim/);
  });

  it("rejects a numeric sub", async () => {
    const response = await getToken(await mintIdToken({ sub: 42 as unknown as string }));

    await expectRejected(response, /'sub' claim must be a non-empty string/);
  });

  it("rejects another key", async () => {
    const { privateKey } = await generateKeyPair("RS256");

    const response = await getToken(await mintIdToken({}, { key: privateKey }));

    await expectRejected(response, /signature does not verify/);
  });

  it("rejects alg none", async () => {
    const idToken = new UnsecuredJWT({ ...ciClaims, aud: testAudience, exp: Math.floor(Date.now() / 1000) + 300 })
      .setIssuer(testIssuer.issuer)
      .encode();

    const response = await getToken(idToken);

    await expectRejected(response, /must be signed with RS256 or ES256/);
  });

  it("rejects HS256", async () => {
    const idToken = await new SignJWT({ ...ciClaims, aud: testAudience })
      .setProtectedHeader({ alg: "HS256", kid: "test-rs256" })
      .setIssuer(testIssuer.issuer)
      .setExpirationTime("5m")
      .sign(new TextEncoder().encode(testIssuer.keys.rs256.n));

    const response = await getToken(idToken);

    await expectRejected(response, /must be signed with RS256 or ES256/);
  });

  it("rejects a token with no matching rule", async () => {
    const response = await getToken(await mintIdToken({ repository: "evil/app" }));

    await expectRejected(response, /no rule of issuer 'test' matches/);
  });

  it("rejects a partial rule match", async () => {
    const response = await getToken(await mintIdToken({ ref: "refs/heads/feature" }));

    await expectRejected(response, /no rule of issuer 'test' matches/);
  });

  it("rejects a claim that is an array", async () => {
    const response = await getToken(await mintIdToken({ repository: ["acme/app"] }));

    await expectRejected(response, /no rule of issuer 'test' matches/);
  });

  it("rejects a tampered payload", async () => {
    const [header, , signature] = (await mintIdToken({ repository: "evil/app" })).split(".");
    const [, payload] = (await mintIdToken()).split(".");

    const response = await getToken(`${header}.${payload}.${signature}`);

    await expectRejected(response, /signature does not verify/);
  });

  it("returns 503 when the key set is unreachable", async () => {
    const response = await getToken(await mintIdToken({ iss: `${testIssuer.issuer}/offline` }));

    await expectRegistryError(response, 503, "UNAVAILABLE");
  });
});

describe("OIDC failed logins", () => {
  it("audits a failed exchange", async () => {
    const address = uniqueAddress();

    await getToken(await mintIdToken({ aud: "audit-me" }), "service=registry.test", "ci-bot", address);

    const row = await env.DB.prepare("SELECT actor, action, target, detail FROM audit_log WHERE client_address = ? ORDER BY id DESC")
      .bind(address)
      .first<{ actor: string; action: string; target: string; detail: string }>();
    expect(row).not.toBeNull();
    expect(row!.action).toBe("login.failed");
    expect(row!.actor).toBe("ci-bot");
    expect(row!.target).toBe("test");
    expect(JSON.parse(row!.detail)).toMatchObject({ via: "oidc", reason: expect.stringContaining("'aud'") });
  });

  it("never audits the ID token", async () => {
    const address = uniqueAddress();
    const idToken = await mintIdToken({ aud: "secret-check" });

    await getToken(idToken, "service=registry.test", "oidc", address);

    const { results } = await env.DB.prepare("SELECT * FROM audit_log WHERE client_address = ?").bind(address).all();
    expect(results).toHaveLength(1);
    expect(JSON.stringify(results)).not.toContain(idToken.split(".")[2]);
  });

  it("counts failures against the address", async () => {
    const address = uniqueAddress();
    const idToken = await mintIdToken({ aud: "wrong" });
    for (let attempt = 1; attempt <= 10; attempt += 1) {
      expect((await getToken(idToken, "service=registry.test", "oidc", address)).status, `attempt ${attempt}`).toBe(401);
    }

    const blocked = await getToken(await mintIdToken(), "service=registry.test", "oidc", address);

    await expectRegistryError(blocked, 429, "TOOMANYREQUESTS");
  });

  it("ignores unreachable key sets", async () => {
    const address = uniqueAddress();
    const idToken = await mintIdToken({ iss: `${testIssuer.issuer}/offline` });
    for (let attempt = 1; attempt <= 11; attempt += 1) {
      expect((await getToken(idToken, "service=registry.test", "oidc", address)).status, `attempt ${attempt}`).toBe(503);
    }

    const response = await getToken(await mintIdToken(), "service=registry.test", "oidc", address);

    expect(response.status).toBe(200);
  });

  it("counts no failures against the user name", async () => {
    const address = uniqueAddress();
    const idToken = await mintIdToken({ aud: "wrong" });
    for (let attempt = 1; attempt <= 10; attempt += 1) {
      await getToken(idToken, "service=registry.test", ciUser.name, address);
    }

    const response = await getToken(await mintIdToken(), "service=registry.test", ciUser.name);

    expect(response.status).toBe(200);
  });
});
