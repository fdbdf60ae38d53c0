import { describe, expect, it } from "vitest";
import { createRepository, createTarget, createUser, insertAccessToken, type TestUser } from "./admin-helpers";
import { claimsOf, fetchAs, requestToken, tokenPath } from "./auth-fixtures";
import { anonymousFetch, digestOf, expectRegistryError, randomBytes, readBytes, registryFetch, uploadBlob } from "./helpers";
import { imageManifest, mediaTypes, oddlyFormatted, pushImage, pushImageBlobs } from "./manifest-helpers";
import { createRemoteRepository, uniqueUpstreamPath, upstream, upstreamCounts } from "./remote-helpers";
import { createVirtualRepository, uniquePath, walkPages } from "./virtual-helpers";

/** Sends a GET with the user's Basic credentials. */
function getAs(user: TestUser, path: string): Promise<Response> {
  return registryFetch(path, { headers: { Authorization: user.authorization } });
}

/**
 * Sets up a virtual repository over a hidden and a visible local member, in
 * that order, and a user who may read the virtual repository and the visible
 * member only. Both members have the image at `path`.
 */
async function hiddenAndVisible() {
  const hidden = await createRepository("hidden");
  const visible = await createRepository("visible");
  const key = await createVirtualRepository([hidden, visible]);
  const path = uniquePath();
  const user = await createUser("reader");
  await createTarget({ repositories: [key, visible], users: { [user.name]: ["read"] } });
  return { hidden, visible, key, path, user };
}

describe("virtual read permissions", () => {
  it("skips an unreadable member for a tag", async () => {
    const { hidden, visible, key, path, user } = await hiddenAndVisible();
    await pushImage(`${hidden}/${path}`, "1.0");
    const fromVisible = await pushImage(`${visible}/${path}`, "1.0");

    const response = await getAs(user, `/v2/${key}/${path}/manifests/1.0`);

    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Content-Digest")).toBe(fromVisible.digest);
    expect(await readBytes(response)).toEqual(fromVisible.bytes);
  });

  it("returns 404 for a tag only the hidden member has", async () => {
    const { hidden, visible, key, path, user } = await hiddenAndVisible();
    await pushImage(`${hidden}/${path}`, "secret");
    await pushImage(`${visible}/${path}`, "1.0");

    const response = await getAs(user, `/v2/${key}/${path}/manifests/secret`);

    await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
  });

  it("returns 404 for a digest only the hidden member has", async () => {
    const { hidden, key, path, user } = await hiddenAndVisible();
    const secret = await pushImage(`${hidden}/${path}`, "secret");

    const response = await getAs(user, `/v2/${key}/${path}/manifests/${secret.digest}`);

    await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
  });

  it("returns 404 for a blob only the hidden member has", async () => {
    const { hidden, key, path, user } = await hiddenAndVisible();
    const digest = await uploadBlob(`${hidden}/${path}`, randomBytes(64));

    const response = await getAs(user, `/v2/${key}/${path}/blobs/${digest}`);

    await expectRegistryError(response, 404, "BLOB_UNKNOWN");
  });

  it("omits the hidden member's tags", async () => {
    const { hidden, visible, key, path, user } = await hiddenAndVisible();
    await pushImage(`${hidden}/${path}`, "secret");
    await pushImage(`${visible}/${path}`, "1.0");

    const response = await getAs(user, `/v2/${key}/${path}/tags/list`);

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ name: `${key}/${path}`, tags: ["1.0"] });
  });

  it("returns NAME_UNKNOWN when only the hidden member has the image", async () => {
    const { hidden, key, path, user } = await hiddenAndVisible();
    await pushImage(`${hidden}/${path}`, "secret");

    const response = await getAs(user, `/v2/${key}/${path}/tags/list`);

    await expectRegistryError(response, 404, "NAME_UNKNOWN");
  });

  it("omits the hidden member's names from the catalog", async () => {
    const { hidden, visible, key, user } = await hiddenAndVisible();
    await pushImage(`${hidden}/secret/app`, "1");
    await pushImage(`${visible}/open/app`, "1");

    const pages = await walkPages<{ repositories: string[] }>("/v2/_catalog?n=1", (body) => body.repositories, user.authorization);

    expect(pages.flat()).toEqual([`${key}/open/app`, `${visible}/open/app`].sort());
  });

  it("needs read on the virtual name", async () => {
    const visible = await createRepository("visible");
    const key = await createVirtualRepository([visible]);
    const path = uniquePath();
    await pushImage(`${visible}/${path}`, "1.0");
    const user = await createUser("reader");
    await createTarget({ repositories: [visible], users: { [user.name]: ["read"] } });

    const response = await getAs(user, `/v2/${key}/${path}/manifests/1.0`);
    const catalog = await getAs(user, "/v2/_catalog");

    await expectRegistryError(response, 403, "DENIED");
    expect(((await catalog.json()) as { repositories: string[] }).repositories).toEqual([`${visible}/${path}`]);
  });

  it("challenges the anonymous user", async () => {
    const visible = await createRepository("visible");
    const key = await createVirtualRepository([visible]);

    const response = await anonymousFetch(`/v2/${key}/${uniquePath()}/manifests/1.0`);

    await expectRegistryError(response, 401, "UNAUTHORIZED");
    expect(response.headers.get("WWW-Authenticate")).toContain(`scope="repository:${key}/`);
  });

  it("serves anonymous reads of public members", async () => {
    const visible = await createRepository("visible");
    const key = await createVirtualRepository([visible]);
    const path = uniquePath();
    const pushed = await pushImage(`${visible}/${path}`, "1.0");
    await createTarget({ repositories: [key, visible], anonymous: ["read"] });

    const response = await anonymousFetch(`/v2/${key}/${path}/manifests/1.0`);

    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Content-Digest")).toBe(pushed.digest);
  });
});

