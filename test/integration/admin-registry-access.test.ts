import { describe, expect, it } from "vitest";
import { adminRequest, createGroup, createRepository, createTarget, createUser, loginStatus, type TestUser } from "./admin-helpers";
import { anonymousFetch, digestOf, expectRegistryError, randomBytes, registryFetch, uniqueImage } from "./helpers";
import { imageManifest, mediaTypes, pushImage, type Descriptor, utf8 } from "./manifest-helpers";

/** Sends a registry API request with the user's Basic credentials. */
function fetchAs(user: TestUser, path: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set("Authorization", user.authorization);
  return registryFetch(path, { ...init, headers });
}

/** Pushes a blob as the user in one monolithic POST and returns the response with the blob's descriptor. */
async function pushBlobAs(
  user: TestUser,
  name: string,
  bytes: Uint8Array,
  mediaType: string,
): Promise<{ response: Response; descriptor: Descriptor }> {
  const digest = await digestOf(bytes);
  const response = await fetchAs(user, `/v2/${name}/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: bytes,
  });
  return { response, descriptor: { mediaType, digest, size: bytes.byteLength } };
}

/** Uploads a fresh config and layer as the user, expecting 201 for each, and returns the manifest bytes that reference them. */
async function manifestPushedAs(user: TestUser, name: string): Promise<Uint8Array> {
  const config = await pushBlobAs(user, name, utf8(JSON.stringify({ os: "linux", nonce: crypto.randomUUID() })), mediaTypes.ociConfig);
  expect(config.response.status).toBe(201);
  const layer = await pushBlobAs(user, name, randomBytes(128), mediaTypes.ociLayer);
  expect(layer.response.status).toBe(201);
  return utf8(JSON.stringify(imageManifest(config.descriptor, [layer.descriptor])));
}

function putManifestAs(user: TestUser, name: string, reference: string, bytes: Uint8Array): Promise<Response> {
  return fetchAs(user, `/v2/${name}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": mediaTypes.ociManifest },
    body: bytes,
  });
}

/** Returns the digest that a tag points to, read as the administrator. */
async function taggedDigest(name: string, tag: string): Promise<string | null> {
  const response = await registryFetch(`/v2/${name}/manifests/${tag}`, { method: "HEAD", headers: { Accept: mediaTypes.ociManifest } });
  return response.headers.get("Docker-Content-Digest");
}

/** Creates a user with the given actions on docker-local, granted through the admin API. */
async function userWith(actions: string[]): Promise<{ user: TestUser; target: string }> {
  const user = await createUser("client");
  const target = await createTarget({ repositories: ["docker-local"], users: { [user.name]: actions } });
  return { user, target };
}

