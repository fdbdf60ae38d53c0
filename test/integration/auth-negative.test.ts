import { env, exports } from "cloudflare:workers";
import { calculateJwkThumbprint, exportJWK, exportSPKI, importJWK, SignJWT } from "jose";
import { beforeAll, describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { addressKey, failedLoginWindowSeconds, maxFailedLogins } from "../../src/auth/rate-limit";
import {
  basicFor,
  createAccessToken,
  createPermissionTarget,
  createUser,
  createUserWith,
  fetchAs,
  issuer,
  registrySigningKey,
  repositoryAccess,
  requestToken,
  service,
  signToken,
  tokenPath,
  uniqueAddress,
  type TestUser,
  type TokenClaims,
} from "./auth-fixtures";
import { basicAuthorization, expectRegistryError, origin, randomBytes, readBytes, registryFetch, uploadBlob } from "./helpers";
import { pushImage } from "./manifest-helpers";

const plainChallenge = `Bearer realm="${origin}/v2/token",service="${service}"`;

/** Checks a 401 UNAUTHORIZED whose challenge names no scope and no error. */
async function expectUnauthorized(response: Response): Promise<void> {
  await expectRegistryError(response, 401, "UNAUTHORIZED");
  expect(response.headers.get("WWW-Authenticate")).toBe(plainChallenge);
}

function base64url(text: string): string {
  return btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

describe("registry token verification", () => {
  const image = "docker-local/verify/app";
  let user: TestUser;
  let manifestBytes: Uint8Array;

  beforeAll(async () => {
    manifestBytes = (await pushImage(image, "v1")).bytes;
    user = await createUserWith("verify", ["read"], ["verify/**"]);
  });

  /** Claims that the registry accepts for a pull of the image; each case changes one. */
  function validClaims(): TokenClaims {
    return { sub: user.name, access: [repositoryAccess(image, ["pull"])] };
  }

  async function pullWith(token: string): Promise<Response> {
    return fetchAs(`Bearer ${token}`, `/v2/${image}/manifests/v1`);
  }

  it("accepts a token with valid claims", async () => {
    const response = await pullWith(await signToken(await registrySigningKey(), validClaims()));

    expect(response.status).toBe(200);
    expect(await readBytes(response)).toEqual(manifestBytes);
  });

  it("rejects a token signed by another key", async () => {
    const { privateKey } = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;

    await expectUnauthorized(await pullWith(await signToken(privateKey, validClaims())));
  });

  it("rejects a token with the other key's kid", async () => {
    const registryKey = await registrySigningKey();
    const { d: _private, ...publicJwk } = await exportJWK(registryKey);
    const { privateKey } = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ])) as CryptoKeyPair;

    const forged = await signToken(privateKey, validClaims(), { kid: await calculateJwkThumbprint(publicJwk) });

    await expectUnauthorized(await pullWith(forged));
  });

  it("rejects an altered payload", async () => {
    const token = await signToken(await registrySigningKey(), { ...validClaims(), access: [] });
    const [header, , signature] = token.split(".");
    const payload = base64url(JSON.stringify({ ...validClaims(), iss: issuer, aud: service, exp: Math.floor(Date.now() / 1000) + 300 }));

    await expectUnauthorized(await pullWith(`${header}.${payload}.${signature}`));
  });

  it("rejects an expired token", async () => {
    const now = Math.floor(Date.now() / 1000);

    await expectUnauthorized(
      await pullWith(await signToken(await registrySigningKey(), { ...validClaims(), iat: now - 400, nbf: now - 400, exp: now - 1 })),
    );
  });

  it("rejects a token not yet valid", async () => {
    const now = Math.floor(Date.now() / 1000);

    await expectUnauthorized(
      await pullWith(await signToken(await registrySigningKey(), { ...validClaims(), nbf: now + 60, exp: now + 360 })),
    );
  });

  it("rejects another audience", async () => {
    await expectUnauthorized(await pullWith(await signToken(await registrySigningKey(), { ...validClaims(), aud: "other.test" })));
  });

  it("rejects another host's token", async () => {
    const { token } = await requestToken(basicFor(user), [`repository:${image}:pull`]);

    const response = await exports.default.fetch(
      new Request(`http://other.test/v2/${image}/manifests/v1`, { headers: { Authorization: `Bearer ${token}` } }),
    );

    await expectRegistryError(response, 401, "UNAUTHORIZED");
    expect(response.headers.get("WWW-Authenticate")).toBe('Bearer realm="http://other.test/v2/token",service="other.test"');
  });

  it("rejects another issuer", async () => {
    await expectUnauthorized(await pullWith(await signToken(await registrySigningKey(), { ...validClaims(), iss: "other-registry" })));
  });

  for (const claim of ["exp", "nbf", "sub", "iat", "access"] as const) {
    it(`rejects a token without ${claim}`, async () => {
      await expectUnauthorized(await pullWith(await signToken(await registrySigningKey(), { ...validClaims(), [claim]: undefined })));
    });
  }

  it("rejects alg none", async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = { ...validClaims(), iss: issuer, aud: service, iat: now, nbf: now, exp: now + 300 };
    const unsigned = `${base64url(JSON.stringify({ alg: "none", typ: "JWT" }))}.${base64url(JSON.stringify(claims))}.`;

    await expectUnauthorized(await pullWith(unsigned));
  });

  it("rejects HS256 keyed with the public key PEM", async () => {
    const registryKey = await registrySigningKey();
    const { d: _private, ...publicJwk } = await exportJWK(registryKey);
    const pem = await exportSPKI((await importJWK(publicJwk, "ES256", { extractable: true })) as CryptoKey);
    const now = Math.floor(Date.now() / 1000);

    const forged = await new SignJWT({ access: [repositoryAccess(image, ["pull"])] })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuer(issuer)
      .setAudience(service)
      .setSubject(user.name)
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + 300)
      .sign(new TextEncoder().encode(pem));

    await expectUnauthorized(await pullWith(forged));
  });

  it("rejects HS256 keyed with the public JWK", async () => {
    const { d: _private, ...publicJwk } = await exportJWK(await registrySigningKey());
    const now = Math.floor(Date.now() / 1000);

    const forged = await new SignJWT({ ...validClaims(), iss: issuer, aud: service, iat: now, nbf: now, exp: now + 300 })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .sign(new TextEncoder().encode(JSON.stringify(publicJwk)));

    await expectUnauthorized(await pullWith(forged));
  });

  it("rejects a token of a missing user", async () => {
    await expectUnauthorized(await pullWith(await signToken(await registrySigningKey(), { ...validClaims(), sub: "no-such-user" })));
  });

  it("rejects a token of a disabled user", async () => {
    const disabled = await createUserWith("disabled-later", ["read"], ["verify/**"]);
    const { token } = await requestToken(basicFor(disabled), [`repository:${image}:pull`]);
    await env.DB.prepare("UPDATE users SET disabled = 1 WHERE id = ?").bind(disabled.id).run();

    await expectUnauthorized(await pullWith(token));
  });

  it("rejects an unknown scheme", async () => {
    const response = await fetchAs(`Digest username="${user.name}"`, `/v2/${image}/manifests/v1`);

    await expectUnauthorized(response);
  });
});

