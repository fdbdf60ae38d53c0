import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { adminRequest, createTarget, createUser } from "./admin-helpers";
import { expectRegistryError, registryFetch } from "./helpers";
import { createRemoteRepository, setUpstreamBehaviour, uniqueUpstreamPath, upstream, upstreamCounts } from "./remote-helpers";

const staleWarning = '110 - "Response is stale"';

interface FailureState {
  consecutive_failures: number;
  offline_until: number | null;
}

async function failureState(key: string): Promise<FailureState> {
  const row = await env.DB.prepare("SELECT consecutive_failures, offline_until FROM remote_repositories WHERE repository_key = ?")
    .bind(key)
    .first<FailureState>();
  expect(row).not.toBeNull();
  return row!;
}

async function offlineUntilShown(key: string): Promise<string | null> {
  const response = await adminRequest("GET", `/api/v1/repositories/${key}`);
  expect(response.status).toBe(200);
  return ((await response.json()) as { offlineUntil: string | null }).offlineUntil;
}

/** Sends GET for the manifest and returns its status after reading the body. */
async function pullStatus(key: string, path: string, reference = "latest"): Promise<number> {
  const response = await registryFetch(`/v2/${key}/${path}/manifests/${reference}`);
  await response.arrayBuffer();
  return response.status;
}

/** Moves the recorded upstream check of the cached tag `latest` past tagCacheSeconds. */
async function expireTagCheck(key: string, path: string): Promise<void> {
  const result = await env.DB.prepare(
    "UPDATE remote_tags SET checked_at = checked_at - 601 WHERE tag = 'latest' AND image_id = (SELECT id FROM images WHERE name = ?)",
  )
    .bind(`${key}/${path}`)
    .run();
  expect(result.meta.changes).toBe(1);
}

/** Ends the automatic offline period of the repository, as if offlineSeconds had passed. */
async function endOfflinePeriod(key: string): Promise<void> {
  await env.DB.prepare("UPDATE remote_repositories SET offline_until = unixepoch() - 1 WHERE repository_key = ?").bind(key).run();
}

