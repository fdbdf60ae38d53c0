import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { maxReferrersPageBytes, maxReferrersPageSize } from "../../src/handlers/referrers";
import { maxIndexedManifestBytes } from "../../src/manifests/annotations";
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

/** A referrer written straight to D1, and to R2 when its annotations live there, to build long lists quickly. */
interface SeededReferrer {
  descriptor: Descriptor;
  /** The manifest's exact bytes; their digest is the descriptor's. */
  bytes: Uint8Array;
}

/**
 * Stores referrers of `subject` in the image the way a push would: a D1 row
 * per manifest with the annotations copied in when the manifest is at most
 * 64 KiB, and the bytes in R2 otherwise. Returns them in digest order.
 */
async function seedReferrers(
  name: string,
  subject: Descriptor,
  count: number,
  options: { artifactType: (index: number) => string; annotationBytes: number },
): Promise<SeededReferrer[]> {
  const image = await env.DB.prepare("SELECT id FROM images WHERE name = ?").bind(name).first<{ id: number }>();
  const emptyConfig = { mediaType: mediaTypes.ociEmpty, digest: await digestOf(utf8("{}")), size: 2 };
  const seeded: SeededReferrer[] = [];
  for (let index = 0; index < count; index++) {
    const artifactType = options.artifactType(index);
    const annotations = { "org.example.index": String(index), "org.example.filler": "x".repeat(options.annotationBytes) };
    const manifest = {
      schemaVersion: 2,
      mediaType: mediaTypes.ociManifest,
      artifactType,
      config: emptyConfig,
      layers: [],
      subject,
      annotations,
    };
    const bytes = utf8(JSON.stringify(manifest));
    const digest = await digestOf(bytes);
    seeded.push({ descriptor: { mediaType: mediaTypes.ociManifest, digest, size: bytes.byteLength, artifactType, annotations }, bytes });
  }

  const inD1 = (referrer: SeededReferrer) => referrer.bytes.byteLength <= maxIndexedManifestBytes;
  for (const referrer of seeded.filter((candidate) => !inD1(candidate))) {
    await env.BLOBS.put(`manifests/sha256/${referrer.descriptor.digest.slice("sha256:".length)}`, referrer.bytes);
  }
  // Seven bound parameters per row keep each statement under D1's 100.
  const statements: D1PreparedStatement[] = [];
  for (let start = 0; start < seeded.length; start += 14) {
    const rows = seeded.slice(start, start + 14);
    const values = rows.map(() => "(?, ?, ?, ?, ?, ?, ?)").join(", ");
    const parameters = rows.flatMap(({ descriptor, bytes }) => [
      image!.id,
      descriptor.digest,
      descriptor.mediaType,
      descriptor.artifactType!,
      bytes.byteLength,
      subject.digest,
      inD1({ descriptor, bytes }) ? JSON.stringify(descriptor.annotations) : null,
    ]);
    statements.push(
      env.DB.prepare(
        `INSERT INTO manifests (image_id, digest, media_type, artifact_type, size, subject_digest, annotations) VALUES ${values}`,
      ).bind(...parameters),
    );
  }
  await env.DB.batch(statements);
  return seeded.sort((a, b) => (a.descriptor.digest < b.descriptor.digest ? -1 : 1));
}

/** Returns the URL path and query inside a `Link: <...>; rel="next"` header, or null without one. */
function nextLink(response: Response): string | null {
  const link = response.headers.get("Link");
  if (link === null) return null;
  const match = /^<(?<target>[^>]+)>; rel="next"$/.exec(link);
  expect(match, `Link header ${link}`).not.toBeNull();
  return match!.groups!.target!;
}

interface WalkedPages {
  descriptors: Descriptor[];
  /** Each page's body size in bytes and number of descriptors. */
  pages: { bytes: number; count: number }[];
}

/** Follows `rel="next"` links from `path`, checking every page, and returns the pages' descriptors in order. */
async function walkReferrers(path: string, filtered = false): Promise<WalkedPages> {
  const walked: WalkedPages = { descriptors: [], pages: [] };
  let next: string | null = path;
  while (next !== null) {
    const response = await registryFetch(next);
    expect(response.status, next).toBe(200);
    expect(response.headers.get("OCI-Filters-Applied"), next).toBe(filtered ? "artifactType" : null);
    const body = new Uint8Array(await response.arrayBuffer());
    expect(response.headers.get("Content-Length"), next).toBe(String(body.byteLength));
    const index = JSON.parse(new TextDecoder().decode(body)) as ReferrersIndex;
    expect(index.mediaType, next).toBe(mediaTypes.ociIndex);
    walked.descriptors.push(...index.manifests);
    walked.pages.push({ bytes: body.byteLength, count: index.manifests.length });
    next = nextLink(response);
    expect(walked.pages.length, "pages walked").toBeLessThan(1000);
  }
  return walked;
}

