import { describe, expect, it } from "vitest";
import { maxNameLength } from "../../src/names";
import { digestOf, expectRegistryError, registryFetch, uniqueImage } from "./helpers";
import { mediaTypes, pushImage, putManifest, putManifestOk, utf8 } from "./manifest-helpers";

const someDigest = `sha256:${"a".repeat(64)}`;
const someUploadId = "00000000-0000-4000-8000-000000000000";

/** One request per route that takes an image name, so every route checks the name first. */
function requestsFor(name: string): { label: string; path: string; init?: RequestInit }[] {
  return [
    { label: "GET tags", path: `/v2/${name}/tags/list` },
    { label: "GET manifest", path: `/v2/${name}/manifests/latest` },
    { label: "HEAD manifest", path: `/v2/${name}/manifests/latest`, init: { method: "HEAD" } },
    {
      label: "PUT manifest",
      path: `/v2/${name}/manifests/latest`,
      init: { method: "PUT", headers: { "Content-Type": mediaTypes.ociManifest }, body: "{}" },
    },
    { label: "DELETE manifest", path: `/v2/${name}/manifests/${someDigest}`, init: { method: "DELETE" } },
    { label: "GET blob", path: `/v2/${name}/blobs/${someDigest}` },
    { label: "DELETE blob", path: `/v2/${name}/blobs/${someDigest}`, init: { method: "DELETE" } },
    { label: "POST upload", path: `/v2/${name}/blobs/uploads/`, init: { method: "POST" } },
    { label: "GET upload", path: `/v2/${name}/blobs/uploads/${someUploadId}` },
    { label: "GET referrers", path: `/v2/${name}/referrers/${someDigest}` },
  ];
}

/** Checks the error of a response; HEAD responses have the status and Content-Type but no body. */
async function expectNameError(response: Response, method: string | undefined, status: number, code: "NAME_INVALID" | "NAME_UNKNOWN") {
  if (method === "HEAD") {
    expect(response.status).toBe(status);
    expect(response.headers.get("Content-Type")).toBe("application/json");
    return;
  }
  await expectRegistryError(response, status, code);
}

describe("image names", () => {
  const longPath = (length: number) => `docker-local/${"a".repeat(length - "docker-local/".length)}`;
  const invalidNames: [string, string][] = [
    ["uppercase in the path", "docker-local/App"],
    ["uppercase in the first component", "Docker-local/app"],
    ["all uppercase", "DOCKER-LOCAL/APP"],
    ["256 characters", longPath(256)],
    ["257 characters", longPath(257)],
    ["1,000 characters", longPath(1000)],
    ["an empty component", "docker-local//b"],
    ["a component starting with a dash", "docker-local/-b"],
    ["a component ending with a dash", "docker-local/b-"],
    ["three underscores", "docker-local/a___b"],
    ["double underscore then dash", "docker-local/a__-b"],
    ["a dot then dash", "docker-local/a.-b"],
    ["two dots", "docker-local/a..b"],
    ["a component starting with dots", "docker-local/..b"],
    ["a trailing slash", "docker-local/app/"],
    ["a leading slash", "/docker-local/app"],
    ["an encoded slash", "docker-local%2Fapp"],
    ["an encoded slash in the path", "docker-local/a%2Fb"],
    ["an encoded letter", "docker-local/%61pp"],
    ["an encoded space", "docker-local/a%20b"],
    ["a colon", "docker-local/app:latest"],
    ["a single component", "app"],
    ["a single repository key", "docker-local"],
  ];

  for (const [label, name] of invalidNames) {
    it(`rejects ${label} with NAME_INVALID on every route`, async () => {
      for (const request of requestsFor(name)) {
        const response = await registryFetch(request.path, request.init);
        await expectNameError(response, request.init?.method, 400, "NAME_INVALID");
      }
    });
  }

  it("rejects a dot segment, which URL parsing removes, with NAME_INVALID", async () => {
    // `/v2/docker-local/%2e%2e/app/...` reaches the Worker as `/v2/app/...`, a single component.
    const response = await registryFetch("/v2/docker-local/%2e%2e/app/tags/list");

    await expectRegistryError(response, 400, "NAME_INVALID");
  });

  it("accepts a name of the maximum length", async () => {
    const name = longPath(maxNameLength);
    expect(name).toHaveLength(255);

    const image = await pushImage(name, "latest");

    const response = await registryFetch(`/v2/${name}/manifests/latest`);
    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Content-Digest")).toBe(image.digest);
  });

  it("accepts every separator the grammar allows", async () => {
    for (const name of [
      "docker-local/a.b",
      "docker-local/a_b",
      "docker-local/a__b",
      "docker-local/a-b",
      "docker-local/a---b",
      "docker-local/a/b/c",
      "docker-local/0/9",
    ]) {
      const response = await registryFetch(`/v2/${name}/tags/list`);
      await expectRegistryError(response, 404, "NAME_UNKNOWN");
    }
  });

  it("returns NAME_UNKNOWN for a repository key that does not exist on every route", async () => {
    for (const request of requestsFor("no-such-repository/app")) {
      const response = await registryFetch(request.path, request.init);
      await expectNameError(response, request.init?.method, 404, "NAME_UNKNOWN");
    }
  });

  it("names the missing repository key in the NAME_UNKNOWN detail", async () => {
    const error = await expectRegistryError(await registryFetch("/v2/no-such-repository/team/app/tags/list"), 404, "NAME_UNKNOWN");

    expect(error.detail).toEqual({ repository: "no-such-repository" });
  });
});

