import { describe, expect, it } from "vitest";
import { digestOf, expectRegistryError, randomBytes, readBytes, registryFetch, streamOf, uniqueImage } from "./helpers";
import {
  d1MaxRowBytes,
  danglingTags,
  imageManifest,
  imageRowCounts,
  indexManifest,
  manifestRowBytes,
  manifestRowExists,
  mediaTypes,
  oddlyFormatted,
  pushBlob,
  pushEmptyConfig,
  pushImage,
  pushImageBlobs,
  putManifest,
  putManifestOk,
  utf8,
  type Descriptor,
} from "./manifest-helpers";

const maxManifestBytes = 4 * 1024 * 1024;

/** PUTs the bytes by tag and by digest, then checks both GETs serve them unchanged. */
async function expectStoredExactly(name: string, bytes: Uint8Array, contentType: string): Promise<string> {
  const digest = await digestOf(bytes);

  const byTag = await putManifestOk(name, "v1", bytes, contentType);
  expect(byTag.response.headers.get("Docker-Content-Digest")).toBe(digest);
  expect(byTag.response.headers.get("Location")).toBe(`/v2/${name}/manifests/${digest}`);

  const byDigest = await putManifestOk(name, digest, bytes, contentType);
  expect(byDigest.response.headers.get("Docker-Content-Digest")).toBe(digest);

  for (const reference of ["v1", digest]) {
    const response = await registryFetch(`/v2/${name}/manifests/${reference}`, { headers: { Accept: contentType } });
    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Type")).toBe(contentType);
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    const served = await readBytes(response);
    expect(served).toEqual(bytes);
    expect(await digestOf(served)).toBe(digest);
  }
  return digest;
}

describe("manifest PUT of each media type", () => {
  it("stores a Docker schema 2 manifest byte for byte", async () => {
    const name = uniqueImage("docker-v2");
    const { config, layer } = await pushImageBlobs(name, mediaTypes.dockerConfig, mediaTypes.dockerLayer);
    const bytes = oddlyFormatted(imageManifest(config, [layer], {}, mediaTypes.dockerManifest));

    await expectStoredExactly(name, bytes, mediaTypes.dockerManifest);
  });

  it("stores a Docker manifest list byte for byte", async () => {
    const name = uniqueImage("docker-list");
    const children: Descriptor[] = [];
    for (const architecture of ["amd64", "arm64"]) {
      const { config, layer } = await pushImageBlobs(name, mediaTypes.dockerConfig, mediaTypes.dockerLayer);
      const child = oddlyFormatted(imageManifest(config, [layer], {}, mediaTypes.dockerManifest));
      const { digest } = await putManifestOk(name, await digestOf(child), child, mediaTypes.dockerManifest);
      children.push({ mediaType: mediaTypes.dockerManifest, digest, size: child.byteLength, platform: { architecture, os: "linux" } });
    }
    const bytes = oddlyFormatted(indexManifest(children, {}, mediaTypes.dockerManifestList));

    await expectStoredExactly(name, bytes, mediaTypes.dockerManifestList);
  });

  it("stores an OCI image manifest byte for byte", async () => {
    const name = uniqueImage("oci-image");
    const { config, layer } = await pushImageBlobs(name);
    const bytes = oddlyFormatted(imageManifest(config, [layer], { annotations: { "org.opencontainers.image.title": "odd  spacing" } }));

    await expectStoredExactly(name, bytes, mediaTypes.ociManifest);
  });

  it("stores an OCI index byte for byte", async () => {
    const name = uniqueImage("oci-index");
    const child = await pushImage(name, "child");
    const bytes = oddlyFormatted(
      indexManifest(
        [{ mediaType: child.mediaType, digest: child.digest, size: child.size, platform: { architecture: "amd64", os: "linux" } }],
        {
          annotations: { "org.opencontainers.image.ref.name": "index" },
        },
      ),
    );

    await expectStoredExactly(name, bytes, mediaTypes.ociIndex);
  });

  it("stores an OCI artifact with artifactType and empty config", async () => {
    const name = uniqueImage("oci-artifact");
    const config = await pushEmptyConfig(name);
    expect(config.digest).toBe("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
    const payload = await pushBlob(name, utf8("signature payload"), "application/vnd.example.signature.v1+json");
    const bytes = oddlyFormatted(imageManifest(config, [payload], { artifactType: "application/vnd.example.signature.v1" }));

    await expectStoredExactly(name, bytes, mediaTypes.ociManifest);
  });

  it("stores an OCI artifact with a Helm config media type", async () => {
    const name = uniqueImage("helm-chart");
    const config = await pushBlob(name, utf8('{"name":"chart","version":"1.0.0"}'), mediaTypes.helmConfig);
    const chart = await pushBlob(name, randomBytes(512), mediaTypes.helmChart);
    const bytes = oddlyFormatted(imageManifest(config, [chart]));

    await expectStoredExactly(name, bytes, mediaTypes.ociManifest);
  });

  it("accepts an OCI manifest without mediaType, typed by Content-Type", async () => {
    const name = uniqueImage("no-media-type");
    const { config, layer } = await pushImageBlobs(name);
    const { mediaType: _, ...manifest } = imageManifest(config, [layer]);
    const bytes = oddlyFormatted(manifest);

    const { digest } = await putManifestOk(name, "v1", bytes, mediaTypes.ociManifest);

    const response = await registryFetch(`/v2/${name}/manifests/${digest}`);
    expect(response.headers.get("Content-Type")).toBe(mediaTypes.ociManifest);
    expect(await readBytes(response)).toEqual(bytes);
  });

  it("accepts a sha512 digest reference", async () => {
    const name = uniqueImage("sha512");
    const { config, layer } = await pushImageBlobs(name);
    const bytes = oddlyFormatted(imageManifest(config, [layer]));
    const hash = new Uint8Array(await crypto.subtle.digest("SHA-512", bytes));
    const digest = `sha512:${[...hash].map((byte) => byte.toString(16).padStart(2, "0")).join("")}`;

    const { response } = await putManifest(name, digest, bytes, mediaTypes.ociManifest);
    expect(response.status).toBe(201);
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);

    const served = await registryFetch(`/v2/${name}/manifests/${digest}`);
    expect(served.status).toBe(200);
    expect(await readBytes(served)).toEqual(bytes);
  });
});

