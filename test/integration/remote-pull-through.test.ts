import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { adminRequest, createTarget, createUser } from "./admin-helpers";
import { expectRegistryError, registryFetch } from "./helpers";
import {
  createRemoteRepository,
  setUpstreamBehaviour,
  uniqueUpstreamPath,
  upstream,
  upstreamCounts,
  upstreamTokenCount,
} from "./remote-helpers";

const manifestAccept = { Accept: "application/vnd.oci.image.manifest.v1+json" };

describe("remote manifest pull", () => {
  it("fetches a tag upstream once", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();

    const first = await registryFetch(`/v2/${key}/${path}/manifests/latest`, { headers: manifestAccept });
    const firstBody = await first.text();
    const second = await registryFetch(`/v2/${key}/${path}/manifests/latest`, { headers: manifestAccept });
    const secondBody = await second.text();

    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(firstBody).toBe(upstream.manifest);
    expect(secondBody).toBe(upstream.manifest);
    expect(first.headers.get("Docker-Content-Digest")).toBe(upstream.manifestDigest);
    expect(second.headers.get("Docker-Content-Digest")).toBe(upstream.manifestDigest);
    expect(second.headers.get("Content-Type")).toBe(upstream.manifestMediaType);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("serves the cached manifest by digest without upstream", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await (await registryFetch(`/v2/${key}/${path}/manifests/latest`)).arrayBuffer();

    const byDigest = await registryFetch(`/v2/${key}/${path}/manifests/${upstream.manifestDigest}`);

    expect(byDigest.status).toBe(200);
    expect(await byDigest.text()).toBe(upstream.manifest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("fetches a digest upstream once", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();

    const first = await registryFetch(`/v2/${key}/${path}/manifests/${upstream.manifestDigest}`);
    await first.arrayBuffer();
    const second = await registryFetch(`/v2/${key}/${path}/manifests/${upstream.manifestDigest}`);

    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(await second.text()).toBe(upstream.manifest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/${upstream.manifestDigest}`]: 1 });
    const tags = await env.DB.prepare("SELECT t.name FROM tags t JOIN images i ON i.id = t.image_id WHERE i.name = ?")
      .bind(`${key}/${path}`)
      .all();
    expect(tags.results).toEqual([]);
  });

  it("caches on HEAD", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();

    const head = await registryFetch(`/v2/${key}/${path}/manifests/latest`, { method: "HEAD" });
    const get = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(head.status).toBe(200);
    expect(head.headers.get("Docker-Content-Digest")).toBe(upstream.manifestDigest);
    expect(head.headers.get("Content-Length")).toBe(String(new TextEncoder().encode(upstream.manifest).byteLength));
    expect(await get.text()).toBe(upstream.manifest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("returns MANIFEST_UNKNOWN for a tag the upstream lacks", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();

    const response = await registryFetch(`/v2/${key}/${path}/manifests/missing`);

    await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/missing`]: 1 });
  });

  it("maps one-component names to library/ for Docker Hub", async () => {
    const key = await createRemoteRepository({ dockerHub: true });
    const name = crypto.randomUUID().slice(0, 8);

    const response = await registryFetch(`/v2/${key}/${name}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
    expect(await upstreamCounts(`library/${name}`)).toEqual({ [`library/${name}/manifests/latest`]: 1 });
  });
});

describe("remote blob pull", () => {
  it("fetches each blob upstream once", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();

    const firstLayer = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);
    const firstLayerBody = await firstLayer.text();
    const secondLayer = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);
    const secondLayerBody = await secondLayer.text();
    const config = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.configDigest}`);
    const configBody = await config.text();

    expect(firstLayer.status).toBe(200);
    expect(secondLayer.status).toBe(200);
    expect(config.status).toBe(200);
    expect(firstLayerBody).toBe(upstream.layer);
    expect(secondLayerBody).toBe(upstream.layer);
    expect(configBody).toBe(upstream.config);
    expect(secondLayer.headers.get("Docker-Content-Digest")).toBe(upstream.layerDigest);
    expect(await upstreamCounts(path)).toEqual({
      [`${path}/blobs/${upstream.layerDigest}`]: 1,
      [`${path}/blobs/${upstream.configDigest}`]: 1,
    });
  });

  it("records the blob and its link in D1", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();

    await (await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`)).arrayBuffer();

    const row = await env.DB.prepare(
      `SELECT b.size FROM blob_links l JOIN images i ON i.id = l.image_id JOIN blobs b ON b.digest = l.digest
        WHERE i.name = ? AND l.digest = ?`,
    )
      .bind(`${key}/${path}`, upstream.layerDigest)
      .first<{ size: number }>();
    expect(row?.size).toBe(upstream.layer.length);
  });

  it("rejects a blob whose content mismatches its digest", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("corrupt-");

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);

    // The first client receives the bytes while they are checked, so its body fails at the end instead of a 503.
    expect(response.status).toBe(200);
    await expect(response.arrayBuffer()).rejects.toThrow();
    const link = await env.DB.prepare("SELECT 1 FROM blob_links l JOIN images i ON i.id = l.image_id WHERE i.name = ?")
      .bind(`${key}/${path}`)
      .first();
    expect(link).toBeNull();
  });

  it("returns BLOB_UNKNOWN for a blob the upstream lacks", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const missing = `sha256:${"0".repeat(64)}`;

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${missing}`);

    await expectRegistryError(response, 404, "BLOB_UNKNOWN");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${missing}`]: 1 });
  });

  it("remembers a missing blob", async () => {
    const key = await createRemoteRepository({ negativeCacheSeconds: 60 });
    const path = uniqueUpstreamPath();
    const missing = `sha256:${"1".repeat(64)}`;

    const first = await registryFetch(`/v2/${key}/${path}/blobs/${missing}`);
    const second = await registryFetch(`/v2/${key}/${path}/blobs/${missing}`);
    const head = await registryFetch(`/v2/${key}/${path}/blobs/${missing}`, { method: "HEAD" });

    await expectRegistryError(first, 404, "BLOB_UNKNOWN");
    await expectRegistryError(second, 404, "BLOB_UNKNOWN");
    expect(head.status).toBe(404);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${missing}`]: 1 });
  });

  it("asks again for a missing blob without a negative cache", async () => {
    const key = await createRemoteRepository({ negativeCacheSeconds: 0 });
    const path = uniqueUpstreamPath();
    const missing = `sha256:${"2".repeat(64)}`;

    const first = await registryFetch(`/v2/${key}/${path}/blobs/${missing}`);
    const second = await registryFetch(`/v2/${key}/${path}/blobs/${missing}`);

    await expectRegistryError(first, 404, "BLOB_UNKNOWN");
    await expectRegistryError(second, 404, "BLOB_UNKNOWN");
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${missing}`]: 2 });
  });
});

describe("remote upstream token", () => {
  it("fetches a token and retries once", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("private-");

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 2 });
    expect(await upstreamTokenCount(path)).toBe(1);
  });

  it("needs no token for a cached blob", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath("private-");

    const first = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);
    const firstBody = await first.text();
    const second = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);
    await second.arrayBuffer();

    expect(first.status).toBe(200);
    expect(second.status).toBe(200);
    expect(firstBody).toBe(upstream.layer);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${upstream.layerDigest}`]: 2 });
    expect(await upstreamTokenCount(path)).toBe(1);
  });
});