describe("tags in manifest references", () => {
  const invalidTags: [string, string][] = [
    ["129 characters", "a".repeat(129)],
    ["a leading dot", ".hidden"],
    ["a leading dash", "-rc1"],
    ["a plus sign", "1.0+build"],
    ["a tilde", "v1~beta"],
    ["an encoded space", "v1%20beta"],
    ["an encoded slash", "v1%2Fbeta"],
    ["non-ASCII letters", "v%C3%A9"],
  ];

  for (const [label, tag] of invalidTags) {
    it(`rejects ${label} with TAG_INVALID`, async () => {
      const name = uniqueImage("tags");
      const image = await pushImage(name, "latest");

      await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${tag}`), 400, "TAG_INVALID");
      await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${tag}`, { method: "DELETE" }), 400, "TAG_INVALID");
      const { response } = await putManifest(name, tag, image.bytes, mediaTypes.ociManifest);
      await expectRegistryError(response, 400, "TAG_INVALID");
    });
  }

  it("rejects a malformed percent escape with TAG_INVALID", async () => {
    const name = uniqueImage("tags");
    const image = await pushImage(name, "latest");

    for (const tag of ["v1%zz", "v1%", "%E0%A4%A"]) {
      await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${tag}`), 400, "TAG_INVALID");
      await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${tag}`, { method: "DELETE" }), 400, "TAG_INVALID");
      const { response } = await putManifest(name, tag, image.bytes, mediaTypes.ociManifest);
      await expectRegistryError(response, 400, "TAG_INVALID");
    }
  });

  it("accepts tags at the edges of the grammar", async () => {
    const name = uniqueImage("edge-tags");
    const image = await pushImage(name, "latest");

    for (const tag of ["a".repeat(128), "_underscore", "0", "A", "v1.0-rc_1", "a..b", "a--b"]) {
      await putManifestOk(name, tag, image.bytes, mediaTypes.ociManifest);
      const response = await registryFetch(`/v2/${name}/manifests/${tag}`);
      expect(response.status, tag).toBe(200);
      expect(response.headers.get("Docker-Content-Digest")).toBe(image.digest);
    }
  });
});

describe("digests", () => {
  const hex = "0123456789abcdef".repeat(4);
  const invalidDigests: [string, string][] = [
    ["an md5 algorithm", `md5:${hex.slice(0, 32)}`],
    ["a sha1 algorithm", `sha1:${hex.slice(0, 40)}`],
    ["an uppercase algorithm", `SHA256:${hex}`],
    ["a missing algorithm", `:${hex}`],
    ["uppercase hex", `sha256:${hex.toUpperCase()}`],
    ["63 hex characters", `sha256:${hex.slice(1)}`],
    ["65 hex characters", `sha256:${hex}0`],
    ["a sha512 of sha256 length", `sha512:${hex}`],
    ["no hex", "sha256:"],
    ["non-hex letters", `sha256:${"g".repeat(64)}`],
  ];

  for (const [label, digest] of invalidDigests) {
    it(`rejects ${label} with DIGEST_INVALID on every digest route`, async () => {
      const name = uniqueImage("digests");
      const image = await pushImage(name, "latest");

      const requests: { label: string; path: string; init?: RequestInit }[] = [
        { label: "GET manifest", path: `/v2/${name}/manifests/${digest}` },
        { label: "DELETE manifest", path: `/v2/${name}/manifests/${digest}`, init: { method: "DELETE" } },
        {
          label: "PUT manifest",
          path: `/v2/${name}/manifests/${digest}`,
          init: { method: "PUT", headers: { "Content-Type": mediaTypes.ociManifest }, body: image.bytes },
        },
        { label: "GET blob", path: `/v2/${name}/blobs/${digest}` },
        { label: "DELETE blob", path: `/v2/${name}/blobs/${digest}`, init: { method: "DELETE" } },
        { label: "GET referrers", path: `/v2/${name}/referrers/${digest}` },
        { label: "POST upload with digest", path: `/v2/${name}/blobs/uploads/?digest=${digest}`, init: { method: "POST", body: "x" } },
      ];
      for (const request of requests) {
        const response = await registryFetch(request.path, request.init);
        expect(response.status, `${request.label} ${digest}`).toBe(400);
        await expectRegistryError(response, 400, "DIGEST_INVALID");
      }
    });
  }

  it("rejects a malformed percent escape with DIGEST_INVALID", async () => {
    const name = uniqueImage("digests");
    await pushImage(name, "latest");
    const digest = `sha256%3A${"a".repeat(62)}%zz`;

    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${digest}`), 400, "DIGEST_INVALID");
    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${digest}`, { method: "DELETE" }), 400, "DIGEST_INVALID");
    await expectRegistryError(await registryFetch(`/v2/${name}/referrers/${digest}`), 400, "DIGEST_INVALID");
    await expectRegistryError(await registryFetch(`/v2/${name}/blobs/${digest}`), 400, "DIGEST_INVALID");
  });

  it("accepts a digest with an encoded colon", async () => {
    const name = uniqueImage("digests");
    const image = await pushImage(name, "latest");
    const encoded = image.digest.replace(":", "%3A");

    const manifest = await registryFetch(`/v2/${name}/manifests/${encoded}`);
    expect(manifest.status).toBe(200);
    expect(manifest.headers.get("Docker-Content-Digest")).toBe(image.digest);
    expect((await registryFetch(`/v2/${name}/referrers/${encoded}`)).status).toBe(200);
  });

  it("accepts a valid digest that no manifest has", async () => {
    const name = uniqueImage("digests");
    await pushImage(name, "latest");

    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${await digestOf(utf8("absent"))}`), 404, "MANIFEST_UNKNOWN");
    await expectRegistryError(await registryFetch(`/v2/${name}/blobs/sha512:${"ab".repeat(64)}`), 404, "BLOB_UNKNOWN");
  });
});