describe("manifest references", () => {
  it("rejects a config that was never uploaded", async () => {
    const name = uniqueImage("missing-config");
    const { layer } = await pushImageBlobs(name);
    const config: Descriptor = { mediaType: mediaTypes.ociConfig, digest: await digestOf(utf8("never uploaded")), size: 14 };

    const { response } = await putManifest(name, "v1", oddlyFormatted(imageManifest(config, [layer])), mediaTypes.ociManifest);

    const error = await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
    expect(error.detail).toEqual({ digest: config.digest });
  });

  it("rejects a layer that was never uploaded", async () => {
    const name = uniqueImage("missing-layer");
    const { config, layer } = await pushImageBlobs(name);
    const missing: Descriptor = { mediaType: mediaTypes.ociLayer, digest: await digestOf(utf8(crypto.randomUUID())), size: 36 };

    const { response } = await putManifest(name, "v1", oddlyFormatted(imageManifest(config, [layer, missing])), mediaTypes.ociManifest);

    await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
  });

  it("rejects a blob that only another image has", async () => {
    const owner = uniqueImage("blob-owner");
    const name = uniqueImage("blob-borrower");
    const { config, layer } = await pushImageBlobs(owner);

    const { response, digest } = await putManifest(name, "v1", oddlyFormatted(imageManifest(config, [layer])), mediaTypes.ociManifest);

    await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
    expect(await imageRowCounts(name)).toEqual({ images: 0, manifests: 0, tags: 0 });
    expect(await manifestRowExists(digest)).toBe(false);
  });

  it("rejects a blob of another image with the same path prefix", async () => {
    const owner = uniqueImage("prefix");
    const name = `${owner}-suffix`;
    const { config, layer } = await pushImageBlobs(owner);
    await pushBlob(name, utf8("unrelated"), mediaTypes.ociLayer);

    const { response } = await putManifest(name, "v1", oddlyFormatted(imageManifest(config, [layer])), mediaTypes.ociManifest);

    await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
  });

  it("rejects a config whose size differs from the blob", async () => {
    const name = uniqueImage("config-size");
    const { config, layer } = await pushImageBlobs(name);
    const wrong: Descriptor = { ...config, size: config.size + 1 };

    const { response, digest } = await putManifest(name, "v1", oddlyFormatted(imageManifest(wrong, [layer])), mediaTypes.ociManifest);

    const error = await expectRegistryError(response, 400, "MANIFEST_INVALID");
    expect(error.message).toContain(config.digest);
    expect(error.message).toContain(`size ${config.size + 1}`);
    expect(error.message).toContain(`${config.size} bytes`);
    expect(error.detail).toEqual({ digest: config.digest, size: config.size + 1, storedSize: config.size });
    expect(await manifestRowExists(digest)).toBe(false);
  });

  it("rejects a layer whose size differs from the blob", async () => {
    const name = uniqueImage("layer-size");
    const { config, layer } = await pushImageBlobs(name);
    const wrong: Descriptor = { ...layer, size: 0 };

    const { response, digest } = await putManifest(name, "v1", oddlyFormatted(imageManifest(config, [wrong])), mediaTypes.ociManifest);

    const error = await expectRegistryError(response, 400, "MANIFEST_INVALID");
    expect(error.detail).toEqual({ digest: layer.digest, size: 0, storedSize: layer.size });
    expect(await imageRowCounts(name)).toEqual({ images: 1, manifests: 0, tags: 0 });
    expect(await manifestRowExists(digest)).toBe(false);
  });

  it("rejects a layer listed twice with one wrong size", async () => {
    const name = uniqueImage("repeated-layer-size");
    const { config, layer } = await pushImageBlobs(name);
    const wrong: Descriptor = { ...layer, size: layer.size * 2 };

    const { response } = await putManifest(name, "v1", oddlyFormatted(imageManifest(config, [layer, wrong])), mediaTypes.ociManifest);

    const error = await expectRegistryError(response, 400, "MANIFEST_INVALID");
    expect(error.detail).toEqual({ digest: layer.digest, size: layer.size * 2, storedSize: layer.size });
  });

  it("accepts non-distributable layers with URLs that were never uploaded", async () => {
    const name = uniqueImage("foreign-layer");
    const { config, layer } = await pushImageBlobs(name);
    const foreign = {
      mediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      digest: await digestOf(utf8("foreign layer")),
      size: 13,
      urls: ["https://example.com/layer.tar.gz"],
    };

    const { response } = await putManifest(name, "v1", oddlyFormatted(imageManifest(config, [layer, foreign])), mediaTypes.ociManifest);

    expect(response.status).toBe(201);
  });

  it("rejects an index whose child manifest does not exist", async () => {
    const name = uniqueImage("index-missing-child");
    const child: Descriptor = { mediaType: mediaTypes.ociManifest, digest: await digestOf(utf8(crypto.randomUUID())), size: 100 };

    const { response, digest } = await putManifest(name, "v1", oddlyFormatted(indexManifest([child])), mediaTypes.ociIndex);

    const error = await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
    expect(error.detail).toEqual({ digest: child.digest });
    expect(await imageRowCounts(name)).toEqual({ images: 0, manifests: 0, tags: 0 });
    expect(await manifestRowExists(digest)).toBe(false);
  });

  it("rejects an index whose child exists only in another image", async () => {
    const owner = uniqueImage("child-owner");
    const name = uniqueImage("child-borrower");
    const child = await pushImage(owner, "v1");

    const { response } = await putManifest(name, "v1", oddlyFormatted(indexManifest([child])), mediaTypes.ociIndex);

    await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
    expect(await imageRowCounts(name)).toEqual({ images: 0, manifests: 0, tags: 0 });
  });

  it("rejects a Docker manifest list whose child does not exist", async () => {
    const name = uniqueImage("list-missing-child");
    const existing = await pushImage(name, "existing");
    const missing: Descriptor = { mediaType: mediaTypes.dockerManifest, digest: await digestOf(utf8(crypto.randomUUID())), size: 100 };
    const bytes = oddlyFormatted(indexManifest([existing, missing], {}, mediaTypes.dockerManifestList));

    const { response, digest } = await putManifest(name, "list", bytes, mediaTypes.dockerManifestList);

    await expectRegistryError(response, 400, "MANIFEST_BLOB_UNKNOWN");
    expect(await manifestRowExists(digest)).toBe(false);
    expect(await imageRowCounts(name)).toEqual({ images: 1, manifests: 1, tags: 1 });
  });
});

