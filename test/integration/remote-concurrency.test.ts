import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import SparkMD5 from "spark-md5";
import { describe, expect, it, vi } from "vitest";
import { blobFillName, manifestFillName } from "../../src/remote/fill";
import { expectRegistryError, findBlobRow, listBucketKeys, registryFetch, sha1Hex, uniqueImage, uploadBlob } from "./helpers";
import {
  addUpstreamBlob,
  createRemoteRepository,
  resumeUpstream,
  setUpstreamBehaviour,
  uniqueUpstreamPath,
  upstream,
  upstreamCounts,
} from "./remote-helpers";

/** How many clients request the same missing item at once. */
const clients = 4;

/** Bytes that a stalled upstream sends before it waits; the blobs here are larger. */
const stallBytes = 1024;

/** Polls a condition that the Worker reaches on its own, without asserting how long that takes. */
const untilReady = { timeout: 20_000, interval: 20 };

/** Lets a failed `untilReady` poll report its last assertion before the test itself times out. */
const longerThanPolling = { timeout: 30_000 };

/** Returns how many callers wait on the UpstreamFill object of `name` for a fill that another caller started. */
async function waitingCallers(name: string): Promise<number> {
  const stub = env.UPSTREAM_FILLS.get(env.UPSTREAM_FILLS.idFromName(name));
  return runInDurableObject(stub, (instance) => instance.waitingCallers);
}

/** Waits until the upstream has received `count` requests for `key` and `waiting` callers wait on the fill object `fillName`. */
async function untilJoined(path: string, key: string, fillName: string): Promise<void> {
  await vi.waitFor(async () => expect(await upstreamCounts(path)).toEqual({ [key]: 1 }), untilReady);
  await vi.waitFor(async () => expect(await waitingCallers(fillName)).toBe(clients - 1), untilReady);
}

/** Returns text of a unique blob that the upstream serves, longer than `stallBytes`. */
function uniqueBlobContent(): string {
  return `blob ${crypto.randomUUID()} of the concurrency tests\n`.repeat(64);
}

/** Returns the R2 keys under `blobs/` whose object contains exactly `content`. */
async function keysHolding(content: string): Promise<string[]> {
  const size = new TextEncoder().encode(content).byteLength;
  const holding: string[] = [];
  for (const key of await listBucketKeys("blobs/")) {
    const object = await env.BLOBS.get(key);
    if (!object || object.size !== size) {
      await object?.body.cancel();
      continue;
    }
    if ((await object.text()) === content) holding.push(key);
  }
  return holding;
}

async function findLink(imageName: string, digest: string) {
  return env.DB.prepare("SELECT 1 AS found FROM blob_links l JOIN images i ON i.id = l.image_id WHERE i.name = ? AND l.digest = ?")
    .bind(imageName, digest)
    .first();
}

