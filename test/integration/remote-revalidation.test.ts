import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { expectRegistryError, registryFetch } from "./helpers";
import { createRemoteRepository, setUpstreamBehaviour, uniqueUpstreamPath, upstream, upstreamCounts } from "./remote-helpers";

const staleWarning = '110 - "Response is stale"';

/** Pulls `latest` of the image once, so the remote repository caches the tag. */
async function cacheLatest(key: string, path: string): Promise<void> {
  const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);
  expect(response.status).toBe(200);
  await response.arrayBuffer();
}

/** Moves the recorded upstream check of a cached tag `seconds` into the past. */
async function ageTagCheck(imageName: string, tag: string, seconds: number): Promise<void> {
  const result = await env.DB.prepare(
    `UPDATE remote_tags SET checked_at = checked_at - ?
      WHERE tag = ? AND image_id = (SELECT id FROM images WHERE name = ?)`,
  )
    .bind(seconds, tag, imageName)
    .run();
  expect(result.meta.changes).toBe(1);
}

async function upstreamRetryAt(key: string): Promise<number | null> {
  const row = await env.DB.prepare("SELECT upstream_retry_at FROM remote_repositories WHERE repository_key = ?")
    .bind(key)
    .first<{ upstream_retry_at: number | null }>();
  return row?.upstream_retry_at ?? null;
}