describe("virtual remote member permissions", () => {
  it("skips a remote member without deploy", async () => {
    const remote = await createRemoteRepository();
    const key = await createVirtualRepository([remote]);
    const path = uniqueUpstreamPath();
    const user = await createUser("reader");
    await createTarget({ repositories: [key, remote], users: { [user.name]: ["read"] } });

    const response = await getAs(user, `/v2/${key}/${path}/manifests/latest`);

    await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
    expect(await upstreamCounts(path)).toEqual({});
  });

  it("fetches upstream with deploy", async () => {
    const remote = await createRemoteRepository();
    const key = await createVirtualRepository([remote]);
    const path = uniqueUpstreamPath();
    const user = await createUser("reader");
    await createTarget({ repositories: [key], users: { [user.name]: ["read"] } });
    await createTarget({ repositories: [remote], users: { [user.name]: ["read", "deploy"] } });

    const response = await getAs(user, `/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstream.manifest);
  });

  it("serves cached content with read only", async () => {
    const remote = await createRemoteRepository();
    const key = await createVirtualRepository([remote]);
    const path = uniqueUpstreamPath();
    await (await registryFetch(`/v2/${remote}/${path}/manifests/latest`)).arrayBuffer();
    const user = await createUser("reader");
    await createTarget({ repositories: [key, remote], users: { [user.name]: ["read"] } });

    const response = await getAs(user, `/v2/${key}/${path}/manifests/latest`);

    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Content-Digest")).toBe(upstream.manifestDigest);
  });
});

describe("virtual registry tokens", () => {
  it("pulls and pushes with a token for the virtual name", async () => {
    const deployment = await createRepository("local");
    const key = await createVirtualRepository([deployment], deployment);
    const user = await createUser("docker");
    await createTarget({ repositories: [key, deployment], users: { [user.name]: ["read", "deploy"] } });
    const name = `${key}/${uniquePath()}`;
    const token = await requestToken(user.authorization, [`repository:${name}:pull,push`]);
    const bearer = `Bearer ${token.token}`;
    const blobBytes = randomBytes(300);
    const blobDigest = await digestOf(blobBytes);

    const opened = await fetchAs(bearer, `/v2/${name}/blobs/uploads/`, { method: "POST" });
    const location = opened.headers.get("Location")!;
    const committed = await fetchAs(bearer, `${location}?digest=${blobDigest}`, { method: "PUT", body: blobBytes });
    const { config } = await pushImageBlobs(name);
    const manifest = oddlyFormatted(
      imageManifest(config, [{ mediaType: mediaTypes.ociLayer, digest: blobDigest, size: blobBytes.byteLength }]),
    );
    const put = await fetchAs(bearer, `/v2/${name}/manifests/1.0`, {
      method: "PUT",
      headers: { "Content-Type": mediaTypes.ociManifest },
      body: manifest,
    });
    const pulled = await fetchAs(bearer, `/v2/${name}/manifests/1.0`);

    expect(opened.status).toBe(202);
    expect(location.startsWith(`/v2/${name}/blobs/uploads/`)).toBe(true);
    expect(committed.status).toBe(201);
    expect(put.status).toBe(201);
    expect(pulled.status).toBe(200);
    expect(await readBytes(pulled)).toEqual(manifest);
  });

  it("does not reach members directly", async () => {
    const visible = await createRepository("visible");
    const key = await createVirtualRepository([visible]);
    const path = uniquePath();
    await pushImage(`${visible}/${path}`, "1.0");
    const user = await createUser("docker");
    await createTarget({ repositories: [key, visible], users: { [user.name]: ["read"] } });
    const token = await requestToken(user.authorization, [`repository:${key}/${path}:pull`]);

    const response = await fetchAs(`Bearer ${token.token}`, `/v2/${visible}/${path}/manifests/1.0`);

    await expectRegistryError(response, 401, "UNAUTHORIZED");
    expect(response.headers.get("WWW-Authenticate")).toContain('error="insufficient_scope"');
  });

  it("grants nothing without read on the virtual name", async () => {
    const visible = await createRepository("visible");
    const key = await createVirtualRepository([visible]);
    const user = await createUser("docker");
    await createTarget({ repositories: [visible], users: { [user.name]: ["read"] } });

    const response = await fetchAs(user.authorization, tokenPath([`repository:${key}/${uniquePath()}:pull`]));

    expect(response.status).toBe(200);
    const body = (await response.json()) as { token: string };
    expect(claimsOf(body.token).access).toEqual([]);
  });
});

describe("virtual access token scope", () => {
  /**
   * Sets up a virtual repository over one local member with a tagged image,
   * and an access token whose scope lists `scopeRepositories` for a user who
   * may read both repositories.
   */
  async function scopedReader(scopeRepositories: (key: string, member: string) => string[]) {
    const visible = await createRepository("visible");
    const key = await createVirtualRepository([visible]);
    const path = uniquePath();
    const pushed = await pushImage(`${visible}/${path}`, "1.0");
    const user = await createUser("scoped");
    await createTarget({ repositories: [key, visible], users: { [user.name]: ["read"] } });
    const secret = await insertAccessToken(user, { repositories: scopeRepositories(key, visible) });
    return { name: `${key}/${path}`, pushed, user, secret };
  }

  it("reaches no member outside the scope", async () => {
    const { name, secret } = await scopedReader((key) => [key]);

    const response = await registryFetch(`/v2/${name}/manifests/1.0`, { headers: { Authorization: `Bearer ${secret}` } });

    await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
  });

  it("reaches members inside the scope", async () => {
    const { name, pushed, secret } = await scopedReader((key, member) => [key, member]);

    const response = await registryFetch(`/v2/${name}/manifests/1.0`, { headers: { Authorization: `Bearer ${secret}` } });

    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Content-Digest")).toBe(pushed.digest);
  });

  it("keeps the scope through a registry token", async () => {
    const { name, user, secret } = await scopedReader((key) => [key]);
    const token = await requestToken(`Basic ${btoa(`${user.name}:${secret}`)}`, [`repository:${name}:pull`]);

    const response = await fetchAs(`Bearer ${token.token}`, `/v2/${name}/manifests/1.0`);

    expect(claimsOf(token.token).access).toEqual([{ type: "repository", name, actions: ["pull"] }]);
    await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
  });

  it("denies a push outside the scope", async () => {
    const deployment = await createRepository("local");
    const key = await createVirtualRepository([deployment], deployment);
    const user = await createUser("scoped");
    await createTarget({ repositories: [key, deployment], users: { [user.name]: ["read", "deploy"] } });
    const secret = await insertAccessToken(user, { repositories: [key] });

    const response = await registryFetch(`/v2/${key}/${uniquePath()}/blobs/uploads/`, {
      method: "POST",
      headers: { Authorization: `Bearer ${secret}` },
    });

    await expectRegistryError(response, 403, "DENIED");
  });
});