describe("invalid manifests", () => {
  it("rejects a digest reference that does not match the content", async () => {
    const name = uniqueImage("digest-mismatch");
    const { config, layer } = await pushImageBlobs(name);
    const bytes = oddlyFormatted(imageManifest(config, [layer]));
    const wrong = await digestOf(utf8("other content"));

    const { response, digest } = await putManifest(name, wrong, bytes, mediaTypes.ociManifest);

    const error = await expectRegistryError(response, 400, "DIGEST_INVALID");
    expect(error.detail).toEqual({ expected: wrong, actual: digest });
    expect(await manifestRowExists(digest)).toBe(false);
    expect(await manifestRowExists(wrong)).toBe(false);
  });

  const invalidBodies: { case: string; body: string | Uint8Array; contentType: string }[] = [
    { case: "not JSON", body: "{ this is not json", contentType: mediaTypes.ociManifest },
    { case: "invalid UTF-8", body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), contentType: mediaTypes.ociManifest },
    { case: "a JSON array", body: "[]", contentType: mediaTypes.ociManifest },
    { case: "a JSON string", body: '"manifest"', contentType: mediaTypes.ociManifest },
    { case: "an empty body", body: "", contentType: mediaTypes.ociManifest },
    {
      case: "a missing config",
      body: JSON.stringify({ schemaVersion: 2, mediaType: mediaTypes.ociManifest, layers: [] }),
      contentType: mediaTypes.ociManifest,
    },
    {
      case: "layers not an array",
      body: JSON.stringify({
        schemaVersion: 2,
        mediaType: mediaTypes.ociManifest,
        config: { mediaType: mediaTypes.ociConfig, digest: `sha256:${"a".repeat(64)}`, size: 2 },
        layers: {},
      }),
      contentType: mediaTypes.ociManifest,
    },
    {
      case: "schemaVersion 3",
      body: JSON.stringify({
        schemaVersion: 3,
        mediaType: mediaTypes.ociManifest,
        config: { mediaType: mediaTypes.ociConfig, digest: `sha256:${"a".repeat(64)}`, size: 2 },
        layers: [],
      }),
      contentType: mediaTypes.ociManifest,
    },
    {
      case: "a negative size",
      body: JSON.stringify({
        schemaVersion: 2,
        mediaType: mediaTypes.ociManifest,
        config: { mediaType: mediaTypes.ociConfig, digest: `sha256:${"a".repeat(64)}`, size: -1 },
        layers: [],
      }),
      contentType: mediaTypes.ociManifest,
    },
    {
      case: "a malformed descriptor digest",
      body: JSON.stringify({
        schemaVersion: 2,
        mediaType: mediaTypes.ociManifest,
        config: { mediaType: mediaTypes.ociConfig, digest: "not a digest", size: 2 },
        layers: [],
      }),
      contentType: mediaTypes.ociManifest,
    },
    {
      case: "an index without manifests",
      body: JSON.stringify({ schemaVersion: 2, mediaType: mediaTypes.ociIndex }),
      contentType: mediaTypes.ociIndex,
    },
    {
      case: "a non-string annotation",
      body: JSON.stringify({ schemaVersion: 2, mediaType: mediaTypes.ociIndex, manifests: [], annotations: { count: 3 } }),
      contentType: mediaTypes.ociIndex,
    },
    {
      case: "a mediaType contradicting Content-Type",
      body: JSON.stringify({ schemaVersion: 2, mediaType: mediaTypes.ociIndex, manifests: [] }),
      contentType: mediaTypes.dockerManifestList,
    },
    {
      case: "a Docker mediaType sent as an OCI manifest",
      body: JSON.stringify({
        schemaVersion: 2,
        mediaType: mediaTypes.dockerManifest,
        config: { mediaType: mediaTypes.dockerConfig, digest: `sha256:${"a".repeat(64)}`, size: 2 },
        layers: [],
      }),
      contentType: mediaTypes.ociManifest,
    },
    {
      case: "Docker schema 1 by mediaType",
      body: JSON.stringify({
        schemaVersion: 1,
        mediaType: "application/vnd.docker.distribution.manifest.v1+prettyjws",
        name: "app",
        tag: "v1",
        fsLayers: [],
        history: [],
      }),
      contentType: "application/vnd.docker.distribution.manifest.v1+prettyjws",
    },
    {
      case: "Docker schema 1 without mediaType",
      body: JSON.stringify({
        schemaVersion: 1,
        name: "app",
        tag: "v1",
        architecture: "amd64",
        fsLayers: [{ blobSum: `sha256:${"a".repeat(64)}` }],
        history: [],
      }),
      contentType: "application/vnd.docker.distribution.manifest.v1+json",
    },
    {
      case: "an unknown mediaType",
      body: JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.example.thing+json", manifests: [] }),
      contentType: "application/vnd.example.thing+json",
    },
  ];

  for (const invalid of invalidBodies) {
    it(`rejects ${invalid.case} with MANIFEST_INVALID`, async () => {
      const name = uniqueImage("invalid");
      const bytes = typeof invalid.body === "string" ? utf8(invalid.body) : invalid.body;

      const { response, digest } = await putManifest(name, "v1", bytes, invalid.contentType);

      await expectRegistryError(response, 400, "MANIFEST_INVALID");
      expect(await imageRowCounts(name)).toEqual({ images: 0, manifests: 0, tags: 0 });
      expect(await manifestRowExists(digest)).toBe(false);
    });
  }

  it("rejects media types and digests too long to index", async () => {
    // RFC 6838 allows 127 characters for each of type and subtype, so no valid media type exceeds 255.
    const name = uniqueImage("long-fields");
    const { config, layer } = await pushImageBlobs(name);
    const longType = `application/vnd.${"x".repeat(3 * 1024 * 1024)}`;
    const subject = { mediaType: mediaTypes.ociManifest, digest: `sha256:${"a".repeat(300)}`, size: 1 };
    const cases: Record<string, unknown>[] = [
      imageManifest(config, [layer], { artifactType: longType }),
      imageManifest({ ...config, mediaType: longType }, [layer]),
      imageManifest(config, [{ ...layer, mediaType: `application/${"x".repeat(250)}` }]),
      imageManifest(config, [layer], { subject }),
      indexManifest([], { artifactType: longType }),
    ];

    for (const manifest of cases) {
      const bytes = utf8(JSON.stringify(manifest));
      const { response, digest } = await putManifest(name, "v1", bytes, String(manifest.mediaType));
      await expectRegistryError(response, 400, "MANIFEST_INVALID");
      expect(await manifestRowExists(digest)).toBe(false);
    }
  });

  it("accepts an artifactType of 255 characters", async () => {
    const name = uniqueImage("long-artifact-type");
    const config = await pushEmptyConfig(name);
    const artifactType = `application/${"x".repeat(255 - "application/".length)}`;

    const { digest } = await putManifestOk(
      name,
      "v1",
      oddlyFormatted(imageManifest(config, [config], { artifactType })),
      mediaTypes.ociManifest,
    );

    expect(await manifestRowBytes(digest)).toBeLessThan(d1MaxRowBytes);
  });

  it("lists schema issues in the error detail", async () => {
    const name = uniqueImage("issues");
    const bytes = utf8(JSON.stringify({ schemaVersion: 2, mediaType: mediaTypes.ociManifest, layers: [] }));

    const { response } = await putManifest(name, "v1", bytes, mediaTypes.ociManifest);

    const error = await expectRegistryError(response, 400, "MANIFEST_INVALID");
    const detail = error.detail as { issues: { path: string; message: string }[] };
    expect(detail.issues.map((issue) => issue.path)).toContain("config");
  });

  it("leaves an existing tag alone when a PUT to it is rejected", async () => {
    const name = uniqueImage("keep-tag");
    const original = await pushImage(name, "stable");

    const { response } = await putManifest(name, "stable", utf8("{"), mediaTypes.ociManifest);
    await expectRegistryError(response, 400, "MANIFEST_INVALID");

    const current = await registryFetch(`/v2/${name}/manifests/stable`);
    expect(current.headers.get("Docker-Content-Digest")).toBe(original.digest);
    expect(await imageRowCounts(name)).toEqual({ images: 1, manifests: 1, tags: 1 });
  });
});