describe("remote tag revalidation", () => {
  it("sends nothing upstream within the period", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 600 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await setUpstreamBehaviour(path, { moved: true });

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
    expect(response.headers.get("Warning")).toBeNull();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("records the check time of a cached tag", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const before = Math.floor(Date.now() / 1000);

    await cacheLatest(key, path);

    const row = await env.DB.prepare(
      "SELECT rt.checked_at FROM remote_tags rt JOIN images i ON i.id = rt.image_id WHERE i.name = ? AND rt.tag = 'latest'",
    )
      .bind(`${key}/${path}`)
      .first<{ checked_at: number }>();
    expect(row?.checked_at).toBeGreaterThanOrEqual(before);
  });

  it("keeps an unchanged tag after one HEAD", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 600 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await ageTagCheck(`${key}/${path}`, "latest", 601);

    const first = await registryFetch(`/v2/${key}/${path}/manifests/latest`);
    const firstBody = await first.text();
    const second = await registryFetch(`/v2/${key}/${path}/manifests/latest`);
    await second.arrayBuffer();

    expect(first.status).toBe(200);
    expect(firstBody).toBe(upstream.manifest);
    expect(first.headers.get("Warning")).toBeNull();
    expect(second.status).toBe(200);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1, [`HEAD ${path}/manifests/latest`]: 1 });
  });

  it("picks up a tag moved upstream", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 600 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await setUpstreamBehaviour(path, { moved: true });
    await ageTagCheck(`${key}/${path}`, "latest", 601);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.movedManifest);
    expect(response.headers.get("Docker-Content-Digest")).toBe(upstream.movedManifestDigest);
    expect(response.headers.get("Warning")).toBeNull();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2, [`HEAD ${path}/manifests/latest`]: 1 });
    const tag = await env.DB.prepare(
      "SELECT t.digest FROM tags t JOIN images i ON i.id = t.image_id WHERE i.name = ? AND t.name = 'latest'",
    )
      .bind(`${key}/${path}`)
      .first<{ digest: string }>();
    expect(tag?.digest).toBe(upstream.movedManifestDigest);
  });

  it("never revalidates a digest", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 0 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/${upstream.manifestDigest}`);

    expect(response.status).toBe(200);
    await response.arrayBuffer();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });
});

describe("remote stale serving", () => {
  it("serves stale on upstream 500", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await setUpstreamBehaviour(path, { status: 500 });
    await ageTagCheck(`${key}/${path}`, "latest", 601);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
    expect(response.headers.get("Warning")).toBe(staleWarning);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1, [`HEAD ${path}/manifests/latest`]: 1 });
  });

  it("serves stale when upstream is down", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await setUpstreamBehaviour(path, { down: true });
    await ageTagCheck(`${key}/${path}`, "latest", 601);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`, { method: "HEAD" });

    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Content-Digest")).toBe(upstream.manifestDigest);
    expect(response.headers.get("Warning")).toBe(staleWarning);
  });

  it("rechecks after a failed check", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await setUpstreamBehaviour(path, { status: 503 });
    await ageTagCheck(`${key}/${path}`, "latest", 601);
    await (await registryFetch(`/v2/${key}/${path}/manifests/latest`)).arrayBuffer();
    await setUpstreamBehaviour(path, {});

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    await response.arrayBuffer();
    expect(response.headers.get("Warning")).toBeNull();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1, [`HEAD ${path}/manifests/latest`]: 2 });
  });

  it("waits for Retry-After after a 429", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const otherPath = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await setUpstreamBehaviour(path, { status: 429, retryAfter: "120" });
    await ageTagCheck(`${key}/${path}`, "latest", 601);
    const before = Math.floor(Date.now() / 1000);

    const limited = await registryFetch(`/v2/${key}/${path}/manifests/latest`);
    await limited.arrayBuffer();
    const again = await registryFetch(`/v2/${key}/${path}/manifests/latest`);
    await again.arrayBuffer();
    const miss = await registryFetch(`/v2/${key}/${otherPath}/manifests/latest`);

    expect(limited.status).toBe(200);
    expect(limited.headers.get("Warning")).toBe(staleWarning);
    expect(again.status).toBe(200);
    expect(again.headers.get("Warning")).toBe(staleWarning);
    await expectRegistryError(miss, 503, "UNAVAILABLE");
    expect(Number(miss.headers.get("Retry-After"))).toBeGreaterThan(100);
    expect(Number(miss.headers.get("Retry-After"))).toBeLessThanOrEqual(120);
    expect(await upstreamRetryAt(key)).toBeGreaterThanOrEqual(before + 120);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1, [`HEAD ${path}/manifests/latest`]: 1 });
    expect(await upstreamCounts(otherPath)).toEqual({});
  });

  it("calls upstream after Retry-After passes", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await setUpstreamBehaviour(path, { status: 429, retryAfter: "120" });
    await ageTagCheck(`${key}/${path}`, "latest", 601);
    await (await registryFetch(`/v2/${key}/${path}/manifests/latest`)).arrayBuffer();
    await setUpstreamBehaviour(path, {});
    await env.DB.prepare("UPDATE remote_repositories SET upstream_retry_at = upstream_retry_at - 121 WHERE repository_key = ?")
      .bind(key)
      .run();

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    await response.arrayBuffer();
    expect(response.headers.get("Warning")).toBeNull();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1, [`HEAD ${path}/manifests/latest`]: 2 });
  });
});

describe("remote negative cache", () => {
  it("answers a known miss without upstream", async () => {
    const key = await createRemoteRepository({ negativeCacheSeconds: 60 });
    const path = uniqueUpstreamPath();

    const first = await registryFetch(`/v2/${key}/${path}/manifests/missing`);
    const second = await registryFetch(`/v2/${key}/${path}/manifests/missing`);

    await expectRegistryError(first, 404, "MANIFEST_UNKNOWN");
    await expectRegistryError(second, 404, "MANIFEST_UNKNOWN");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/missing`]: 1 });
  });

  it("asks upstream again after the period", async () => {
    const key = await createRemoteRepository({ negativeCacheSeconds: 60 });
    const path = uniqueUpstreamPath();
    await (await registryFetch(`/v2/${key}/${path}/manifests/missing`)).arrayBuffer();
    const aged = await env.DB.prepare("UPDATE remote_missing_manifests SET missed_at = missed_at - 61 WHERE image_name = ?")
      .bind(`${key}/${path}`)
      .run();
    expect(aged.meta.changes).toBe(1);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/missing`);

    await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/missing`]: 2 });
  });
});