describe("read grant", () => {
  it("lets the user pull", async () => {
    const name = uniqueImage("pull");
    const pushed = await pushImage(name, "v1");
    const { user } = await userWith(["read"]);

    const manifest = await fetchAs(user, `/v2/${name}/manifests/v1`, { headers: { Accept: mediaTypes.ociManifest } });

    expect(manifest.status).toBe(200);
    expect(new Uint8Array(await manifest.arrayBuffer())).toEqual(pushed.bytes);
    const parsed = JSON.parse(new TextDecoder().decode(pushed.bytes)) as { layers: Descriptor[] };
    expect((await fetchAs(user, `/v2/${name}/blobs/${parsed.layers[0]!.digest}`)).status).toBe(200);
    expect((await fetchAs(user, `/v2/${name}/tags/list`)).status).toBe(200);
  });

  it("returns 403 DENIED on a blob upload", async () => {
    const name = uniqueImage("no-upload");
    await pushImage(name, "v1");
    const { user } = await userWith(["read"]);

    const { response } = await pushBlobAs(user, name, randomBytes(64), mediaTypes.ociLayer);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("returns 403 DENIED on a manifest push", async () => {
    const name = uniqueImage("no-manifest");
    const pushed = await pushImage(name, "v1");
    const { user } = await userWith(["read"]);

    await expectRegistryError(await putManifestAs(user, name, "v2", pushed.bytes), 403, "DENIED");
    expect(await taggedDigest(name, "v2")).toBeNull();
  });

  it("returns 403 DENIED on a manifest delete", async () => {
    const name = uniqueImage("no-delete");
    const pushed = await pushImage(name, "v1");
    const { user } = await userWith(["read"]);

    await expectRegistryError(await fetchAs(user, `/v2/${name}/manifests/${pushed.digest}`, { method: "DELETE" }), 403, "DENIED");
    expect(await taggedDigest(name, "v1")).toBe(pushed.digest);
  });

  it("grants only pull in a registry token", async () => {
    const name = uniqueImage("token");
    await pushImage(name, "v1");
    const { user } = await userWith(["read"]);

    const tokenResponse = await fetchAs(user, `/v2/token?service=registry.test&scope=repository:${name}:pull,push`);

    expect(tokenResponse.status).toBe(200);
    const { token } = (await tokenResponse.json()) as { token: string };
    const claims = JSON.parse(atob(token.split(".")[1]!.replaceAll("-", "+").replaceAll("_", "/"))) as { access: unknown };
    expect(claims.access).toEqual([{ type: "repository", name, actions: ["pull"] }]);
    const upload = await registryFetch(`/v2/${name}/blobs/uploads/`, { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    await expectRegistryError(upload, 403, "DENIED");
  });
});

describe("no grant", () => {
  it("returns 403 DENIED on a pull", async () => {
    const name = uniqueImage("private");
    await pushImage(name, "v1");
    const user = await createUser("stranger");

    await expectRegistryError(await fetchAs(user, `/v2/${name}/manifests/v1`), 403, "DENIED");
  });

  it("follows a revoked target", async () => {
    const name = uniqueImage("revoked");
    await pushImage(name, "v1");
    const { user, target } = await userWith(["read"]);
    expect((await fetchAs(user, `/v2/${name}/manifests/v1`, { method: "HEAD" })).status).toBe(200);

    expect((await adminRequest("DELETE", `/api/v1/permissions/${target}`)).status).toBe(204);

    await expectRegistryError(await fetchAs(user, `/v2/${name}/manifests/v1`), 403, "DENIED");
  });

  it("follows a disabled user", async () => {
    const { user } = await userWith(["read"]);

    expect((await adminRequest("PATCH", `/api/v1/users/${user.name}`, { disabled: true })).status).toBe(200);

    expect(await loginStatus(user.name, user.password)).toBe(401);
  });
});

describe("deploy grant", () => {
  it("pushes a new tag", async () => {
    const name = uniqueImage("deploy");
    const { user } = await userWith(["read", "deploy"]);
    const bytes = await manifestPushedAs(user, name);

    const response = await putManifestAs(user, name, "v1", bytes);

    expect(response.status).toBe(201);
    expect(await taggedDigest(name, "v1")).toBe(await digestOf(bytes));
  });

  it("returns 403 DENIED when overwriting a tag", async () => {
    const name = uniqueImage("overwrite");
    const existing = await pushImage(name, "v1");
    const { user } = await userWith(["read", "deploy"]);
    const bytes = await manifestPushedAs(user, name);

    const error = await expectRegistryError(await putManifestAs(user, name, "v1", bytes), 403, "DENIED");

    expect(error.detail).toMatchObject({ action: "delete", name });
    expect(await taggedDigest(name, "v1")).toBe(existing.digest);
  });

  it("re-pushes identical content to a tag", async () => {
    const name = uniqueImage("same");
    const existing = await pushImage(name, "v1");
    const { user } = await userWith(["read", "deploy"]);

    expect((await putManifestAs(user, name, "v1", existing.bytes)).status).toBe(201);
  });

  it("overwrites a tag once delete is granted", async () => {
    const name = uniqueImage("granted");
    await pushImage(name, "v1");
    const { user, target } = await userWith(["read", "deploy"]);
    const bytes = await manifestPushedAs(user, name);
    await expectRegistryError(await putManifestAs(user, name, "v1", bytes), 403, "DENIED");

    const replaced = await adminRequest("PUT", `/api/v1/permissions/${target}`, {
      repositories: ["docker-local"],
      users: { [user.name]: ["read", "deploy", "delete"] },
    });
    expect(replaced.status).toBe(200);

    expect((await putManifestAs(user, name, "v1", bytes)).status).toBe(201);
    expect(await taggedDigest(name, "v1")).toBe(await digestOf(bytes));
  });
});

describe("grant scope in the registry", () => {
  it("follows include and exclude patterns", async () => {
    const repository = await createRepository("patterned");
    const [allowed, excluded, outside] = [`${repository}/team/app`, `${repository}/team/secret/app`, `${repository}/other/app`];
    for (const name of [allowed, excluded, outside]) await pushImage(name, "v1");
    const user = await createUser("patterned");
    await createTarget({
      repositories: [repository],
      includePatterns: ["team/**"],
      excludePatterns: ["team/secret/**"],
      users: { [user.name]: ["read"] },
    });

    expect((await fetchAs(user, `/v2/${allowed}/manifests/v1`, { method: "HEAD" })).status).toBe(200);
    await expectRegistryError(await fetchAs(user, `/v2/${excluded}/manifests/v1`), 403, "DENIED");
    await expectRegistryError(await fetchAs(user, `/v2/${outside}/manifests/v1`), 403, "DENIED");
  });

  it("follows a group grant", async () => {
    const repository = await createRepository("grouped");
    const name = `${repository}/app`;
    await pushImage(name, "v1");
    const user = await createUser("member");
    const group = await createGroup("pullers", { members: [user.name] });
    await createTarget({ repositories: [repository], groups: { [group]: ["read"] } });

    expect((await fetchAs(user, `/v2/${name}/manifests/v1`, { method: "HEAD" })).status).toBe(200);
    expect((await adminRequest("DELETE", `/api/v1/groups/${group}/members/${user.name}`)).status).toBe(204);
    await expectRegistryError(await fetchAs(user, `/v2/${name}/manifests/v1`), 403, "DENIED");
  });

  it("follows an anonymous grant", async () => {
    const repository = await createRepository("public");
    const name = `${repository}/app`;
    await pushImage(name, "v1");
    await createTarget({ repositories: [repository], anonymous: ["read"] });

    expect((await anonymousFetch(`/v2/${name}/manifests/v1`, { method: "HEAD" })).status).toBe(200);
    const upload = await anonymousFetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
    await expectRegistryError(upload, 401, "UNAUTHORIZED");
  });

  it("agrees with the effective permissions", async () => {
    const name = uniqueImage("agreed");
    await pushImage(name, "v1");
    const { user, target } = await userWith(["read"]);

    const response = await fetchAs(user, `/api/v1/permissions/effective?repo=docker-local&path=${name.slice("docker-local/".length)}`);

    expect(((await response.json()) as { actions: object }).actions).toEqual({ read: [target] });
    expect((await fetchAs(user, `/v2/${name}/manifests/v1`, { method: "HEAD" })).status).toBe(200);
    await expectRegistryError(await fetchAs(user, `/v2/${name}/blobs/uploads/`, { method: "POST" }), 403, "DENIED");
  });
});