describe("manifest size limit", () => {
  /** An OCI manifest of exactly `size` bytes, padded by one annotation. */
  function paddedManifest(config: Descriptor, layer: Descriptor, size: number): Uint8Array {
    const build = (padding: string) => utf8(JSON.stringify(imageManifest(config, [layer], { annotations: { padding } })));
    const overhead = build("").byteLength;
    const bytes = build("x".repeat(size - overhead));
    expect(bytes.byteLength).toBe(size);
    return bytes;
  }

  it("accepts a manifest of exactly 4 MiB", async () => {
    const name = uniqueImage("four-mib");
    const { config, layer } = await pushImageBlobs(name);
    const bytes = paddedManifest(config, layer, maxManifestBytes);

    const { response, digest } = await putManifest(name, "big", bytes, mediaTypes.ociManifest);
    expect(response.status).toBe(201);

    expect(await manifestRowBytes(digest)).toBeLessThan(d1MaxRowBytes);

    const served = await registryFetch(`/v2/${name}/manifests/big`);
    expect(served.status).toBe(200);
    expect(served.headers.get("Content-Length")).toBe(String(maxManifestBytes));
    expect(served.headers.get("Docker-Content-Digest")).toBe(digest);
    expect(await readBytes(served)).toEqual(bytes);
  });

  it("rejects one byte over 4 MiB with 413", async () => {
    const name = uniqueImage("too-big");
    const { config, layer } = await pushImageBlobs(name);
    const bytes = paddedManifest(config, layer, maxManifestBytes + 1);

    const { response, digest } = await putManifest(name, "big", bytes, mediaTypes.ociManifest);

    await expectRegistryError(response, 413, "MANIFEST_TOO_LARGE");
    expect(await manifestRowExists(digest)).toBe(false);
  });

  it("rejects one byte over 4 MiB streamed without Content-Length", async () => {
    const name = uniqueImage("too-big-stream");
    const { config, layer } = await pushImageBlobs(name);
    const bytes = paddedManifest(config, layer, maxManifestBytes + 1);
    const chunks = Array.from({ length: Math.ceil(bytes.byteLength / 65_536) }, (_, i) => bytes.slice(i * 65_536, (i + 1) * 65_536));
    const body = streamOf(...chunks);

    const response = await registryFetch(`/v2/${name}/manifests/big`, {
      method: "PUT",
      headers: { "Content-Type": mediaTypes.ociManifest },
      body,
    });

    await expectRegistryError(response, 413, "MANIFEST_TOO_LARGE");
  });
});