describe("names that leave a pattern", () => {
  let user: TestUser;
  let secretBytes: Uint8Array;

  beforeAll(async () => {
    await pushImage("docker-local/team/app", "v1");
    secretBytes = (await pushImage("docker-local/team/secret/app", "v1")).bytes;
    user = await createUser("escaper");
    await createPermissionTarget("team", {
      includes: ["team/**"],
      excludes: ["team/secret/**"],
      grants: [{ to: { user }, actions: ["read"] }],
    });
  });

  // The URL parser resolves `.`, `..` and their encodings before the Worker
  // receives the path, so those names arrive as team/secret/app and are denied.
  const cases: [string, 400 | 403][] = [
    ["docker-local/Team/secret/app", 400],
    ["docker-local/team/SECRET/app", 400],
    ["docker-local/team/secret%2Fapp", 400],
    ["docker-local/team%2Fsecret/app", 400],
    ["docker-local/team%2fsecret%2fapp", 400],
    ["docker-local/team/%73ecret/app", 400],
    ["docker-local/team//secret/app", 400],
    ["docker-local/team/secret//app", 400],
    ["docker-local/team/secret/app/", 400],
    ["docker-local/team/app/../secret/app", 403],
    ["docker-local/team/app/%2e%2e/secret/app", 403],
    ["docker-local/team/./secret/app", 403],
    ["docker-local/team/secret/app", 403],
  ];

  for (const [name, status] of cases) {
    for (const suffix of ["manifests/v1", "tags/list"]) {
      it(`rejects ${name}/${suffix}`, async () => {
        const response = await fetchAs(basicFor(user), `/v2/${name}/${suffix}`);

        const body = await readBytes(response.clone());
        await expectRegistryError(response, status, status === 400 ? "NAME_INVALID" : "DENIED");
        expect(new TextDecoder().decode(body)).not.toContain("schemaVersion");
        expect(body).not.toEqual(secretBytes);
      });
    }
  }

  it("allows the included image", async () => {
    const response = await fetchAs(basicFor(user), "/v2/docker-local/team/app/manifests/v1");

    expect(response.status).toBe(200);
  });
});

