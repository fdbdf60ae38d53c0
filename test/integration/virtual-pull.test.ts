import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { adminRequest, createRepository, createTarget, createUser } from "./admin-helpers";
import { digestOf, expectRegistryError, randomBytes, readBytes, registryFetch, uploadBlob } from "./helpers";
import { imageManifest, mediaTypes, oddlyFormatted, pushEmptyConfig, pushImage, putManifestOk, utf8 } from "./manifest-helpers";
import { createRemoteRepository, setUpstreamBehaviour, uniqueUpstreamPath, upstream, upstreamCounts } from "./remote-helpers";
import { createVirtualRepository, uniquePath, walkPages } from "./virtual-helpers";

const manifestAccept = { Accept: `${mediaTypes.ociManifest}, ${mediaTypes.ociIndex}` };

/** GETs a manifest and returns its status, digest header and exact body. */
async function pullManifest(name: string, reference: string): Promise<{ status: number; digest: string | null; body: Uint8Array }> {
  const response = await registryFetch(`/v2/${name}/manifests/${reference}`, { headers: manifestAccept });
  return { status: response.status, digest: response.headers.get("Docker-Content-Digest"), body: await readBytes(response) };
}

describe("virtual manifest pull", () => {
  it("prefers a local member over a remote one", async () => {
    const local = await createRepository("local");
    const remote = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const pushed = await pushImage(`${local}/${path}`, "latest");
    const key = await createVirtualRepository([remote, local]);

    const pulled = await pullManifest(`${key}/${path}`, "latest");

    expect(pulled.status).toBe(200);
    expect(pulled.digest).toBe(pushed.digest);
    expect(pulled.body).toEqual(pushed.bytes);
    expect(await upstreamCounts(path)).toEqual({});
  });

  it("fetches a tag only the remote has", async () => {
    const local = await createRepository("local");
    const remote = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const key = await createVirtualRepository([local, remote]);

    const pulled = await pullManifest(`${key}/${path}`, "latest");

    expect(pulled.status).toBe(200);
    expect(pulled.digest).toBe(upstream.manifestDigest);
    expect(new TextDecoder().decode(pulled.body)).toBe(upstream.manifest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
    const cached = await env.DB.prepare("SELECT 1 AS found FROM images WHERE name = ?").bind(`${remote}/${path}`).first();
    expect(cached).not.toBeNull();
  });

  it("serves the remote cache on the next pull", async () => {
    const remote = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const key = await createVirtualRepository([remote]);
    await pullManifest(`${key}/${path}`, "latest");

    const again = await pullManifest(`${key}/${path}`, "latest");

    expect(again.status).toBe(200);
    expect(again.digest).toBe(upstream.manifestDigest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/latest`]: 1 });
  });

  it("follows the configured order of locals", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const path = uniquePath();
    const fromFirst = await pushImage(`${first}/${path}`, "1.0");
    const fromSecond = await pushImage(`${second}/${path}`, "1.0");
    const key = await createVirtualRepository([second, first]);

    const before = await pullManifest(`${key}/${path}`, "1.0");
    const reordered = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [first, second] });
    const after = await pullManifest(`${key}/${path}`, "1.0");

    expect(before.digest).toBe(fromSecond.digest);
    expect(before.body).toEqual(fromSecond.bytes);
    expect(reordered.status).toBe(200);
    expect(after.digest).toBe(fromFirst.digest);
    expect(after.body).toEqual(fromFirst.bytes);
  });

  it("finds a digest in any member", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const path = uniquePath();
    await pushImage(`${first}/${path}`, "1.0");
    const onlySecond = await pushImage(`${second}/${path}`, "2.0");
    const key = await createVirtualRepository([first, second]);

    const pulled = await pullManifest(`${key}/${path}`, onlySecond.digest);

    expect(pulled.status).toBe(200);
    expect(pulled.digest).toBe(onlySecond.digest);
    expect(pulled.body).toEqual(onlySecond.bytes);
  });

  it("fetches a digest from the remote member", async () => {
    const local = await createRepository("local");
    const remote = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const key = await createVirtualRepository([remote, local]);

    const pulled = await pullManifest(`${key}/${path}`, upstream.manifestDigest);

    expect(pulled.status).toBe(200);
    expect(new TextDecoder().decode(pulled.body)).toBe(upstream.manifest);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/manifests/${upstream.manifestDigest}`]: 1 });
  });

  it("answers HEAD with the digest", async () => {
    const local = await createRepository("local");
    const path = uniquePath();
    const pushed = await pushImage(`${local}/${path}`, "1.0");
    const key = await createVirtualRepository([local]);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/1.0`, { method: "HEAD", headers: manifestAccept });

    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Content-Digest")).toBe(pushed.digest);
    expect(response.headers.get("Content-Length")).toBe(String(pushed.size));
  });

  it("returns MANIFEST_UNKNOWN for a missing tag", async () => {
    const local = await createRepository("local");
    const path = uniquePath();
    await pushImage(`${local}/${path}`, "1.0");
    const key = await createVirtualRepository([local]);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/2.0`);

    const error = await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
    expect(error.message).toBe(`tag 2.0 is not in repository ${key}/${path}`);
  });

  it("returns MANIFEST_UNKNOWN without members", async () => {
    const key = await createVirtualRepository([]);

    await expectRegistryError(await registryFetch(`/v2/${key}/${uniquePath()}/manifests/1.0`), 404, "MANIFEST_UNKNOWN");
  });

  it("rejects an invalid tag", async () => {
    const key = await createVirtualRepository([]);

    await expectRegistryError(await registryFetch(`/v2/${key}/${uniquePath()}/manifests/-bad`), 400, "TAG_INVALID");
  });

  it("keeps the stale warning of a remote member", async () => {
    const remote = await createRemoteRepository({ tagCacheSeconds: 0 });
    const path = uniqueUpstreamPath();
    const key = await createVirtualRepository([remote]);
    await pullManifest(`${key}/${path}`, "latest");
    await setUpstreamBehaviour(path, { status: 500 });

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`, { headers: manifestAccept });

    expect(response.status).toBe(200);
    expect(response.headers.get("Warning")).toBe('110 - "Response is stale"');
    expect(await response.text()).toBe(upstream.manifest);
  });

  it("returns the upstream failure when no member has the tag", async () => {
    const remote = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    await setUpstreamBehaviour(path, { status: 500 });
    const key = await createVirtualRepository([remote]);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    await expectRegistryError(response, 503, "UNAVAILABLE");
  });

  it("falls back past a failing remote", async () => {
    const failing = await createRemoteRepository();
    const working = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const key = await createVirtualRepository([failing, working]);
    await env.DB.prepare("UPDATE remote_repositories SET url = 'http://127.0.0.1:9' WHERE repository_key = ?").bind(failing).run();

    const pulled = await pullManifest(`${key}/${path}`, "latest");

    expect(pulled.status).toBe(200);
    expect(pulled.digest).toBe(upstream.manifestDigest);
  });
});

describe("virtual blob pull", () => {
  it("finds a blob in any member", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const path = uniquePath();
    const bytes = randomBytes(1000);
    const digest = await uploadBlob(`${second}/${path}`, bytes);
    const key = await createVirtualRepository([first, second]);

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`);

    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    expect(await readBytes(response)).toEqual(bytes);
  });

  it("serves a byte range", async () => {
    const local = await createRepository("local");
    const path = uniquePath();
    const bytes = randomBytes(100);
    const digest = await uploadBlob(`${local}/${path}`, bytes);
    const key = await createVirtualRepository([local]);

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`, { headers: { Range: "bytes=10-19" } });

    expect(response.status).toBe(206);
    expect(await readBytes(response)).toEqual(bytes.slice(10, 20));
  });

  it("fetches a blob through the remote member", async () => {
    const remote = await createRemoteRepository();
    const path = uniqueUpstreamPath();
    const key = await createVirtualRepository([remote]);

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${upstream.layerDigest}`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.layer);
    expect(await upstreamCounts(path)).toEqual({ [`${path}/blobs/${upstream.layerDigest}`]: 1 });
  });

  it("returns BLOB_UNKNOWN for a missing blob", async () => {
    const local = await createRepository("local");
    const path = uniquePath();
    await uploadBlob(`${local}/${path}`, randomBytes(10));
    const key = await createVirtualRepository([local]);
    const missing = await digestOf(randomBytes(10));

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${missing}`);

    await expectRegistryError(response, 404, "BLOB_UNKNOWN");
  });

  it("rejects an invalid digest", async () => {
    const key = await createVirtualRepository([]);

    await expectRegistryError(await registryFetch(`/v2/${key}/${uniquePath()}/blobs/sha256:abc`), 400, "DIGEST_INVALID");
  });
});

describe("virtual tag list", () => {
  async function setUp() {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const path = uniquePath();
    const firstImage = await pushImage(`${first}/${path}`, "a");
    await putManifestOk(`${first}/${path}`, "c", firstImage.bytes, mediaTypes.ociManifest);
    const secondImage = await pushImage(`${second}/${path}`, "b");
    await putManifestOk(`${second}/${path}`, "c", secondImage.bytes, mediaTypes.ociManifest);
    await putManifestOk(`${second}/${path}`, "d", secondImage.bytes, mediaTypes.ociManifest);
    const key = await createVirtualRepository([first, second]);
    return { name: `${key}/${path}`, first, second, path };
  }

  it("merges the members' tags", async () => {
    const { name } = await setUp();

    const response = await registryFetch(`/v2/${name}/tags/list`);

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ name, tags: ["a", "b", "c", "d"] });
  });

  it("paginates across members", async () => {
    const { name } = await setUp();

    const pages = await walkPages<{ tags: string[] }>(`/v2/${name}/tags/list?n=3`, (body) => body.tags);

    expect(pages).toEqual([["a", "b", "c"], ["d"]]);
  });

  it("starts after last", async () => {
    const { name } = await setUp();

    const pages = await walkPages<{ tags: string[] }>(`/v2/${name}/tags/list?n=1&last=b`, (body) => body.tags);

    expect(pages).toEqual([["c"], ["d"]]);
  });

  it("returns NAME_UNKNOWN when no member has the image", async () => {
    const local = await createRepository("local");
    const key = await createVirtualRepository([local]);

    await expectRegistryError(await registryFetch(`/v2/${key}/${uniquePath()}/tags/list`), 404, "NAME_UNKNOWN");
  });

  it("rejects an invalid n", async () => {
    const { name } = await setUp();

    await expectRegistryError(await registryFetch(`/v2/${name}/tags/list?n=-1`), 400, "PAGINATION_NUMBER_INVALID");
  });
});

describe("virtual catalog", () => {
  it("merges virtual names with the members' names", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const key = await createVirtualRepository([first, second]);
    await pushImage(`${first}/shared/app`, "1");
    await pushImage(`${second}/shared/app`, "1");
    await pushImage(`${second}/only/app`, "1");
    const user = await createUser("cataloguer");
    await createTarget({ repositories: [first, second, key], users: { [user.name]: ["read"] } });
    const expected = [`${first}/shared/app`, `${key}/only/app`, `${key}/shared/app`, `${second}/only/app`, `${second}/shared/app`].sort();

    const whole = await walkPages<{ repositories: string[] }>("/v2/_catalog", (body) => body.repositories, user.authorization);
    const paged = await walkPages<{ repositories: string[] }>("/v2/_catalog?n=2", (body) => body.repositories, user.authorization);
    const afterFirstVirtual = await walkPages<{ repositories: string[] }>(
      `/v2/_catalog?n=10&last=${key}/only/app`,
      (body) => body.repositories,
      user.authorization,
    );

    expect(whole).toEqual([expected]);
    expect(paged.flat()).toEqual(expected);
    expect(paged.map((page) => page.length)).toEqual([2, 2, 1]);
    expect(afterFirstVirtual).toEqual([expected.slice(expected.indexOf(`${key}/only/app`) + 1)]);
  });

  it("lists an administrator's virtual names", async () => {
    const local = await createRepository("local");
    const key = await createVirtualRepository([local]);
    await pushImage(`${local}/team/app`, "1");

    const response = await registryFetch(`/v2/_catalog?last=${key}/`);
    const { repositories } = (await response.json()) as { repositories: string[] };

    expect(repositories[0]).toBe(`${key}/team/app`);
  });
});

describe("virtual referrers", () => {
  it("merges the members' referrers", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const path = uniquePath();
    const subject = { mediaType: mediaTypes.ociManifest, digest: await digestOf(utf8(crypto.randomUUID())), size: 10 };
    const fromFirst = await pushReferrer(`${first}/${path}`, subject);
    const fromSecond = await pushReferrer(`${second}/${path}`, subject);
    const key = await createVirtualRepository([first, second]);

    const response = await registryFetch(`/v2/${key}/${path}/referrers/${subject.digest}`);

    expect(response.status).toBe(200);
    const index = (await response.json()) as { manifests: { digest: string }[] };
    expect(index.manifests.map((descriptor) => descriptor.digest)).toEqual([fromFirst, fromSecond].sort());
  });
});

describe("virtual delete", () => {
  it("rejects a manifest delete", async () => {
    const local = await createRepository("local");
    const path = uniquePath();
    const pushed = await pushImage(`${local}/${path}`, "1.0");
    const key = await createVirtualRepository([local], local);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/${pushed.digest}`, { method: "DELETE" });

    const error = await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(error.message).toContain(`delete it from the local member that has it (${local})`);
    expect(response.headers.get("Allow")).toBe("GET, HEAD, PUT");
    expect((await pullManifest(`${local}/${path}`, pushed.digest)).status).toBe(200);
  });

  it("rejects a tag delete", async () => {
    const local = await createRepository("local");
    const path = uniquePath();
    await pushImage(`${local}/${path}`, "1.0");
    const key = await createVirtualRepository([local], local);

    const response = await registryFetch(`/v2/${key}/${path}/manifests/1.0`, { method: "DELETE" });

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect((await pullManifest(`${local}/${path}`, "1.0")).status).toBe(200);
  });

  it("rejects a blob delete", async () => {
    const local = await createRepository("local");
    const path = uniquePath();
    const digest = await uploadBlob(`${local}/${path}`, randomBytes(10));
    const key = await createVirtualRepository([local]);

    const response = await registryFetch(`/v2/${key}/${path}/blobs/${digest}`, { method: "DELETE" });

    const error = await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(error.detail).toEqual({ repository: key, members: [local] });
    expect(response.headers.get("Allow")).toBe("GET, HEAD");
    expect((await registryFetch(`/v2/${local}/${path}/blobs/${digest}`, { method: "HEAD" })).status).toBe(200);
  });

  it("stops serving a deleted member", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const path = uniquePath();
    await pushImage(`${first}/${path}`, "1.0");
    const fromSecond = await pushImage(`${second}/${path}`, "1.0");
    const key = await createVirtualRepository([first, second]);

    const deleted = await adminRequest("DELETE", `/api/v1/repositories/${first}`);
    const pulled = await pullManifest(`${key}/${path}`, "1.0");

    expect(deleted.status).toBe(204);
    expect(pulled.digest).toBe(fromSecond.digest);
  });
});

/** Pushes an artifact whose subject is `subject`, by digest, and returns its digest. */
async function pushReferrer(name: string, subject: { mediaType: string; digest: string; size: number }): Promise<string> {
  const config = await pushEmptyConfig(name);
  const payload = { mediaType: "application/octet-stream", digest: await uploadBlob(name, utf8(crypto.randomUUID())), size: 36 };
  const bytes = oddlyFormatted(imageManifest(config, [payload], { artifactType: "application/vnd.example.signature", subject }));
  const digest = await digestOf(bytes);
  await putManifestOk(name, digest, bytes, mediaTypes.ociManifest);
  return digest;
}