describe("concurrent remote misses", longerThanPolling, () => {
  it("blob misses share one upstream GET", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { stallAfterBytes: stallBytes });

    const responses = Array.from({ length: clients }, () => registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`));
    await untilJoined(path, `${path}/blobs/${upstream.layerDigest}`, blobFillName(key, upstream.layerDigest));
    await resumeUpstream(path);

    for (const response of await Promise.all(responses)) {
      expect(response.status).toBe(200);
      expect(response.headers.get("Docker-Content-Digest")).toBe(upstream.layerDigest);
      expect(await response.text()).toBe(upstream.layer);
    }
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${upstream.layerDigest}`]: 1 });
  });

  it("tag misses share one upstream GET", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { hold: true });

    const responses = Array.from({ length: clients }, () => registryFetch(`/v2/${key}/${path}/manifests/latest`));
    await untilJoined(path, `${path}/manifests/latest`, manifestFillName(`${key}/${path}`, "latest"));
    await resumeUpstream(path);

    for (const response of await Promise.all(responses)) {
      expect(response.status).toBe(200);
      expect(await response.text()).toBe(upstream.manifest);
    }
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("digest misses share one upstream GET", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const digest = upstream.manifestDigest;
    await setUpstreamBehaviour(path, { hold: true });

    const responses = Array.from({ length: clients }, () => registryFetch(`/v2/${key}/${path}/manifests/${digest}`));
    await untilJoined(path, `${path}/manifests/${digest}`, manifestFillName(`${key}/${path}`, digest));
    await resumeUpstream(path);

    for (const response of await Promise.all(responses)) {
      expect(response.status).toBe(200);
      expect(await response.text()).toBe(upstream.manifest);
    }
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/${digest}`]: 1 });
  });

  it("tag revalidations share one HEAD", async () => {
    const key = await createRemoteRepository({ tagCacheSeconds: 0 });
    const path = uniqueUpstreamPath();
    await (await registryFetch(`/v2/${key}/${path}/manifests/latest`)).arrayBuffer();
    await setUpstreamBehaviour(path, { hold: true });

    const responses = Array.from({ length: clients }, () => registryFetch(`/v2/${key}/${path}/manifests/latest`));
    await vi.waitFor(async () => expect((await upstreamCounts(path))[`HEAD ${path}/manifests/latest`]).toBe(1), untilReady);
    await vi.waitFor(async () => expect(await waitingCallers(manifestFillName(`${key}/${path}`, "latest"))).toBe(clients - 1), untilReady);
    await resumeUpstream(path);

    for (const response of await Promise.all(responses)) {
      expect(response.status).toBe(200);
      expect(response.headers.get("Warning")).toBeNull();
      expect(await response.text()).toBe(upstream.manifest);
    }
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1, [`HEAD ${path}/manifests/latest`]: 1 });
  });

  it("two images of one repository share a layer fill", async () => {
    const key = await createRemoteRepository();
    const firstPath = uniqueUpstreamPath();
    const secondPath = uniqueUpstreamPath();

    const first = await registryFetch(`/v2/${key}/${firstPath}/blobs/${upstream.layerDigest}`);
    const firstBody = await first.text();
    const second = await registryFetch(`/v2/${key}/${secondPath}/blobs/${upstream.layerDigest}`);
    const secondBody = await second.text();

    expect(firstBody).toBe(upstream.layer);
    expect(second.status).toBe(200);
    expect(secondBody).toBe(upstream.layer);
    expect(await upstreamCounts(firstPath)).toEqual({ [`${firstPath}/blobs/${upstream.layerDigest}`]: 1 });
    expect(await upstreamCounts(secondPath)).toEqual({});
    expect(await findLink(`${key}/${secondPath}`, upstream.layerDigest)).not.toBeNull();
  });
});

describe("remote blob streaming", longerThanPolling, () => {
  it("sends bytes before the upstream finishes", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { stallAfterBytes: stallBytes });

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);
    const reader = response.body!.getReader();
    const first = await reader.read();

    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Length")).toBe(String(upstream.layer.length));
    expect(first.done).toBe(false);
    const firstText = new TextDecoder().decode(first.value);
    expect(firstText.length).toBeGreaterThan(0);
    expect(upstream.layer.startsWith(firstText)).toBe(true);

    await resumeUpstream(path);
    let rest = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    expect(firstText + rest).toBe(upstream.layer);
  });

  it("finishes storing after the client leaves", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const content = uniqueBlobContent();
    const digest = await addUpstreamBlob(content);
    await setUpstreamBehaviour(path, { stallAfterBytes: stallBytes });

    const leaving = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);
    const reader = leaving.body!.getReader();
    expect((await reader.read()).done).toBe(false);
    await reader.cancel();
    await resumeUpstream(path);
    const later = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);

    expect(later.status).toBe(200);
    expect(await later.text()).toBe(content);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${digest}`]: 1 });
    const row = await findBlobRow(digest);
    expect(row?.size).toBe(content.length);
    expect(await keysHolding(content)).toEqual([row?.storage_key]);
  });

  it("drops a first client that stops reading and serves the others", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    // Larger than the first client's queue and the buffers behind it, so the fill meets a full queue.
    const content = `blob ${crypto.randomUUID()} that its first client never reads\n`.repeat(400_000);
    const digest = await addUpstreamBlob(content);

    const stalled = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);
    expect(stalled.status).toBe(200);
    await vi.waitFor(async () => expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${digest}`]: 1 }), untilReady);
    const waiting = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);

    expect(waiting.status).toBe(200);
    expect(await waiting.text()).toBe(content);
    await expect(stalled.text()).rejects.toThrow();
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${digest}`]: 1 });
    expect((await findBlobRow(digest))?.size).toBe(content.length);
  });

  it("records sha1 and md5 of a filled blob", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const content = uniqueBlobContent();
    const digest = await addUpstreamBlob(content);

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);
    expect(await response.text()).toBe(content);

    const row = await findBlobRow(digest);
    expect(row?.sha1).toBe(await sha1Hex(new TextEncoder().encode(content)));
    expect(row?.md5).toBe(SparkMD5.hash(content));
  });

  it("stores nothing on a digest mismatch", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("corrupt-");
    const content = uniqueBlobContent();
    const digest = await addUpstreamBlob(content);
    await setUpstreamBehaviour(path, { stallAfterBytes: stallBytes });

    const first = registryFetch(`/v2/${key}/${path}/blobs/${digest}`);
    const waiting = registryFetch(`/v2/${key}/${path}/blobs/${digest}`);
    await vi.waitFor(async () => expect(await waitingCallers(blobFillName(key, digest))).toBe(1), untilReady);
    await resumeUpstream(path);

    const streamed = await first;
    expect(streamed.status).toBe(200);
    await expect(streamed.arrayBuffer()).rejects.toThrow();
    const error = await expectRegistryError(await waiting, 503, "UNAVAILABLE");
    expect(error.message).toContain(`for ${digest}`);
    expect(await findBlobRow(digest)).toBeNull();
    expect(await findLink(`${key}/${path}`, digest)).toBeNull();
    expect(await keysHolding(content.toUpperCase())).toEqual([]);
  });

  it("stores nothing when the upstream fails mid-body", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const content = uniqueBlobContent();
    const digest = await addUpstreamBlob(content);
    await setUpstreamBehaviour(path, { cutAfterBytes: stallBytes });

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);

    expect(response.status).toBe(200);
    await expect(response.arrayBuffer()).rejects.toThrow();
    await setUpstreamBehaviour(path, {});
    const retry = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);
    expect(await retry.text()).toBe(content);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${digest}`]: 2 });
    const row = await findBlobRow(digest);
    expect(await keysHolding(content)).toEqual([row?.storage_key]);
    expect(await keysHolding(content.slice(0, stallBytes))).toEqual([]);
  });

  it("answers HEAD with an upstream HEAD", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`, { method: "HEAD" });

    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Length")).toBe(String(upstream.layer.length));
    expect(response.headers.get("Docker-Content-Digest")).toBe(upstream.layerDigest);
    expect(await upstreamCounts(path)).toEqual({ [`HEAD ${path}/blobs/${upstream.layerDigest}`]: 1 });
    expect(await findLink(`${key}/${path}`, upstream.layerDigest)).toBeNull();
  });

  it("answers HEAD of an upstream miss with 404", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const missing = `sha256:${"1".repeat(64)}`;

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${missing}`, { method: "HEAD" });

    expect(response.status).toBe(404);
    expect(await upstreamCounts(path)).toEqual({ [`HEAD ${path}/blobs/${missing}`]: 1 });
  });

  it("answers HEAD with 503 on upstream failure", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`, { method: "HEAD" });

    expect(response.status).toBe(503);
    expect(await findLink(`${key}/${path}`, upstream.layerDigest)).toBeNull();
  });

  it("serves a range after storing the blob", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`, { headers: { Range: "bytes=10-19" } });

    expect(response.status).toBe(206);
    expect(response.headers.get("Content-Range")).toBe(`bytes 10-19/${upstream.layer.length}`);
    expect(await response.text()).toBe(upstream.layer.slice(10, 20));
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${upstream.layerDigest}`]: 1 });
    expect(await findLink(`${key}/${path}`, upstream.layerDigest)).not.toBeNull();
  });

  it("returns 503 for an upstream blob 500", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);

    await expectRegistryError(response, 503, "UNAVAILABLE");
    expect(await findLink(`${key}/${path}`, upstream.layerDigest)).toBeNull();
  });
});

describe("cached and pushed blobs", () => {
  it("keeps one object when pushed first", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const content = uniqueBlobContent();
    const digest = await uploadBlob(uniqueImage(), new TextEncoder().encode(content));
    await addUpstreamBlob(content);

    const cached = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);

    expect(cached.status).toBe(200);
    expect(await cached.text()).toBe(content);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${digest}`]: 1 });
    const row = await findBlobRow(digest);
    expect(row?.storage_key).toMatch(/^blobs\/uploads\//);
    expect(await keysHolding(content)).toEqual([row?.storage_key]);
  });

  it("keeps one object when cached first", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const content = uniqueBlobContent();
    const digest = await addUpstreamBlob(content);

    const cached = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);
    expect(await cached.text()).toBe(content);
    await uploadBlob(uniqueImage(), new TextEncoder().encode(content));

    const row = await findBlobRow(digest);
    expect(row?.storage_key).toMatch(/^blobs\/remote\//);
    expect(await keysHolding(content)).toEqual([row?.storage_key]);
  });
});