describe("blobs across permission boundaries", () => {
  const readableImage = "docker-local/boundary/app";
  const readableSource = "docker-local/boundary/source";
  const secretImage = "docker-local/boundary-secret/app";
  let user: TestUser;
  let secretBlob: { digest: string; bytes: Uint8Array };

  beforeAll(async () => {
    await pushImage(readableImage, "v1");
    await pushImage(secretImage, "v1");
    const bytes = randomBytes(300);
    secretBlob = { digest: await uploadBlob(secretImage, bytes), bytes };
    user = await createUserWith("boundary", ["read", "deploy"], ["boundary/**"]);
  });

  async function adminHeadBlob(name: string, digest: string): Promise<number> {
    return (await registryFetch(`/v2/${name}/blobs/${digest}`, { method: "HEAD" })).status;
  }

  it("hides a blob through a readable image", async () => {
    const response = await fetchAs(basicFor(user), `/v2/${readableImage}/blobs/${secretBlob.digest}`);

    const body = await readBytes(response.clone());
    await expectRegistryError(response, 404, "BLOB_UNKNOWN");
    expect(body).not.toEqual(secretBlob.bytes);
  });

  it("hides a blob from HEAD through a readable image", async () => {
    const response = await fetchAs(basicFor(user), `/v2/${readableImage}/blobs/${secretBlob.digest}`, { method: "HEAD" });

    expect(response.status).toBe(404);
    expect(response.headers.get("Docker-Content-Digest")).toBeNull();
  });

  it("denies the blob in its own image", async () => {
    const response = await fetchAs(basicFor(user), `/v2/${secretImage}/blobs/${secretBlob.digest}`);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("denies a range of the blob", async () => {
    const response = await fetchAs(basicFor(user), `/v2/${secretImage}/blobs/${secretBlob.digest}`, { headers: { Range: "bytes=0-9" } });

    await expectRegistryError(response, 403, "DENIED");
  });

  it("opens an upload instead of mounting", async () => {
    const response = await fetchAs(basicFor(user), `/v2/${readableImage}/blobs/uploads/?mount=${secretBlob.digest}&from=${secretImage}`, {
      method: "POST",
    });

    expect(response.status).toBe(202);
    expect(response.headers.get("Location")).toMatch(new RegExp(`^/v2/${readableImage}/blobs/uploads/[0-9a-f-]{36}$`));
    expect(response.headers.get("Docker-Content-Digest")).toBeNull();
    expect(await adminHeadBlob(readableImage, secretBlob.digest)).toBe(404);
  });

  it("opens an upload when the token lacks pull on the source", async () => {
    const sourceDigest = await uploadBlob(readableSource, randomBytes(40));
    const { token } = await requestToken(basicFor(user), [`repository:${readableImage}:pull,push`]);

    const response = await fetchAs(`Bearer ${token}`, `/v2/${readableImage}/blobs/uploads/?mount=${sourceDigest}&from=${readableSource}`, {
      method: "POST",
    });

    expect(response.status).toBe(202);
    expect(await adminHeadBlob(readableImage, sourceDigest)).toBe(404);
  });

  it("mounts from a readable image", async () => {
    const sourceDigest = await uploadBlob(readableSource, randomBytes(40));

    const response = await fetchAs(basicFor(user), `/v2/${readableImage}/blobs/uploads/?mount=${sourceDigest}&from=${readableSource}`, {
      method: "POST",
    });

    expect(response.status).toBe(201);
    expect(response.headers.get("Docker-Content-Digest")).toBe(sourceDigest);
    expect(await adminHeadBlob(readableImage, sourceDigest)).toBe(200);
  });
});

describe("failed-login rate limit", () => {
  /** Sends GET /v2/ with a user name and password from a client address. */
  function login(name: string, password: string, address: string): Promise<Response> {
    return fetchAs(basicAuthorization(name, password), "/v2/", {}, address);
  }

  async function failLogins(names: () => string, addresses: () => string): Promise<void> {
    for (let attempt = 0; attempt < maxFailedLogins; attempt += 1) {
      const response = await login(names(), "wrong-password", addresses());
      expect(response.status, `failed login ${attempt + 1}`).toBe(401);
    }
  }

  async function expectTooManyRequests(response: Response): Promise<void> {
    await expectRegistryError(response, 429, "TOOMANYREQUESTS");
    const retryAfter = Number(response.headers.get("Retry-After"));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(failedLoginWindowSeconds);
  }

  it("locks a user after 10 failures", async () => {
    const user = await createUser("locked");

    await failLogins(() => user.name, uniqueAddress);

    await expectTooManyRequests(await login(user.name, user.password, uniqueAddress()));
  });

  it("locks an address after 10 failures", async () => {
    const address = uniqueAddress();
    const user = await createUser("same-address");

    await failLogins(
      () => `unknown-${crypto.randomUUID()}`,
      () => address,
    );

    await expectTooManyRequests(await login(user.name, user.password, address));
    expect((await login(user.name, user.password, uniqueAddress())).status).toBe(200);
  });

  it("limits concurrent guesses", async () => {
    const user = await createUser("concurrent");

    const responses = await Promise.all(
      Array.from({ length: 4 * maxFailedLogins }, (_, attempt) => login(user.name, `wrong-password-${attempt}`, uniqueAddress())),
    );

    const statuses = responses.map((response) => response.status);
    expect(statuses.filter((status) => status === 401)).toHaveLength(maxFailedLogins);
    expect(statuses.filter((status) => status === 429)).toHaveLength(3 * maxFailedLogins);
    await expectTooManyRequests(await login(user.name, user.password, uniqueAddress()));
  });

  it("locks an IPv6 /64 after 10 failures", async () => {
    const user = await createUser("ipv6");
    let host = 0;

    await failLogins(
      () => `unknown-${crypto.randomUUID()}`,
      () => `2001:db8:aa:bb::${(host += 1).toString(16)}`,
    );

    await expectTooManyRequests(await login(user.name, user.password, "2001:0db8:00aa:00bb:ffff:ffff:ffff:ffff"));
    expect((await login(user.name, user.password, "2001:db8:aa:bc::1")).status).toBe(200);
  });

  it("lets concurrent logins through", async () => {
    const user = await createUser("burst");
    const address = uniqueAddress();

    const responses = await Promise.all(Array.from({ length: 3 * maxFailedLogins }, () => login(user.name, user.password, address)));

    expect(responses.map((response) => response.status)).toEqual(Array(3 * maxFailedLogins).fill(200));
  });

  it("allows 9 failures", async () => {
    const user = await createUser("nine");
    for (let attempt = 1; attempt < maxFailedLogins; attempt += 1) await login(user.name, "wrong-password", uniqueAddress());

    const response = await login(user.name, user.password, uniqueAddress());

    expect(response.status).toBe(200);
  });

  it("locks the token endpoint too", async () => {
    const user = await createUser("locked-token");
    await failLogins(() => user.name, uniqueAddress);

    const viaGet = await fetchAs(basicFor(user), tokenPath([]), {}, uniqueAddress());
    const viaPost = await fetchAs(
      null,
      "/v2/token",
      {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ grant_type: "password", username: user.name, password: user.password }),
      },
      uniqueAddress(),
    );

    await expectTooManyRequests(viaGet);
    await expectTooManyRequests(viaPost);
  });

  it("locks access token logins too", async () => {
    const user = await createUser("locked-access-token");
    const secret = await createAccessToken(user);
    await failLogins(() => user.name, uniqueAddress);

    await expectTooManyRequests(await login(user.name, secret, uniqueAddress()));
  });

  it("counts token endpoint failures", async () => {
    const user = await createUser("token-failures");
    for (let attempt = 0; attempt < maxFailedLogins; attempt += 1) {
      const response = await fetchAs(
        null,
        "/v2/token",
        {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ grant_type: "password", username: user.name, password: "wrong-password" }),
        },
        uniqueAddress(),
      );
      expect(response.status).toBe(401);
    }

    await expectTooManyRequests(await login(user.name, user.password, uniqueAddress()));
  });

  it("unlocks when the window ends", async () => {
    const user = await createUser("unlocked");
    await failLogins(() => user.name, uniqueAddress);
    await expectTooManyRequests(await login(user.name, user.password, uniqueAddress()));

    const windowStart = Date.now() - failedLoginWindowSeconds * 1000 - 1000;
    await env.DB.prepare("UPDATE login_failures SET window_start = ? WHERE key = ?").bind(windowStart, `user:${user.name}`).run();

    expect((await login(user.name, user.password, uniqueAddress())).status).toBe(200);
  });
});

