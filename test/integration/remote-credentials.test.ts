import { createExecutionContext, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { app } from "../../src/app";
import { adminRequest, auditRows, issueMessages, issuePaths, uniqueName } from "./admin-helpers";
import { adminPassword, basicAuthorization, expectRegistryError, origin, registryFetch } from "./helpers";
import {
  createRemoteRepository,
  setUpstreamBehaviour,
  uniqueUpstreamPath,
  upstream,
  upstreamCounts,
  upstreamTokenCount,
} from "./remote-helpers";

const staleWarning = '110 - "Response is stale"';

async function storedCiphertext(key: string): Promise<string | null> {
  const row = await env.DB.prepare("SELECT password_ciphertext FROM remote_repositories WHERE repository_key = ?")
    .bind(key)
    .first<{ password_ciphertext: string | null }>();
  return row?.password_ciphertext ?? null;
}

/** Creates a remote repository with the test upstream's credentials, or with `password` in their place. */
function createWithCredentials(password = upstream.password, fields: Record<string, unknown> = {}): Promise<string> {
  return createRemoteRepository({ username: upstream.username, password, ...fields });
}

/** Sends an admin API request to the Worker's app with `CREDENTIALS_KEY` left out of its environment. */
async function requestWithoutCredentialsKey(method: string, path: string, body: unknown): Promise<Response> {
  const request = new Request(`${origin}${path}`, {
    method,
    headers: { Authorization: basicAuthorization("admin", adminPassword), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const ctx = createExecutionContext();
  const response = await app.fetch(request, { ...env, CREDENTIALS_KEY: undefined }, ctx);
  await waitOnExecutionContext(ctx);
  return response;
}

describe("upstream password storage", () => {
  it("stores the password encrypted", async () => {
    const key = await createWithCredentials();

    const ciphertext = await storedCiphertext(key);

    expect(ciphertext).not.toBeNull();
    expect(ciphertext).not.toContain(upstream.password);
    expect(ciphertext).not.toContain(btoa(upstream.password));
    expect(ciphertext).toMatch(/^v1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
  });

  it("uses a fresh IV for each value", async () => {
    const first = await storedCiphertext(await createWithCredentials());
    const second = await storedCiphertext(await createWithCredentials());

    expect(first).not.toBe(second);
  });

  it("shows passwordSet and never the password", async () => {
    const key = await createWithCredentials();

    const response = await adminRequest("GET", `/api/v1/repositories/${key}`);
    const text = await response.text();

    expect(response.status).toBe(200);
    expect(JSON.parse(text)).toMatchObject({ username: upstream.username, passwordSet: true });
    expect(Object.keys(JSON.parse(text) as object)).not.toContain("password");
    expect(text).not.toContain(upstream.password);
  });

  it("shows passwordSet false without one", async () => {
    const key = await createRemoteRepository({ username: upstream.username });

    const shown = (await (await adminRequest("GET", `/api/v1/repositories/${key}`)).json()) as { passwordSet: boolean };

    expect(shown.passwordSet).toBe(false);
  });

  it("keeps the password out of the audit log", async () => {
    const key = await createWithCredentials();
    await adminRequest("PATCH", `/api/v1/repositories/${key}`, { password: "another-upstream-password" });

    const rows = await auditRows(key);

    expect(rows.map((row) => row.action)).toEqual(["repository.create", "repository.update"]);
    expect(JSON.parse(rows[0]!.detail!)).toMatchObject({ passwordSet: true });
    expect(JSON.parse(rows[1]!.detail!)).toEqual({ changed: ["password"], passwordSet: true });
    for (const row of rows) {
      expect(row.detail).not.toContain(upstream.password);
      expect(row.detail).not.toContain("another-upstream-password");
    }
  });

  it("changes the password on PATCH", async () => {
    const key = await createWithCredentials();
    const before = await storedCiphertext(key);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { password: "another-upstream-password" });

    expect(response.status).toBe(200);
    expect(((await response.json()) as { passwordSet: boolean }).passwordSet).toBe(true);
    const after = await storedCiphertext(key);
    expect(after).not.toBeNull();
    expect(after).not.toBe(before);
  });

  it("clears the password with null", async () => {
    const key = await createWithCredentials();

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { password: null });

    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ username: upstream.username, passwordSet: false });
    expect(await storedCiphertext(key)).toBeNull();
  });

  it("clears the password with the username", async () => {
    const key = await createWithCredentials();

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { username: null });

    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ username: null, passwordSet: false });
    expect(await storedCiphertext(key)).toBeNull();
  });
});

