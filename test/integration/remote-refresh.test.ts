import { createExecutionContext, createScheduledController, waitOnExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import worker from "../../src/index";
import { adminRequest } from "./admin-helpers";
import { registryFetch } from "./helpers";
import { createRemoteRepository, setUpstreamBehaviour, uniqueUpstreamPath, upstream, upstreamCounts } from "./remote-helpers";

/** Runs the Worker's scheduled handler once, as the Cron Trigger does. */
async function runCron(): Promise<void> {
  const controller = createScheduledController({ scheduledTime: Date.now(), cron: "*/5 * * * *" });
  const ctx = createExecutionContext();
  await worker.scheduled(controller, env);
  await waitOnExecutionContext(ctx);
}

/** Pulls `latest` of the image once, so the remote repository caches the tag and records the pull. */
async function cacheLatest(key: string, path: string): Promise<void> {
  const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);
  expect(response.status).toBe(200);
  await response.arrayBuffer();
}

interface TagState {
  checked_at: number;
  pulled_at: number | null;
}

async function tagState(key: string, path: string): Promise<TagState> {
  const row = await env.DB.prepare(
    "SELECT rt.checked_at, rt.pulled_at FROM remote_tags rt JOIN images i ON i.id = rt.image_id WHERE i.name = ? AND rt.tag = 'latest'",
  )
    .bind(`${key}/${path}`)
    .first<TagState>();
  expect(row).not.toBeNull();
  return row!;
}

/** Moves the recorded check and pull of the cached tag `latest` into the past. */
async function ageTag(key: string, path: string, change: { checkedSeconds?: number; pulledSeconds?: number }): Promise<void> {
  const result = await env.DB.prepare(
    `UPDATE remote_tags SET checked_at = checked_at - ?, pulled_at = pulled_at - ?
      WHERE tag = 'latest' AND image_id = (SELECT id FROM images WHERE name = ?)`,
  )
    .bind(change.checkedSeconds ?? 0, change.pulledSeconds ?? 0, `${key}/${path}`)
    .run();
  expect(result.meta.changes).toBe(1);
}

async function cachedDigest(key: string, path: string): Promise<string | null> {
  const row = await env.DB.prepare("SELECT t.digest FROM tags t JOIN images i ON i.id = t.image_id WHERE i.name = ? AND t.name = 'latest'")
    .bind(`${key}/${path}`)
    .first<{ digest: string }>();
  return row?.digest ?? null;
}

describe("pull recording", () => {
  it("records the first pull", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const before = Math.floor(Date.now() / 1000);

    await cacheLatest(key, path);

    expect((await tagState(key, path)).pulled_at).toBeGreaterThanOrEqual(before);
  });

  it("writes at most once a minute", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await ageTag(key, path, { pulledSeconds: 30 });
    const aged = await tagState(key, path);

    await cacheLatest(key, path);

    expect((await tagState(key, path)).pulled_at).toBe(aged.pulled_at);
  });

  it("records a pull after a minute", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await ageTag(key, path, { pulledSeconds: 61 });
    const aged = await tagState(key, path);

    await cacheLatest(key, path);

    expect((await tagState(key, path)).pulled_at).toBeGreaterThanOrEqual(aged.pulled_at! + 61);
  });
});

describe("scheduled tag refresh", () => {
  it("moves a recently pulled tag that moved upstream", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 600 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await ageTag(key, path, { checkedSeconds: 400 });
    await setUpstreamBehaviour(path, { moved: true });
    const before = await tagState(key, path);

    await runCron();

    expect(await cachedDigest(key, path)).toBe(upstream.movedManifestDigest);
    const after = await tagState(key, path);
    expect(after.checked_at).toBeGreaterThan(before.checked_at);
    expect(after.pulled_at).toBe(before.pulled_at);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2, [`HEAD ${path}/manifests/latest`]: 1 });
  });

  it("checks an unchanged tag with one HEAD", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 300 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);

    await runCron();

    expect(await cachedDigest(key, path)).toBe(upstream.manifestDigest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1, [`HEAD ${path}/manifests/latest`]: 1 });
  });

  it("skips a check that outlasts the next run", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 600 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await ageTag(key, path, { checkedSeconds: 200 });

    await runCron();

    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("skips a tag not pulled recently", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 600, recentPullSeconds: 3600 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await ageTag(key, path, { checkedSeconds: 7200, pulledSeconds: 3601 });
    await setUpstreamBehaviour(path, { moved: true });

    await runCron();

    expect(await cachedDigest(key, path)).toBe(upstream.manifestDigest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("skips a repository with recentPullSeconds 0", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 0, recentPullSeconds: 0 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);

    await runCron();

    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("skips an offline repository", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 0 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    expect((await adminRequest("PATCH", `/api/v1/repositories/${key}`, { offline: true })).status).toBe(200);

    await runCron();

    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("skips an automatic offline period", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 0 });
    const path = uniqueUpstreamPath();
    await cacheLatest(key, path);
    await env.DB.prepare("UPDATE remote_repositories SET offline_until = unixepoch() + 300 WHERE repository_key = ?").bind(key).run();

    await runCron();

    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("goes on after a failing tag", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 0, failureThreshold: 100 });
    const failingPath = uniqueUpstreamPath();
    const movedPath = uniqueUpstreamPath();
    await cacheLatest(key, failingPath);
    await cacheLatest(key, movedPath);
    // The failing tag has the older check, so the run reaches it first.
    await ageTag(key, failingPath, { checkedSeconds: 600 });
    await setUpstreamBehaviour(failingPath, { status: 500 });
    await setUpstreamBehaviour(movedPath, { moved: true });
    const failingBefore = await tagState(key, failingPath);

    await runCron();

    expect((await tagState(key, failingPath)).checked_at).toBe(failingBefore.checked_at);
    expect(await cachedDigest(key, failingPath)).toBe(upstream.manifestDigest);
    expect(await cachedDigest(key, movedPath)).toBe(upstream.movedManifestDigest);
    expect(await upstreamCounts(failingPath)).toEqual({
      [`${failingPath}/manifests/latest`]: 1,
      [`HEAD ${failingPath}/manifests/latest`]: 1,
    });
    expect(await upstreamCounts(movedPath)).toEqual({ [`${movedPath}/manifests/latest`]: 2, [`HEAD ${movedPath}/manifests/latest`]: 1 });
  });

  it("goes on after a tag whose password fails", async () => {
    const broken = await createRemoteRepository({ tagCacheSeconds: 0, username: upstream.username, password: upstream.password });
    const working = await createRemoteRepository({ tagCacheSeconds: 0 });
    const brokenPath = uniqueUpstreamPath();
    const workingPath = uniqueUpstreamPath();
    await cacheLatest(broken, brokenPath);
    await cacheLatest(working, workingPath);
    await ageTag(broken, brokenPath, { checkedSeconds: 600 });
    await env.DB.prepare("UPDATE remote_repositories SET password_ciphertext = 'v1:not:valid' WHERE repository_key = ?").bind(broken).run();
    await setUpstreamBehaviour(workingPath, { moved: true });

    await runCron();

    expect(await upstreamCounts(brokenPath)).toEqual({ [`${brokenPath}/manifests/latest`]: 1 });
    expect(await cachedDigest(working, workingPath)).toBe(upstream.movedManifestDigest);
  });
});
