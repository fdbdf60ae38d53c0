import { beforeAll, describe, expect, it } from "vitest";
import {
  digestOf,
  expectRegistryError,
  findBlobRow,
  listBucketKeys,
  openUpload,
  patchChunk,
  randomBytes,
  readBytes,
  registryFetch,
  uniqueImage,
  uploadBlob,
} from "./helpers";

/** A second repository, so isolation is checked across repository keys as well as within one. */
const otherRepository = "isolated-local";

beforeAll(async () => {
  const response = await registryFetch("/api/v1/repositories", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key: otherRepository, type: "local" }),
  });
  expect(response.status).toBe(201);
});

function blobPath(name: string, digest: string): string {
  return `/v2/${name}/blobs/${digest}`;
}

describe("blob reads", () => {
  it("HEAD returns blob headers", async () => {
    const name = uniqueImage();
    const bytes = randomBytes(1500);
    const digest = await uploadBlob(name, bytes);

    const response = await registryFetch(blobPath(name, digest), { method: "HEAD" });

    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Length")).toBe("1500");
    expect(response.headers.get("Content-Type")).toBe("application/octet-stream");
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    expect(response.headers.get("ETag")).toBe(`"${digest}"`);
    expect(await response.text()).toBe("");
  });

  it("GET returns blob bytes", async () => {
    const name = uniqueImage();
    const bytes = randomBytes(1500);
    const digest = await uploadBlob(name, bytes);

    const response = await registryFetch(blobPath(name, digest));

    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Length")).toBe("1500");
    expect(response.headers.get("Content-Type")).toBe("application/octet-stream");
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    expect(response.headers.get("ETag")).toBe(`"${digest}"`);
    expect(await readBytes(response)).toEqual(bytes);
  });

  it("zero-byte blob reads back", async () => {
    const name = uniqueImage();
    const digest = await uploadBlob(name, new Uint8Array(0));

    const head = await registryFetch(blobPath(name, digest), { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.headers.get("Content-Length")).toBe("0");

    const get = await registryFetch(blobPath(name, digest));
    expect(get.status).toBe(200);
    expect(get.headers.get("Content-Length")).toBe("0");
    expect((await readBytes(get)).byteLength).toBe(0);
  });

  it.each(["GET", "HEAD"])("%s with Accept-Encoding gzip keeps Content-Length", async (method) => {
    const name = uniqueImage();
    // Text compresses well, so a compressing layer would have reason to drop Content-Length.
    const bytes = new TextEncoder().encode("layer text ".repeat(2000));
    const digest = await uploadBlob(name, bytes);

    const response = await registryFetch(blobPath(name, digest), { method, headers: { "Accept-Encoding": "gzip" } });

    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Length")).toBe(String(bytes.byteLength));
    expect(response.headers.get("Content-Encoding")).toBeNull();
    if (method === "GET") expect(await readBytes(response)).toEqual(bytes);
  });

  it("unknown digest returns BLOB_UNKNOWN", async () => {
    const name = uniqueImage();
    await uploadBlob(name, randomBytes(10));
    const digest = await digestOf(randomBytes(10));

    const error = await expectRegistryError(await registryFetch(blobPath(name, digest)), 404, "BLOB_UNKNOWN");
    expect(error.detail).toEqual({ digest });
    const head = await registryFetch(blobPath(name, digest), { method: "HEAD" });
    expect(head.status).toBe(404);
    expect(await head.text()).toBe("");
  });
});

describe("blob ranges", () => {
  const size = 1000;
  let name: string;
  let bytes: Uint8Array;
  let digest: string;

  beforeAll(async () => {
    name = uniqueImage("ranges");
    bytes = randomBytes(size);
    digest = await uploadBlob(name, bytes);
  });

  it.each([
    ["bytes=0-0", 0, 0],
    ["bytes=10-19", 10, 19],
    ["bytes=990-", 990, 999],
    ["bytes=-25", 975, 999],
    ["bytes=500-5000", 500, 999],
    ["bytes=-5000", 0, 999],
  ])("range %s returns 206", async (range, start, end) => {
    for (const method of ["GET", "HEAD"]) {
      const response = await registryFetch(blobPath(name, digest), { method, headers: { Range: range } });

      expect(response.status, method).toBe(206);
      expect(response.headers.get("Content-Range"), method).toBe(`bytes ${start}-${end}/${size}`);
      expect(response.headers.get("Content-Length"), method).toBe(String(end - start + 1));
      expect(response.headers.get("Docker-Content-Digest"), method).toBe(digest);
      if (method === "GET") expect(await readBytes(response)).toEqual(bytes.subarray(start, end + 1));
    }
  });

  it.each(["bytes=1000-", "bytes=1000-1005", "bytes=5000-6000", "bytes=-0"])("range %s returns 416", async (range) => {
    const response = await registryFetch(blobPath(name, digest), { headers: { Range: range } });

    await expectRegistryError(response, 416, "RANGE_INVALID");
    expect(response.headers.get("Content-Range")).toBe(`bytes */${size}`);
  });

  it("range on zero-byte blob returns 416", async () => {
    const emptyName = uniqueImage("empty");
    const emptyDigest = await uploadBlob(emptyName, new Uint8Array(0));

    const response = await registryFetch(blobPath(emptyName, emptyDigest), { headers: { Range: "bytes=0-" } });

    await expectRegistryError(response, 416, "RANGE_INVALID");
    expect(response.headers.get("Content-Range")).toBe("bytes */0");
  });

  it("If-Range with the ETag returns 206", async () => {
    for (const method of ["GET", "HEAD"]) {
      const response = await registryFetch(blobPath(name, digest), {
        method,
        headers: { Range: "bytes=10-19", "If-Range": `"${digest}"` },
      });

      expect(response.status, method).toBe(206);
      expect(response.headers.get("Content-Range"), method).toBe(`bytes 10-19/${size}`);
      if (method === "GET") expect(await readBytes(response)).toEqual(bytes.subarray(10, 20));
    }
  });

  const mismatchedValidators: [string, (digest: string) => string][] = [
    ["another ETag", () => `"sha256:${"0".repeat(64)}"`],
    ["the weak form of the ETag", (digest) => `W/"${digest}"`],
    ["the digest without quotes", (digest) => digest],
    ["a date", () => "Wed, 21 Oct 2015 07:28:00 GMT"],
  ];

  for (const [label, validator] of mismatchedValidators) {
    it(`If-Range with ${label} returns whole blob`, async () => {
      for (const method of ["GET", "HEAD"]) {
        const headers = { Range: "bytes=10-19", "If-Range": validator(digest) };
        const response = await registryFetch(blobPath(name, digest), { method, headers });

        expect(response.status, method).toBe(200);
        expect(response.headers.get("Content-Range"), method).toBeNull();
        expect(response.headers.get("Content-Length"), method).toBe(String(size));
        if (method === "GET") expect(await readBytes(response)).toEqual(bytes);
      }
    });
  }

  it("If-Range that does not match ignores an unsatisfiable range", async () => {
    const response = await registryFetch(blobPath(name, digest), {
      headers: { Range: "bytes=5000-6000", "If-Range": "Wed, 21 Oct 2015 07:28:00 GMT" },
    });

    expect(response.status).toBe(200);
    expect(await readBytes(response)).toEqual(bytes);
  });

  it("several ranges return whole blob", async () => {
    const response = await registryFetch(blobPath(name, digest), { headers: { Range: "bytes=0-1,5-6" } });

    expect(response.status).toBe(200);
    expect(response.headers.get("Content-Length")).toBe(String(size));
    expect(await readBytes(response)).toEqual(bytes);
  });
  it("unsupported method returns UNSUPPORTED", async () => {
    const response = await registryFetch(blobPath(name, digest), { method: "PUT", body: "x" });

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, DELETE");
  });
});

describe("blob delete", () => {
  it("DELETE unlinks blob", async () => {
    const name = uniqueImage();
    const digest = await uploadBlob(name, randomBytes(100));

    const response = await registryFetch(blobPath(name, digest), { method: "DELETE" });

    expect(response.status).toBe(202);
    await expectRegistryError(await registryFetch(blobPath(name, digest)), 404, "BLOB_UNKNOWN");
    expect((await registryFetch(blobPath(name, digest), { method: "HEAD" })).status).toBe(404);
    await expectRegistryError(await registryFetch(blobPath(name, digest), { method: "DELETE" }), 404, "BLOB_UNKNOWN");
  });

  it("DELETE leaves other images' link", async () => {
    const first = uniqueImage("first");
    const second = uniqueImage("second");
    const bytes = randomBytes(100);
    const digest = await uploadBlob(first, bytes);
    await uploadBlob(second, bytes);

    expect((await registryFetch(blobPath(first, digest), { method: "DELETE" })).status).toBe(202);

    const response = await registryFetch(blobPath(second, digest));
    expect(response.status).toBe(200);
    expect(await readBytes(response)).toEqual(bytes);
  });
});

describe("blob isolation", () => {
  it.each([
    ["same repository", () => uniqueImage("neighbour")],
    ["other repository", () => `${otherRepository}/app-${crypto.randomUUID().slice(0, 8)}`],
  ])("blob of another image, %s", async (_label, otherImage) => {
    const owner = uniqueImage("owner");
    const other = otherImage();
    const digest = await uploadBlob(owner, randomBytes(64));
    await uploadBlob(other, randomBytes(64));

    await expectRegistryError(await registryFetch(blobPath(other, digest)), 404, "BLOB_UNKNOWN");
    expect((await registryFetch(blobPath(other, digest), { method: "HEAD" })).status).toBe(404);
    await expectRegistryError(await registryFetch(blobPath(other, digest), { headers: { Range: "bytes=0-10" } }), 404, "BLOB_UNKNOWN");
    await expectRegistryError(await registryFetch(blobPath(other, digest), { method: "DELETE" }), 404, "BLOB_UNKNOWN");
    expect((await registryFetch(blobPath(owner, digest))).status).toBe(200);
  });

  it("unknown repository returns NAME_UNKNOWN", async () => {
    const digest = await digestOf(randomBytes(10));
    await expectRegistryError(await registryFetch(blobPath("no-such-repository/app", digest)), 404, "NAME_UNKNOWN");
  });

  it("invalid name returns NAME_INVALID", async () => {
    const digest = await digestOf(randomBytes(10));
    await expectRegistryError(await registryFetch(blobPath("docker-local/UPPER", digest)), 400, "NAME_INVALID");
  });
});

describe("invalid digests", () => {
  const hex = "a".repeat(64);

  it.each([
    ["wrong algorithm", `md5:${"a".repeat(32)}`],
    ["unknown algorithm", `sha3:${hex}`],
    ["uppercase hex", `sha256:${"A".repeat(64)}`],
    ["short hex", `sha256:${"a".repeat(63)}`],
    ["long hex", `sha256:${"a".repeat(65)}`],
    ["non-hex characters", `sha256:${"g".repeat(64)}`],
    ["short sha512", `sha512:${hex}`],
    ["no algorithm", hex],
    ["empty hex", "sha256:"],
    ["malformed percent escape", "sha256:%zz"],
  ])("%s returns DIGEST_INVALID", async (_label, digest) => {
    const name = uniqueImage();

    for (const method of ["GET", "DELETE"]) {
      const response = await registryFetch(blobPath(name, digest), { method });
      const error = await expectRegistryError(response, 400, "DIGEST_INVALID");
      expect(error.message, method).toMatch(/digest/);
    }
    const head = await registryFetch(blobPath(name, digest), { method: "HEAD" });
    expect(head.status).toBe(400);
  });
});

describe("blob storage", () => {
  it("same blob in two images stored once", async () => {
    const first = uniqueImage("first");
    const second = uniqueImage("second");
    const bytes = randomBytes(4096);
    const keysBefore = await listBucketKeys("blobs/");

    const digest = await uploadBlob(first, bytes);
    const afterFirst = await listBucketKeys("blobs/");
    expect(afterFirst.length).toBe(keysBefore.length + 1);
    expect(await uploadBlob(second, bytes)).toBe(digest);

    expect(await listBucketKeys("blobs/")).toEqual(afterFirst);
    const row = await findBlobRow(digest);
    expect(afterFirst).toContain(row!.storage_key);
    for (const name of [first, second]) {
      const response = await registryFetch(blobPath(name, digest));
      expect(response.status).toBe(200);
      expect(await readBytes(response)).toEqual(bytes);
    }
  });

  it("chunked push of stored blob stores nothing new", async () => {
    const first = uniqueImage("first");
    const second = uniqueImage("second");
    const bytes = randomBytes(3000);
    const digest = await uploadBlob(first, bytes);
    const keysBefore = await listBucketKeys("blobs/");

    const { location } = await openUpload(second);
    expect((await patchChunk(location, bytes.subarray(0, 1000), 0)).status).toBe(202);
    expect((await patchChunk(location, bytes.subarray(1000), 1000)).status).toBe(202);
    expect((await registryFetch(`${location}?digest=${digest}`, { method: "PUT" })).status).toBe(201);

    expect(await listBucketKeys("blobs/")).toEqual(keysBefore);
    const response = await registryFetch(blobPath(second, digest));
    expect(await readBytes(response)).toEqual(bytes);
  });
});