describe("referrers pages", () => {
  const manyCount = 2_500;
  let name: string;
  let subject: Descriptor;
  let many: SeededReferrer[];

  beforeAll(async () => {
    name = uniqueImage("many-referrers");
    subject = descriptorOf(await pushImage(name, "latest"));
    many = await seedReferrers(name, subject, manyCount, {
      artifactType: (index) => (index % 3 === 0 ? sbomType : signatureType),
      annotationBytes: 16,
    });
  });

  it("returns at most 1,000 descriptors and a Link", async () => {
    expect(maxReferrersPageSize).toBe(1000);

    const { response, index } = await listReferrers(name, subject.digest);

    expect(index.manifests).toEqual(many.slice(0, 1000).map((referrer) => referrer.descriptor));
    expect(nextLink(response)).toBe(
      `/v2/${name}/referrers/${subject.digest}?n=1000&last=${encodeURIComponent(many[999]!.descriptor.digest)}`,
    );
  });

  it("returns every referrer in digest order across pages", async () => {
    const { descriptors, pages } = await walkReferrers(`/v2/${name}/referrers/${subject.digest}`);

    expect(pages.map((page) => page.count)).toEqual([1000, 1000, 500]);
    expect(descriptors).toEqual(many.map((referrer) => referrer.descriptor));
  });

  it("lowers the page size to n", async () => {
    const { descriptors, pages } = await walkReferrers(`/v2/${name}/referrers/${subject.digest}?n=300`);

    expect(pages).toHaveLength(Math.ceil(manyCount / 300));
    expect(pages.slice(0, -1).every((page) => page.count === 300)).toBe(true);
    expect(descriptors).toEqual(many.map((referrer) => referrer.descriptor));
  });

  it("lowers an n above 1,000 to 1,000", async () => {
    const { response, index } = await listReferrers(name, subject.digest, "?n=5000");

    expect(index.manifests).toHaveLength(1000);
    expect(nextLink(response)).toContain("n=1000&");
  });

  it("returns n=0 with an empty list", async () => {
    const { response, index } = await listReferrers(name, subject.digest, "?n=0");

    expect(index.manifests).toEqual([]);
    expect(response.headers.get("Link")).toBeNull();
  });

  it("rejects an invalid n with PAGINATION_NUMBER_INVALID", async () => {
    await expectRegistryError(await registryFetch(`/v2/${name}/referrers/${subject.digest}?n=-1`), 400, "PAGINATION_NUMBER_INVALID");
  });

  it("starts after last", async () => {
    const last = many[1234]!.descriptor.digest;

    const { index } = await listReferrers(name, subject.digest, `?n=2&last=${last}`);

    expect(index.manifests).toEqual(many.slice(1235, 1237).map((referrer) => referrer.descriptor));
  });

  it("filters by artifactType across pages", async () => {
    const signatures = many.filter((referrer) => referrer.descriptor.artifactType === signatureType);
    const path = `/v2/${name}/referrers/${subject.digest}?n=700&artifactType=${encodeURIComponent(signatureType)}`;

    const first = await registryFetch(path);
    const { descriptors, pages } = await walkReferrers(path, true);

    expect(nextLink(first)).toContain(`artifactType=${encodeURIComponent(signatureType)}`);
    expect(pages.map((page) => page.count)).toEqual([700, 700, signatures.length - 1400]);
    expect(descriptors).toEqual(signatures.map((referrer) => referrer.descriptor));
  });

  it("cuts pages at 4 MiB of annotations from D1", { timeout: 60_000 }, async () => {
    const large = uniqueImage("large-referrers");
    const largeSubject = descriptorOf(await pushImage(large, "latest"));
    const seeded = await seedReferrers(large, largeSubject, 100, { artifactType: () => signatureType, annotationBytes: 60_000 });
    expect(seeded.every((referrer) => referrer.bytes.byteLength <= maxIndexedManifestBytes)).toBe(true);

    const { descriptors, pages } = await walkReferrers(`/v2/${large}/referrers/${largeSubject.digest}`);

    expect(descriptors).toEqual(seeded.map((referrer) => referrer.descriptor));
    expect(pages.length).toBeGreaterThan(1);
    expect(pages.every((page) => page.bytes <= maxReferrersPageBytes)).toBe(true);
    // Each page but the last is full: its next descriptor would not have fitted.
    let offset = 0;
    for (const page of pages.slice(0, -1)) {
      offset += page.count;
      const nextDescriptor = JSON.stringify(descriptors[offset]);
      expect(page.bytes + 1 + utf8(nextDescriptor).byteLength).toBeGreaterThan(maxReferrersPageBytes);
    }
  });

  it("cuts pages at 4 MiB of annotations from R2", { timeout: 60_000 }, async () => {
    const large = uniqueImage("r2-referrers");
    const largeSubject = descriptorOf(await pushImage(large, "latest"));
    const seeded = await seedReferrers(large, largeSubject, 60, { artifactType: () => sbomType, annotationBytes: 150_000 });
    expect(seeded.every((referrer) => referrer.bytes.byteLength > maxIndexedManifestBytes)).toBe(true);

    const { descriptors, pages } = await walkReferrers(`/v2/${large}/referrers/${largeSubject.digest}`);

    expect(descriptors).toEqual(seeded.map((referrer) => referrer.descriptor));
    expect(pages.length).toBeGreaterThan(2);
    expect(pages.every((page) => page.bytes <= maxReferrersPageBytes)).toBe(true);
  });

  it("pages pushed referrers over and under 64 KiB", async () => {
    const pushed = uniqueImage("pushed-pages");
    const pushedSubject = descriptorOf(await pushImage(pushed, "latest"));
    const small = await pushReferrer(pushed, pushedSubject, signatureType, { size: "small" });
    const largeAnnotations = { size: "large", "org.example.payload": "y".repeat(100_000) };
    const large = await pushReferrer(pushed, pushedSubject, sbomType, largeAnnotations);
    expect(large.descriptor.size).toBeGreaterThan(maxIndexedManifestBytes);
    const expected = [
      { ...small.descriptor, artifactType: signatureType, annotations: { size: "small" } },
      { ...large.descriptor, artifactType: sbomType, annotations: largeAnnotations },
    ].sort((a, b) => (a.digest < b.digest ? -1 : 1));

    const { descriptors, pages } = await walkReferrers(`/v2/${pushed}/referrers/${pushedSubject.digest}?n=1`);

    expect(pages.map((page) => page.count)).toEqual([1, 1]);
    expect(descriptors).toEqual(expected);
  });
});
