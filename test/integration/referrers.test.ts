import { describe, expect, it } from "vitest";
import { digestOf, expectRegistryError, registryFetch, uniqueImage } from "./helpers";
import {
  d1MaxRowBytes,
  imageManifest,
  indexManifest,
  manifestRowBytes,
  mediaTypes,
  oddlyFormatted,
  pushBlob,
  pushEmptyConfig,
  pushImage,
  putManifest,
  putManifestOk,
  utf8,
  type Descriptor,
} from "./manifest-helpers";

const signatureType = "application/vnd.example.signature.v1";
const sbomType = "application/spdx+json";

interface ReferrersIndex {
  schemaVersion: number;
  mediaType: string;
  manifests: Descriptor[];
}

function descriptorOf(manifest: Descriptor): Descriptor {
  return { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.size };
}

/** Pushes an artifact with an empty config whose subject is `subject`, by digest. */
async function pushReferrer(name: string, subject: Descriptor, artifactType: string, annotations: Record<string, string>) {
  const config = await pushEmptyConfig(name);
  const payload = await pushBlob(name, utf8(`${artifactType} ${crypto.randomUUID()}`), "application/vnd.example.payload.v1");
  const bytes = oddlyFormatted(imageManifest(config, [payload], { artifactType, subject: descriptorOf(subject), annotations }));
  const digest = await digestOf(bytes);
  const { response } = await putManifestOk(name, digest, bytes, mediaTypes.ociManifest);
  return { response, descriptor: { mediaType: mediaTypes.ociManifest, digest, size: bytes.byteLength } };
}

async function listReferrers(name: string, digest: string, query = ""): Promise<{ response: Response; index: ReferrersIndex }> {
  const response = await registryFetch(`/v2/${name}/referrers/${digest}${query}`);
  expect(response.status).toBe(200);
  expect(response.headers.get("Content-Type")).toBe(mediaTypes.ociIndex);
  const index = (await response.json()) as ReferrersIndex;
  expect(index.schemaVersion).toBe(2);
  expect(index.mediaType).toBe(mediaTypes.ociIndex);
  return { response, index };
}

describe("manifest PUT with a subject", () => {
  it("accepts a subject that does not exist and sends OCI-Subject", async () => {
    const name = uniqueImage("dangling-subject");
    const subject: Descriptor = { mediaType: mediaTypes.ociManifest, digest: await digestOf(utf8(crypto.randomUUID())), size: 123 };

    const { response, descriptor } = await pushReferrer(name, subject, signatureType, { "org.example.signer": "ci" });

    expect(response.status).toBe(201);
    expect(response.headers.get("OCI-Subject")).toBe(subject.digest);
    const { index } = await listReferrers(name, subject.digest);
    expect(index.manifests.map((entry) => entry.digest)).toEqual([descriptor.digest]);
  });

  it("sends OCI-Subject for an existing subject pushed by tag", async () => {
    const name = uniqueImage("tagged-referrer");
    const subject = await pushImage(name, "latest");
    const config = await pushEmptyConfig(name);
    const bytes = oddlyFormatted(imageManifest(config, [config], { artifactType: signatureType, subject: descriptorOf(subject) }));

    const { response } = await putManifestOk(name, "signature", bytes, mediaTypes.ociManifest);

    expect(response.headers.get("OCI-Subject")).toBe(subject.digest);
  });

  it("sends no OCI-Subject for a manifest without subject", async () => {
    const name = uniqueImage("no-subject");
    const config = await pushEmptyConfig(name);
    const bytes = oddlyFormatted(imageManifest(config, [config], { artifactType: signatureType }));

    const { response } = await putManifestOk(name, "plain", bytes, mediaTypes.ociManifest);

    expect(response.headers.get("OCI-Subject")).toBeNull();
  });
});