describe("upstream password validation", () => {
  it("rejects a password without username", async () => {
    const key = uniqueName("remote");

    const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "remote", url: upstream.url, password: "secret" });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["password"]);
    expect(issueMessages(error.detail)[0]).toContain("password needs username");
    expect((await adminRequest("GET", `/api/v1/repositories/${key}`)).status).toBe(404);
  });

  it("rejects an empty password", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", {
      key: uniqueName("remote"),
      type: "remote",
      url: upstream.url,
      username: upstream.username,
      password: "",
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["password"]);
  });

  it("rejects a non-string password", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", {
      key: uniqueName("remote"),
      type: "remote",
      url: upstream.url,
      username: upstream.username,
      password: 1234,
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["password"]);
  });

  it("rejects a PATCH password without username", async () => {
    const key = await createRemoteRepository();

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { password: "secret" });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["password"]);
    expect(await storedCiphertext(key)).toBeNull();
  });

  it("rejects a password on a local repository", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", { key: uniqueName("local"), type: "local", password: "secret" });

    await expectRegistryError(response, 400, "INVALID_REQUEST");
  });

  it("rejects a password without CREDENTIALS_KEY", async () => {
    const key = uniqueName("remote");

    const response = await requestWithoutCredentialsKey("POST", "/api/v1/repositories", {
      key,
      type: "remote",
      url: upstream.url,
      username: upstream.username,
      password: upstream.password,
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(error.message).toContain("CREDENTIALS_KEY");
    expect(issuePaths(error.detail)).toEqual(["password"]);
    expect((await adminRequest("GET", `/api/v1/repositories/${key}`)).status).toBe(404);
  });

  it("rejects a PATCH password without CREDENTIALS_KEY", async () => {
    const key = await createRemoteRepository({ username: upstream.username });

    const response = await requestWithoutCredentialsKey("PATCH", `/api/v1/repositories/${key}`, { password: upstream.password });

    await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(await storedCiphertext(key)).toBeNull();
  });

  it("works without CREDENTIALS_KEY otherwise", async () => {
    const key = uniqueName("remote");

    const response = await requestWithoutCredentialsKey("POST", "/api/v1/repositories", { key, type: "remote", url: upstream.url });

    expect(response.status).toBe(201);
    expect(await response.json()).toMatchObject({ key, passwordSet: false });
  });
});

describe("upstream Basic auth", () => {
  it("retries with Basic credentials", async () => {
    const key = await createWithCredentials();
    const path = uniqueUpstreamPath("basic-");

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2 });
  });

  it("fetches blobs with Basic credentials", async () => {
    const key = await createWithCredentials();
    const path = uniqueUpstreamPath("basic-");

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.configDigest}`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.config);
  });

  it("returns 503 for a wrong password", async () => {
    const key = await createWithCredentials("wrong-password");
    const path = uniqueUpstreamPath("basic-");

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    const error = await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(error.message).toContain("returned 401");
    expect(error.message).toContain("check the username and password");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2 });
  });

  it("returns 503 without credentials", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("basic-");

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("does not count a 401 as a failure", async () => {
    const key = await createWithCredentials("wrong-password", { failureThreshold: 1 });
    const path = uniqueUpstreamPath("basic-");

    await (await registryFetch(`/v2/${key}/${path}/manifests/latest`)).arrayBuffer();

    const shown = (await (await adminRequest("GET", `/api/v1/repositories/${key}`)).json()) as { offlineUntil: string | null };
    expect(shown.offlineUntil).toBeNull();
  });
});

describe("upstream Bearer auth with credentials", () => {
  it("gets a token with Basic credentials", async () => {
    const key = await createWithCredentials();
    const path = uniqueUpstreamPath("login-");

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
    expect(await upstreamTokenCount(path)).toBe(1);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2 });
  });

  it("returns 503 when the realm rejects them", async () => {
    const key = await createWithCredentials("wrong-password");
    const path = uniqueUpstreamPath("login-");

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    const error = await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(error.message).toContain("token endpoint");
    expect(error.message).toContain("returned 401");
    expect(await upstreamTokenCount(path)).toBe(1);
  });

  it("asks anonymously without credentials", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("login-");

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(await upstreamTokenCount(path)).toBe(1);
  });

  it("sends no credentials to an http realm elsewhere", async () => {
    const key = await createWithCredentials();
    const path = uniqueUpstreamPath("login-");
    const port = new URL(upstream.url).port;
    await setUpstreamBehaviour(path, { realm: `http://localhost:${port}/token` });

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    const error = await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(error.message).toContain("not https");
    expect(await upstreamTokenCount(path)).toBe(0);
  });
});

describe("undecryptable upstream password", () => {
  it("serves cached tags stale", async () => {
    const key = await createWithCredentials();
    const other = await createWithCredentials();
    const path = uniqueUpstreamPath("basic-");
    await (await registryFetch(`/v2/${key}/${path}/manifests/latest`)).arrayBuffer();
    // A ciphertext moved to another repository's row does not decrypt there.
    await env.DB.prepare("UPDATE remote_repositories SET password_ciphertext = ? WHERE repository_key = ?")
      .bind(await storedCiphertext(other), key)
      .run();
    await env.DB.prepare(
      "UPDATE remote_tags SET checked_at = checked_at - 601 WHERE image_id = (SELECT id FROM images WHERE name = ?) AND tag = 'latest'",
    )
      .bind(`${key}/${path}`)
      .run();

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
    expect(response.headers.get("Warning")).toBe(staleWarning);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2 });
  });

  it("fails a cache miss closed", async () => {
    const key = await createWithCredentials();
    const path = uniqueUpstreamPath("basic-");
    await env.DB.prepare("UPDATE remote_repositories SET password_ciphertext = ? WHERE repository_key = ?")
      .bind("v1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAAAA", key)
      .run();

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    const error = await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(error.message).toContain("cannot be decrypted");
    expect(await upstreamCounts(path)).toEqual({});
  });
});