describe("client address keys", () => {
  const cases: [string, string][] = [
    ["192.0.2.1", "192.0.2.1"],
    ["2001:db8:aa:bb::1", "2001:db8:aa:bb::/64"],
    ["2001:0DB8:00AA:00BB:1:2:3:4", "2001:db8:aa:bb::/64"],
    ["2001:db8::1", "2001:db8:0:0::/64"],
    ["::1", "0:0:0:0::/64"],
    ["::ffff:192.0.2.1", "192.0.2.1"],
    ["unknown", "unknown"],
    ["2001:db8::1::2", "2001:db8::1::2"],
  ];

  for (const [address, key] of cases) {
    it(`keys ${address} as ${key}`, () => {
      expect(addressKey(address)).toBe(key);
    });
  }
});

describe("audit of failed logins", () => {
  interface AuditRow {
    actor: string;
    action: string;
    target: string;
    client_address: string;
    detail: string | null;
  }

  async function auditRows(target: string): Promise<AuditRow[]> {
    const { results } = await env.DB.prepare(
      "SELECT actor, action, target, client_address, detail FROM audit_log WHERE target = ? ORDER BY id",
    )
      .bind(target)
      .all<AuditRow>();
    return results;
  }

  it("records a wrong password", async () => {
    const user = await createUser("audited");
    const address = uniqueAddress();

    await fetchAs(basicAuthorization(user.name, "wrong-secret-password"), "/v2/", {}, address);

    const rows = await auditRows(user.name);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.action).toBe("login.failed");
    expect(rows[0]!.actor).toBe(user.name);
    expect(rows[0]!.client_address).toBe(address);
    expect(rows[0]!.detail ?? "").not.toContain("wrong-secret-password");
  });

  it("records an unknown user", async () => {
    const name = `unknown-${crypto.randomUUID()}`;

    await fetchAs(basicAuthorization(name, "whatever"), "/v2/", {}, uniqueAddress());

    expect((await auditRows(name)).map((row) => row.action)).toEqual(["login.failed"]);
  });

  it("records a revoked access token", async () => {
    const user = await createUser("audited-token");
    const secret = await createAccessToken(user, { revokedAt: new Date().toISOString() });

    await fetchAs(basicAuthorization(user.name, secret), "/v2/", {}, uniqueAddress());

    const rows = await auditRows(user.name);
    expect(rows.map((row) => row.action)).toEqual(["login.failed"]);
    expect(rows[0]!.detail ?? "").not.toContain(secret);
  });

  it("records no failure for a good login", async () => {
    const user = await createUser("audited-good");

    expect((await fetchAs(basicFor(user), "/v2/", {}, uniqueAddress())).status).toBe(200);

    expect(await auditRows(user.name)).toEqual([]);
  });
});