describe("referrers list", () => {
  it("is an empty OCI index when nothing refers to the digest", async () => {
    const name = uniqueImage("no-referrers");
    const subject = await pushImage(name, "latest");

    const { response, index } = await listReferrers(name, subject.digest);

    expect(index.manifests).toEqual([]);
    expect(response.headers.get("OCI-Filters-Applied")).toBeNull();
  });

  it("lists descriptors with artifactType and annotations", async () => {
    const name = uniqueImage("referrers");
    const subject = await pushImage(name, "latest");
    const signature = await pushReferrer(name, subject, signatureType, {
      "org.example.signer": "ci",
      "org.opencontainers.image.created": "2026-01-01T00:00:00Z",
    });
    const sbom = await pushReferrer(name, subject, sbomType, { "org.example.format": "spdx" });

    const { response, index } = await listReferrers(name, subject.digest);

    expect(response.headers.get("OCI-Filters-Applied")).toBeNull();
    const byDigest = new Map(index.manifests.map((entry) => [entry.digest, entry]));
    expect(index.manifests).toHaveLength(2);
    expect(byDigest.get(signature.descriptor.digest)).toEqual({
      ...signature.descriptor,
      artifactType: signatureType,
      annotations: { "org.example.signer": "ci", "org.opencontainers.image.created": "2026-01-01T00:00:00Z" },
    });
    expect(byDigest.get(sbom.descriptor.digest)).toEqual({
      ...sbom.descriptor,
      artifactType: sbomType,
      annotations: { "org.example.format": "spdx" },
    });
  });

  it("uses the config media type when a referrer has no artifactType", async () => {
    const name = uniqueImage("config-type");
    const subject = await pushImage(name, "latest");
    const config = await pushBlob(name, utf8('{"name":"chart"}'), mediaTypes.helmConfig);
    const chart = await pushBlob(name, utf8(crypto.randomUUID()), mediaTypes.helmChart);
    const bytes = oddlyFormatted(imageManifest(config, [chart], { subject: descriptorOf(subject) }));
    const { digest } = await putManifestOk(name, "chart", bytes, mediaTypes.ociManifest);

    const { index } = await listReferrers(name, subject.digest);

    expect(index.manifests).toEqual([
      { mediaType: mediaTypes.ociManifest, digest, size: bytes.byteLength, artifactType: mediaTypes.helmConfig },
    ]);
  });

  it("lists an index that refers to the subject", async () => {
    const name = uniqueImage("index-referrer");
    const subject = await pushImage(name, "latest");
    const child = await pushImage(name, "child");
    const bytes = oddlyFormatted(
      indexManifest([descriptorOf(child)], { artifactType: sbomType, subject: descriptorOf(subject), annotations: { kind: "bundle" } }),
    );
    const { digest } = await putManifestOk(name, "bundle", bytes, mediaTypes.ociIndex);

    const { index } = await listReferrers(name, subject.digest);

    expect(index.manifests).toEqual([
      { mediaType: mediaTypes.ociIndex, digest, size: bytes.byteLength, artifactType: sbomType, annotations: { kind: "bundle" } },
    ]);
  });

  it("filters by artifactType and sends OCI-Filters-Applied", async () => {
    const name = uniqueImage("filtered");
    const subject = await pushImage(name, "latest");
    const signature = await pushReferrer(name, subject, signatureType, { n: "1" });
    await pushReferrer(name, subject, sbomType, { n: "2" });

    const { response, index } = await listReferrers(name, subject.digest, `?artifactType=${encodeURIComponent(signatureType)}`);

    expect(response.headers.get("OCI-Filters-Applied")).toBe("artifactType");
    expect(index.manifests.map((entry) => entry.digest)).toEqual([signature.descriptor.digest]);
    expect(index.manifests[0]!.artifactType).toBe(signatureType);
  });

  it("filters to an empty list when no referrer has the artifactType", async () => {
    const name = uniqueImage("filtered-empty");
    const subject = await pushImage(name, "latest");
    await pushReferrer(name, subject, signatureType, { n: "1" });

    const { response, index } = await listReferrers(name, subject.digest, "?artifactType=application%2Fvnd.example.none");

    expect(response.headers.get("OCI-Filters-Applied")).toBe("artifactType");
    expect(index.manifests).toEqual([]);
  });

  it("leaves out referrers of the same digest in another image", async () => {
    const name = uniqueImage("mine");
    const other = uniqueImage("theirs");
    const subject = await pushImage(name, "latest");
    const mine = await pushReferrer(name, subject, signatureType, { owner: "mine" });
    const theirs = await pushReferrer(other, subject, signatureType, { owner: "theirs" });

    const { index } = await listReferrers(name, subject.digest);
    const { index: otherIndex } = await listReferrers(other, subject.digest);

    expect(index.manifests.map((entry) => entry.digest)).toEqual([mine.descriptor.digest]);
    expect(otherIndex.manifests.map((entry) => entry.digest)).toEqual([theirs.descriptor.digest]);
  });

  it("drops a referrer once its manifest is deleted", async () => {
    const name = uniqueImage("deleted-referrer");
    const subject = await pushImage(name, "latest");
    const signature = await pushReferrer(name, subject, signatureType, { n: "1" });

    const deleted = await registryFetch(`/v2/${name}/manifests/${signature.descriptor.digest}`, { method: "DELETE" });
    expect(deleted.status).toBe(202);

    const { index } = await listReferrers(name, subject.digest);
    expect(index.manifests).toEqual([]);
  });

  it("keeps annotations of a referrer with a large annotation", async () => {
    const name = uniqueImage("large-annotations");
    const subject = await pushImage(name, "latest");
    const annotations = { "org.example.payload": "x".repeat(3 * 1024 * 1024), "org.example.small": "kept" };
    const { descriptor } = await pushReferrer(name, subject, signatureType, annotations);

    expect(await manifestRowBytes(descriptor.digest)).toBeLessThan(d1MaxRowBytes);

    const { index } = await listReferrers(name, subject.digest);

    expect(index.manifests).toHaveLength(1);
    expect(index.manifests[0]).toEqual({ ...descriptor, artifactType: signatureType, annotations });
  });

  it("rejects an invalid digest with DIGEST_INVALID", async () => {
    const name = uniqueImage("bad-digest");
    await pushImage(name, "latest");

    await expectRegistryError(await registryFetch(`/v2/${name}/referrers/sha256:${"A".repeat(64)}`), 400, "DIGEST_INVALID");
    await expectRegistryError(await registryFetch(`/v2/${name}/referrers/md5:${"a".repeat(32)}`), 400, "DIGEST_INVALID");
  });

  it("rejects an unknown repository key with NAME_UNKNOWN", async () => {
    const digest = await digestOf(utf8("anything"));

    await expectRegistryError(await registryFetch(`/v2/no-such-repository/app/referrers/${digest}`), 404, "NAME_UNKNOWN");
  });

  it("does not count a subject as a missing reference", async () => {
    const name = uniqueImage("subject-not-required");
    const config = await pushEmptyConfig(name);
    const missing: Descriptor = { mediaType: mediaTypes.ociManifest, digest: await digestOf(utf8(crypto.randomUUID())), size: 1 };
    const bytes = oddlyFormatted(imageManifest(config, [config], { artifactType: signatureType, subject: missing }));

    const { response } = await putManifest(name, "v1", bytes, mediaTypes.ociManifest);

    expect(response.status).toBe(201);
  });
});