describe("remote repository rate limits", () => {
  it("passes on Retry-After of a 429 miss", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 429, retryAfter: "120" });

    const manifest = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    await expectRegistryError(manifest, 503, "UNAVAILABLE");
    expect(manifest.headers.get("Retry-After")).toBe("120");
  });

  it("passes on Retry-After of a 429 blob miss", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 429, retryAfter: "90" });

    const blob = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);

    await expectRegistryError(blob, 503, "UNAVAILABLE");
    expect(blob.headers.get("Retry-After")).toBe("90");
  });
});

describe("remote repository writes", () => {
  it("rejects starting an upload", async () => {
    const key = await createRemoteRepository();

    const response = await registryFetch(`/v2/${key}/app/blobs/uploads/`, { method: "POST" });

    const error = await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(error.message).toContain("push to a local repository instead");
    expect(response.headers.get("Allow")).toBe("GET, HEAD");
  });

  it("rejects a manifest push", async () => {
    const key = await createRemoteRepository();

    const response = await registryFetch(`/v2/${key}/app/manifests/latest`, {
      method: "PUT",
      headers: { "Content-Type": upstream.manifestMediaType },
      body: upstream.manifest,
    });

    await expectRegistryError(response, 405, "UNSUPPORTED");
  });

  it("rejects deleting a cached manifest", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await (await registryFetch(`/v2/${key}/${path}/manifests/latest`)).arrayBuffer();

    const response = await registryFetch(`/v2/${key}/${path}/manifests/${upstream.manifestDigest}`, { method: "DELETE" });
    const after = await registryFetch(`/v2/${key}/${path}/manifests/latest`, { method: "HEAD" });

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(after.status).toBe(200);
  });

  it("rejects deleting a blob", async () => {
    const key = await createRemoteRepository();

    const response = await registryFetch(`/v2/${key}/app/blobs/${upstream.layerDigest}`, { method: "DELETE" });

    const error = await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(error.message).toContain("its content changes only upstream");
  });
});

describe("remote repository access", () => {
  it("needs deploy to fetch a miss", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const reader = await createUser("reader");
    await createTarget({ repositories: [key], users: { [reader.name]: ["read"] } });

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`, { headers: { Authorization: reader.authorization } });

    await expectRegistryError(response, 403, "DENIED");
    expect(await upstreamCounts(path)).toEqual({});
  });

  it("lets read pull cached content", async () => {
    const key = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const reader = await createUser("reader");
    await createTarget({ repositories: [key], users: { [reader.name]: ["read"] } });
    await (await registryFetch(`/v2/${key}/${path}/manifests/latest`)).arrayBuffer();

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`, { headers: { Authorization: reader.authorization } });

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
  });

  it("serves only cached content when offline", async () => {
    const key = await createRemoteRepository();
    const cachedPath = uniqueUpstreamPath();
    const uncachedPath = uniqueUpstreamPath();
    await (await registryFetch(`/v2/${key}/${cachedPath}/manifests/latest`)).arrayBuffer();
    const patched = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { offline: true });
    expect(patched.status).toBe(200);

    const cached = await registryFetch(`/v2/${key}/${cachedPath}/manifests/latest`);
    const uncached = await registryFetch(`/v2/${key}/${uncachedPath}/manifests/latest`);

    expect(cached.status).toBe(200);
    await cached.arrayBuffer();
    await expectRegistryError(uncached, 404, "MANIFEST_UNKNOWN");
    expect(await upstreamCounts(uncachedPath)).toEqual({});
  });
});