describe("disabled users", () => {
  it("rejects the right password", async () => {
    const user = await createUser("disabled", { disabled: true });

    await expectUnauthorized(await fetchAs(basicFor(user), "/v2/", {}, uniqueAddress()));
  });

  it("rejects their access token", async () => {
    const user = await createUser("disabled-token", { disabled: true });
    const secret = await createAccessToken(user);

    await expectUnauthorized(await fetchAs(`Bearer ${secret}`, "/v2/"));
  });

  it("rejects another user's access token", async () => {
    const owner = await createUser("token-owner");
    const other = await createUser("token-borrower");
    const secret = await createAccessToken(owner);

    await expectUnauthorized(await fetchAs(basicAuthorization(other.name, secret), "/v2/", {}, uniqueAddress()));
  });
});

describe("missing signing key", () => {
  /** Returns the Worker's environment with the TOKEN_SIGNING_KEY secret unset. */
  function unsignedEnv() {
    return { ...env, TOKEN_SIGNING_KEY: undefined };
  }

  it("rejects tokens with 503", async () => {
    const response = await app.fetch(new Request(`${origin}${tokenPath([])}`), unsignedEnv());

    const error = await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(error.message).toContain("TOKEN_SIGNING_KEY");
  });

  it("rejects bearer tokens with 503", async () => {
    const { token } = await requestToken(null, []);

    const response = await app.fetch(new Request(`${origin}/v2/`, { headers: { Authorization: `Bearer ${token}` } }), unsignedEnv());

    await expectRegistryError(response, 503, "UNAVAILABLE");
  });
});