describe("manifest GET and HEAD", () => {
  async function pushedImage() {
    const name = uniqueImage("negotiate");
    const pushed = await pushImage(name, "latest");
    return { name, ...pushed };
  }

  for (const method of ["GET", "HEAD"] as const) {
    for (const reference of ["tag", "digest"] as const) {
      it(`${method} by ${reference} sends the manifest headers`, async () => {
        const image = await pushedImage();
        const ref = reference === "tag" ? "latest" : image.digest;

        const response = await registryFetch(`/v2/${image.name}/manifests/${ref}`, { method, headers: { Accept: mediaTypes.ociManifest } });

        expect(response.status).toBe(200);
        expect(response.headers.get("Content-Type")).toBe(mediaTypes.ociManifest);
        expect(response.headers.get("Content-Length")).toBe(String(image.size));
        expect(response.headers.get("Docker-Content-Digest")).toBe(image.digest);
        expect(response.headers.get("ETag")).toBe(`"${image.digest}"`);
        const body = await readBytes(response);
        expect(body).toEqual(method === "GET" ? image.bytes : new Uint8Array(0));
      });
    }

    it(`${method} with a non-matching Accept returns 404`, async () => {
      const image = await pushedImage();
      const accept = [mediaTypes.dockerManifest, mediaTypes.dockerManifestList, mediaTypes.ociIndex].join(", ");

      const response = await registryFetch(`/v2/${image.name}/manifests/latest`, { method, headers: { Accept: accept } });

      expect(response.status).toBe(404);
      expect(response.headers.get("Content-Type")).toBe("application/json");
      if (method === "GET") await expectRegistryError(response, 404, "MANIFEST_UNKNOWN");
    });

    const acceptedHeaders: [string, Record<string, string>][] = [
      ["no Accept", {}],
      ["Accept */*", { Accept: "*/*" }],
      ["Accept application/*", { Accept: "application/*" }],
      ["the type among others with parameters", { Accept: `${mediaTypes.dockerManifest}, ${mediaTypes.ociManifest};q=0.9` }],
    ];
    for (const [label, headers] of acceptedHeaders) {
      it(`${method} with ${label} gets the manifest`, async () => {
        const image = await pushedImage();

        const response = await registryFetch(`/v2/${image.name}/manifests/latest`, { method, headers });

        expect(response.status).toBe(200);
        expect(response.headers.get("Content-Type")).toBe(mediaTypes.ociManifest);
        expect(response.headers.get("Docker-Content-Digest")).toBe(image.digest);
      });
    }

    for (const reference of ["tag", "digest"] as const) {
      it(`${method} by ${reference} returns 304 to a matching If-None-Match`, async () => {
        const image = await pushedImage();
        const ref = reference === "tag" ? "latest" : image.digest;

        const matching = await registryFetch(`/v2/${image.name}/manifests/${ref}`, {
          method,
          headers: { "If-None-Match": `"${image.digest}"` },
        });
        expect(matching.status).toBe(304);
        expect(matching.headers.get("ETag")).toBe(`"${image.digest}"`);
        expect(matching.headers.get("Docker-Content-Digest")).toBe(image.digest);
        expect((await readBytes(matching)).byteLength).toBe(0);

        const other = await registryFetch(`/v2/${image.name}/manifests/${ref}`, {
          method,
          headers: { "If-None-Match": `"sha256:${"0".repeat(64)}"` },
        });
        expect(other.status).toBe(200);
      });
    }
  }

  it("returns MANIFEST_UNKNOWN for an unknown tag and digest", async () => {
    const image = await pushedImage();

    await expectRegistryError(await registryFetch(`/v2/${image.name}/manifests/missing`), 404, "MANIFEST_UNKNOWN");
    await expectRegistryError(await registryFetch(`/v2/${image.name}/manifests/sha256:${"0".repeat(64)}`), 404, "MANIFEST_UNKNOWN");
  });

  it("does not serve a manifest of another image by digest", async () => {
    const image = await pushedImage();
    const other = uniqueImage("other");
    await pushImage(other, "latest");

    await expectRegistryError(await registryFetch(`/v2/${other}/manifests/${image.digest}`), 404, "MANIFEST_UNKNOWN");
  });
});

