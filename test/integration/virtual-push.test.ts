import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { adminRequest, createRepository, createTarget, createUser } from "./admin-helpers";
import { digestOf, expectRegistryError, openUpload, patchChunk, randomBytes, readBytes, registryFetch, uploadBlob } from "./helpers";
import { imageManifest, imageRowCounts, mediaTypes, oddlyFormatted, pushBlob, pushImageBlobs, putManifest, utf8 } from "./manifest-helpers";
import { createRemoteRepository } from "./remote-helpers";
import { createVirtualRepository, uniquePath } from "./virtual-helpers";

/** Creates a virtual repository with a fresh local member that is also its default deployment repository. */
async function virtualWithDeployment(): Promise<{ key: string; deployment: string }> {
  const deployment = await createRepository("local");
  const key = await createVirtualRepository([deployment], deployment);
  return { key, deployment };
}

/** Returns whether the blob is linked to the image. */
async function blobLinked(name: string, digest: string): Promise<boolean> {
  const row = await env.DB.prepare(
    "SELECT 1 AS found FROM blob_links l JOIN images i ON i.id = l.image_id WHERE i.name = ? AND l.digest = ?",
  )
    .bind(name, digest)
    .first();
  return row !== null;
}

describe("virtual push", () => {
  it("stores an image in the deployment repository", async () => {
    const { key, deployment } = await virtualWithDeployment();
    const path = uniquePath();
    const { config, layer } = await pushImageBlobs(`${key}/${path}`);
    const bytes = oddlyFormatted(imageManifest(config, [layer]));

    const { response, digest } = await putManifest(`${key}/${path}`, "1.0", bytes, mediaTypes.ociManifest);

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/v2/${key}/${path}/manifests/${digest}`);
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    expect(await imageRowCounts(`${deployment}/${path}`)).toEqual({ images: 1, manifests: 1, tags: 1 });
    expect(await imageRowCounts(`${key}/${path}`)).toEqual({ images: 0, manifests: 0, tags: 0 });

    const throughVirtual = await registryFetch(`/v2/${key}/${path}/manifests/1.0`);
    const direct = await registryFetch(`/v2/${deployment}/${path}/manifests/1.0`);
    expect(throughVirtual.status).toBe(200);
    expect(await readBytes(throughVirtual)).toEqual(bytes);
    expect(direct.status).toBe(200);
    expect(await readBytes(direct)).toEqual(bytes);
  });

  it("keeps upload Locations under the virtual name", async () => {
    const { key, deployment } = await virtualWithDeployment();
    const path = uniquePath();
    const bytes = randomBytes(2000);
    const digest = await digestOf(bytes);

    const opened = await openUpload(`${key}/${path}`);
    const patched = await patchChunk(opened.location, bytes.slice(0, 1000));
    const status = await registryFetch(opened.location);
    const committed = await registryFetch(`${opened.location}?digest=${digest}`, {
      method: "PUT",
      headers: { "Content-Type": "application/octet-stream", "Content-Range": "1000-1999", "Content-Length": "1000" },
      body: bytes.slice(1000),
    });

    expect(opened.location).toBe(`/v2/${key}/${path}/blobs/uploads/${opened.uploadId}`);
    expect(patched.status).toBe(202);
    expect(patched.headers.get("Location")).toBe(opened.location);
    expect(status.status).toBe(204);
    expect(status.headers.get("Range")).toBe("0-999");
    expect(committed.status).toBe(201);
    expect(committed.headers.get("Location")).toBe(`/v2/${key}/${path}/blobs/${digest}`);
    expect(await blobLinked(`${deployment}/${path}`, digest)).toBe(true);
  });

  it("cancels an upload through the virtual name", async () => {
    const { key } = await virtualWithDeployment();
    const path = uniquePath();
    const opened = await openUpload(`${key}/${path}`);

    const cancelled = await registryFetch(opened.location, { method: "DELETE" });
    const status = await registryFetch(opened.location);

    expect(cancelled.status).toBe(204);
    await expectRegistryError(status, 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("links a blob that another member stores", async () => {
    const other = await createRepository("local");
    const deployment = await createRepository("local");
    const key = await createVirtualRepository([other, deployment], deployment);
    const path = uniquePath();
    const { config, layer } = await pushImageBlobs(`${other}/${path}`);
    const head = await registryFetch(`/v2/${key}/${path}/blobs/${layer.digest}`, { method: "HEAD" });
    const bytes = oddlyFormatted(imageManifest(config, [layer]));

    const { response } = await putManifest(`${key}/${path}`, "1.0", bytes, mediaTypes.ociManifest);

    expect(head.status).toBe(200);
    expect(response.status).toBe(201);
    expect(await blobLinked(`${deployment}/${path}`, layer.digest)).toBe(true);
    expect(await blobLinked(`${deployment}/${path}`, config.digest)).toBe(true);
  });

  it("links nothing when a blob is missing", async () => {
    const other = await createRepository("local");
    const deployment = await createRepository("local");
    const key = await createVirtualRepository([other, deployment], deployment);
    const path = uniquePath();
    const config = await pushBlob(`${other}/${path}`, utf8("{}"), mediaTypes.ociConfig);
    const missing = { mediaType: mediaTypes.ociLayer, digest: await digestOf(randomBytes(8)), size: 8 };
    const bytes = oddlyFormatted(imageManifest(config, [missing]));

    const { response } = await putManifest(`${key}/${path}`, "1.0", bytes, mediaTypes.ociManifest);

    await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
    expect(await blobLinked(`${deployment}/${path}`, config.digest)).toBe(false);
    expect(await imageRowCounts(`${deployment}/${path}`)).toEqual({ images: 0, manifests: 0, tags: 0 });
  });

  it("mounts a blob from a virtual name", async () => {
    const source = await createRepository("local");
    const deployment = await createRepository("local");
    const key = await createVirtualRepository([source, deployment], deployment);
    const digest = await uploadBlob(`${source}/base/app`, randomBytes(100));
    const path = uniquePath();

    const response = await registryFetch(`/v2/${key}/${path}/blobs/uploads/?mount=${digest}&from=${key}/base/app`, { method: "POST" });

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/v2/${key}/${path}/blobs/${digest}`);
    expect(await blobLinked(`${deployment}/${path}`, digest)).toBe(true);
  });

  it("rejects a push without a deployment repository", async () => {
    const local = await createRepository("local");
    const remote = await createRemoteRepository();
    const key = await createVirtualRepository([local, remote]);
    const path = uniquePath();

    const upload = await registryFetch(`/v2/${key}/${path}/blobs/uploads/`, { method: "POST" });
    const manifest = await putManifest(`${key}/${path}`, "1.0", utf8("{}"), mediaTypes.ociManifest);

    const error = await expectRegistryError(upload, 405, "UNSUPPORTED");
    expect(error.message).toContain(
      `has no default deployment repository, so it accepts no pushes; push to one of its local members (${local})`,
    );
    await expectRegistryError(manifest.response, 405, "UNSUPPORTED");
    expect(await imageRowCounts(`${local}/${path}`)).toEqual({ images: 0, manifests: 0, tags: 0 });
  });

  it("rejects a push with only remote members", async () => {
    const remote = await createRemoteRepository();
    const key = await createVirtualRepository([remote]);

    const upload = await registryFetch(`/v2/${key}/${uniquePath()}/blobs/uploads/`, { method: "POST" });

    const error = await expectRegistryError(upload, 405, "UNSUPPORTED");
    expect(error.message).toContain("add a local member and set it as defaultDeploymentRepository");
  });

  it("rejects a push after the deployment repository is cleared", async () => {
    const { key } = await virtualWithDeployment();
    await adminRequest("PATCH", `/api/v1/repositories/${key}`, { defaultDeploymentRepository: null });

    const response = await registryFetch(`/v2/${key}/${uniquePath()}/blobs/uploads/`, { method: "POST" });

    await expectRegistryError(response, 405, "UNSUPPORTED");
  });
});