describe("automatic offline", () => {
  it("starts after failureThreshold 5xx", async () => {
    const key = await createRemoteRepository({ failureThreshold: 2, offlineSeconds: 300 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });
    const before = Math.floor(Date.now() / 1000);

    const first = await pullStatus(key, path);
    const stateAfterFirst = await failureState(key);
    const second = await pullStatus(key, path);
    const third = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(first).toBe(503);
    expect(stateAfterFirst).toEqual({ consecutive_failures: 1, offline_until: null });
    expect(second).toBe(503);
    await expectRegistryError(third, 404, "MANIFEST_UNKNOWN");
    expect((await failureState(key)).offline_until).toBeGreaterThanOrEqual(before + 300);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2 });
  });

  it("starts after connection failures", async () => {
    const key = await createRemoteRepository({ failureThreshold: 2 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { down: true });

    expect(await pullStatus(key, path)).toBe(503);
    expect(await pullStatus(key, path)).toBe(503);

    expect(await offlineUntilShown(key)).not.toBeNull();
  });

  it("counts a 429 as a failure", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 429, retryAfter: "1" });

    expect(await pullStatus(key, path)).toBe(503);

    expect((await failureState(key)).consecutive_failures).toBe(1);
    expect(await offlineUntilShown(key)).not.toBeNull();
  });

  it("does not count a 404", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1, negativeCacheSeconds: 0 });
    const path = uniqueUpstreamPath();

    expect(await pullStatus(key, path, "missing")).toBe(404);
    expect(await pullStatus(key, path, "missing")).toBe(404);

    expect(await failureState(key)).toEqual({ consecutive_failures: 0, offline_until: null });
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/missing`]: 2 });
  });

  it("shows offlineUntil as an ISO time", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1, offlineSeconds: 600 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 502 });
    await pullStatus(key, path);

    const shown = await offlineUntilShown(key);

    expect(shown).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(Date.parse(shown!)).toBe((await failureState(key)).offline_until! * 1000);
  });

  it("serves a cached tag stale while offline", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1 });
    const path = uniqueUpstreamPath();
    expect(await pullStatus(key, path)).toBe(200);
    await setUpstreamBehaviour(path, { status: 503 });
    await expireTagCheck(key, path);

    const failed = await registryFetch(`/v2/${key}/${path}/manifests/latest`);
    await failed.arrayBuffer();
    const offline = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(failed.status).toBe(200);
    expect(failed.headers.get("Warning")).toBe(staleWarning);
    expect(offline.status).toBe(200);
    expect(offline.headers.get("Warning")).toBe(staleWarning);
    expect(await offline.text()).toBe(upstream.manifest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1, [`HEAD ${path}/manifests/latest`]: 1 });
  });

  it("serves cached blobs and misses none upstream while offline", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1 });
    const path = uniqueUpstreamPath();
    const cachedBlob = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.configDigest}`);
    await cachedBlob.arrayBuffer();
    await setUpstreamBehaviour(path, { status: 500 });
    expect(await pullStatus(key, path)).toBe(503);

    const blob = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.configDigest}`);
    const missingBlob = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);

    expect(cachedBlob.status).toBe(200);
    expect(blob.status).toBe(200);
    expect(await blob.text()).toBe(upstream.config);
    await expectRegistryError(missingBlob, 404, "BLOB_UNKNOWN");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${upstream.configDigest}`]: 1, [`${path}/manifests/latest`]: 1 });
  });

  it("asks upstream again after the period", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });
    expect(await pullStatus(key, path)).toBe(503);
    await setUpstreamBehaviour(path, {});
    await endOfflinePeriod(key);

    const status = await pullStatus(key, path);

    expect(status).toBe(200);
    expect(await failureState(key)).toEqual({ consecutive_failures: 0, offline_until: null });
    expect(await offlineUntilShown(key)).toBeNull();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2 });
  });

  it("goes offline again on a failure after the period", async () => {
    const key = await createRemoteRepository({ failureThreshold: 3 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });
    for (let attempt = 0; attempt < 3; attempt += 1) expect(await pullStatus(key, path)).toBe(503);
    await endOfflinePeriod(key);

    expect(await pullStatus(key, path)).toBe(503);

    expect(await offlineUntilShown(key)).not.toBeNull();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 4 });
  });

  it("resets the count on success", async () => {
    const key = await createRemoteRepository({ failureThreshold: 3, negativeCacheSeconds: 0 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });
    expect(await pullStatus(key, path)).toBe(503);
    expect(await pullStatus(key, path)).toBe(503);
    await setUpstreamBehaviour(path, {});
    expect(await pullStatus(key, path, "missing")).toBe(404);
    const afterSuccess = await failureState(key);
    await setUpstreamBehaviour(path, { status: 500 });

    expect(await pullStatus(key, path)).toBe(503);
    expect(await pullStatus(key, path)).toBe(503);

    expect(afterSuccess.consecutive_failures).toBe(0);
    expect(await failureState(key)).toEqual({ consecutive_failures: 2, offline_until: null });
  });

  it("never starts with offlineSeconds 0", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1, offlineSeconds: 0 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });

    expect(await pullStatus(key, path)).toBe(503);
    expect(await pullStatus(key, path)).toBe(503);

    expect(await offlineUntilShown(key)).toBeNull();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2 });
  });

  it("ends with PATCH offline false", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });
    await pullStatus(key, path);
    expect(await offlineUntilShown(key)).not.toBeNull();
    await setUpstreamBehaviour(path, {});

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { offline: false });

    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ offline: false, offlineUntil: null });
    expect(await failureState(key)).toEqual({ consecutive_failures: 0, offline_until: null });
    expect(await pullStatus(key, path)).toBe(200);
  });

  it("needs only read for misses while offline", async () => {
    const key = await createRemoteRepository({ failureThreshold: 1 });
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });
    await pullStatus(key, path);

    const reader = await createUser("reader");
    await createTarget({ repositories: [key], users: { [reader.name]: ["read"] } });

    const response = await registryFetch(`/v2/${key}/${path}/manifests/other`, { headers: { Authorization: reader.authorization } });

    await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });
});