describe("manifest DELETE", () => {
  it("by digest removes the manifest and its tags", async () => {
    const name = uniqueImage("delete-digest");
    const pushed = await pushImage(name, "one");
    await putManifestOk(name, "two", pushed.bytes, mediaTypes.ociManifest);
    const other = await pushImage(name, "three");

    const response = await registryFetch(`/v2/${name}/manifests/${pushed.digest}`, { method: "DELETE" });
    expect(response.status).toBe(202);

    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${pushed.digest}`), 404, "MANIFEST_UNKNOWN");
    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/one`), 404, "MANIFEST_UNKNOWN");
    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/two`), 404, "MANIFEST_UNKNOWN");
    const tags = (await (await registryFetch(`/v2/${name}/tags/list`)).json()) as { tags: string[] };
    expect(tags.tags).toEqual(["three"]);
    expect((await registryFetch(`/v2/${name}/manifests/${other.digest}`)).status).toBe(200);

    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/${pushed.digest}`, { method: "DELETE" }), 404, "MANIFEST_UNKNOWN");
  });

  it("by tag removes only the tag", async () => {
    const name = uniqueImage("delete-tag");
    const pushed = await pushImage(name, "one");
    await putManifestOk(name, "two", pushed.bytes, mediaTypes.ociManifest);

    const response = await registryFetch(`/v2/${name}/manifests/one`, { method: "DELETE" });
    expect(response.status).toBe(202);

    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/one`), 404, "MANIFEST_UNKNOWN");
    const byDigest = await registryFetch(`/v2/${name}/manifests/${pushed.digest}`);
    expect(byDigest.status).toBe(200);
    expect(await readBytes(byDigest)).toEqual(pushed.bytes);
    expect((await registryFetch(`/v2/${name}/manifests/two`)).status).toBe(200);

    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/one`, { method: "DELETE" }), 404, "MANIFEST_UNKNOWN");
  });
});