describe("virtual push permissions", () => {
  it("needs deploy in the deployment repository", async () => {
    const { key, deployment } = await virtualWithDeployment();
    const user = await createUser("pusher");
    await createTarget({ repositories: [key], users: { [user.name]: ["read", "deploy"] } });
    await createTarget({ repositories: [deployment], users: { [user.name]: ["read"] } });
    const path = uniquePath();

    const response = await registryFetch(`/v2/${key}/${path}/blobs/uploads/`, {
      method: "POST",
      headers: { Authorization: user.authorization },
    });

    const error = await expectRegistryError(response, 403, "DENIED");
    expect(error.message).toBe(`user '${user.name}' may not deploy to ${deployment}/${path}, where pushes to ${key}/${path} are stored`);
  });

  it("needs deploy on the virtual name", async () => {
    const { key, deployment } = await virtualWithDeployment();
    const user = await createUser("pusher");
    await createTarget({ repositories: [key], users: { [user.name]: ["read"] } });
    await createTarget({ repositories: [deployment], users: { [user.name]: ["read", "deploy"] } });

    const response = await registryFetch(`/v2/${key}/${uniquePath()}/blobs/uploads/`, {
      method: "POST",
      headers: { Authorization: user.authorization },
    });

    await expectRegistryError(response, 403, "DENIED");
  });

  it("needs delete to move a tag", async () => {
    const { key, deployment } = await virtualWithDeployment();
    const user = await createUser("pusher");
    await createTarget({ repositories: [key, deployment], users: { [user.name]: ["read", "deploy"] } });
    const path = uniquePath();
    const name = `${key}/${path}`;
    const asUser = { Authorization: user.authorization, "Content-Type": mediaTypes.ociManifest };
    const { config, layer } = await pushImageBlobs(name);
    const first = oddlyFormatted(imageManifest(config, [layer]));
    const second = oddlyFormatted(imageManifest(config, [layer], { annotations: { moved: "yes" } }));

    const created = await registryFetch(`/v2/${name}/manifests/1.0`, { method: "PUT", headers: asUser, body: first });
    const moved = await registryFetch(`/v2/${name}/manifests/1.0`, { method: "PUT", headers: asUser, body: second });

    expect(created.status).toBe(201);
    await expectRegistryError(moved, 403, "DENIED");
    const current = await registryFetch(`/v2/${deployment}/${path}/manifests/1.0`);
    expect(current.headers.get("Docker-Content-Digest")).toBe(await digestOf(first));
  });

  it("moves a tag with delete", async () => {
    const { key, deployment } = await virtualWithDeployment();
    const user = await createUser("pusher");
    await createTarget({ repositories: [key, deployment], users: { [user.name]: ["read", "deploy", "delete"] } });
    const path = uniquePath();
    const name = `${key}/${path}`;
    const asUser = { Authorization: user.authorization, "Content-Type": mediaTypes.ociManifest };
    const { config, layer } = await pushImageBlobs(name);
    const first = oddlyFormatted(imageManifest(config, [layer]));
    const second = oddlyFormatted(imageManifest(config, [layer], { annotations: { moved: "yes" } }));
    await registryFetch(`/v2/${name}/manifests/1.0`, { method: "PUT", headers: asUser, body: first });

    const moved = await registryFetch(`/v2/${name}/manifests/1.0`, { method: "PUT", headers: asUser, body: second });

    expect(moved.status).toBe(201);
    const current = await registryFetch(`/v2/${deployment}/${path}/manifests/1.0`);
    expect(current.headers.get("Docker-Content-Digest")).toBe(await digestOf(second));
  });

  it("does not mount from an unreadable member", async () => {
    const hidden = await createRepository("local");
    const deployment = await createRepository("local");
    const key = await createVirtualRepository([hidden, deployment], deployment);
    const digest = await uploadBlob(`${hidden}/base/app`, randomBytes(100));
    const user = await createUser("pusher");
    await createTarget({ repositories: [key, deployment], users: { [user.name]: ["read", "deploy"] } });
    const path = uniquePath();

    const response = await registryFetch(`/v2/${key}/${path}/blobs/uploads/?mount=${digest}&from=${key}/base/app`, {
      method: "POST",
      headers: { Authorization: user.authorization },
    });

    expect(response.status).toBe(202);
    expect(await blobLinked(`${deployment}/${path}`, digest)).toBe(false);
  });

  it("does not link a blob from an unreadable member", async () => {
    const hidden = await createRepository("local");
    const deployment = await createRepository("local");
    const key = await createVirtualRepository([hidden, deployment], deployment);
    const path = uniquePath();
    const { config, layer } = await pushImageBlobs(`${hidden}/${path}`);
    const user = await createUser("pusher");
    await createTarget({ repositories: [key, deployment], users: { [user.name]: ["read", "deploy"] } });
    const bytes = oddlyFormatted(imageManifest(config, [layer]));

    const response = await registryFetch(`/v2/${key}/${path}/manifests/1.0`, {
      method: "PUT",
      headers: { Authorization: user.authorization, "Content-Type": mediaTypes.ociManifest },
      body: bytes,
    });

    await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
    expect(await blobLinked(`${deployment}/${path}`, layer.digest)).toBe(false);
  });
});