describe("concurrent tag pushes", () => {
  it("leave the tag on one of the pushed manifests", async () => {
    const name = uniqueImage("race");
    const { config, layer } = await pushImageBlobs(name);
    const bodies = Array.from({ length: 24 }, (_, i) =>
      oddlyFormatted(imageManifest(config, [layer], { annotations: { attempt: String(i) } })),
    );
    const digests = await Promise.all(bodies.map((bytes) => digestOf(bytes)));

    const responses = await Promise.all(
      bodies.map((bytes) =>
        registryFetch(`/v2/${name}/manifests/latest`, { method: "PUT", headers: { "Content-Type": mediaTypes.ociManifest }, body: bytes }),
      ),
    );

    for (const response of responses) expect(response.status, await response.text()).toBe(201);

    const tagged = await registryFetch(`/v2/${name}/manifests/latest`);
    expect(tagged.status).toBe(200);
    const taggedDigest = tagged.headers.get("Docker-Content-Digest")!;
    expect(digests).toContain(taggedDigest);
    expect(await readBytes(tagged)).toEqual(bodies[digests.indexOf(taggedDigest)]);

    for (const digest of digests) expect(await manifestRowExists(digest)).toBe(true);
    expect(await imageRowCounts(name)).toEqual({ images: 1, manifests: bodies.length, tags: 1 });
  });

  it("with concurrent deletes never leave a tag on a missing manifest", async () => {
    const name = uniqueImage("race-delete");
    const { config, layer } = await pushImageBlobs(name);
    const bodies = Array.from({ length: 16 }, (_, i) =>
      oddlyFormatted(imageManifest(config, [layer], { annotations: { attempt: String(i) } })),
    );
    const digests = await Promise.all(bodies.map((bytes) => digestOf(bytes)));
    const tagOf = (i: number) => `tag-${i % 4}`;

    const requests = bodies.flatMap((bytes, i) => [
      registryFetch(`/v2/${name}/manifests/${tagOf(i)}`, {
        method: "PUT",
        headers: { "Content-Type": mediaTypes.ociManifest },
        body: bytes,
      }),
      registryFetch(`/v2/${name}/manifests/${digests[i]}`, { method: "DELETE" }),
    ]);
    const responses = await Promise.all(requests);

    for (const [i, response] of responses.entries()) {
      const expected = i % 2 === 0 ? [201] : [202, 404];
      expect(expected, `request ${i}: ${response.status} ${await response.text()}`).toContain(response.status);
    }
    expect(await danglingTags()).toEqual([]);

    for (let i = 0; i < 4; i++) {
      const response = await registryFetch(`/v2/${name}/manifests/${tagOf(i)}`);
      expect([200, 404]).toContain(response.status);
      await response.arrayBuffer();
    }
  });

  it("keeps every tag on an existing manifest across all images", async () => {
    expect(await danglingTags()).toEqual([]);
  });
});
