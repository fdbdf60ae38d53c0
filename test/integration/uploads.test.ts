import { md5 } from "@noble/hashes/legacy.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import {
  abortAllDurableObjects,
  evictDurableObject,
  listDurableObjectIds,
  runDurableObjectAlarm,
  runInDurableObject,
} from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { UploadSession } from "../../durable-objects/upload-session";
import type { Env } from "../../src/env";
import type { RegistryErrorData, RpcResult } from "../../src/errors";
import { maxParts } from "../../src/storage/part-assembler";
import {
  concatBytes,
  digestOf,
  expectRegistryError,
  findBlobRow,
  listBucketKeys,
  MiB,
  openUpload,
  partSize,
  patchChunk,
  randomBytes,
  readBytes,
  readSessionStorage,
  registryFetch,
  sha1Hex,
  streamOf,
  uniqueImage,
  uploadBlob,
  uploadSessionStub,
} from "./helpers";

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Tests that move several MiB through R2 and three hashes get more than the 5 s default. */
const largeTimeout = 60_000;

/** Completes an upload with `PUT ?digest=`, sending `body` as the final chunk when given. */
async function putUpload(location: string, digest: string, body?: Uint8Array, headers: Record<string, string> = {}): Promise<Response> {
  return registryFetch(`${location}?digest=${digest}`, { method: "PUT", headers, body });
}

async function uploadStatus(location: string): Promise<Response> {
  return registryFetch(location, { method: "GET" });
}

/**
 * Checks that the blob reads back byte-identical from the image and that D1
 * records its size, sha1 and md5. The expected sha1 comes from WebCrypto, the
 * expected md5 from @noble/hashes, both independent of the registry's hasher.
 */
async function expectStoredBlob(name: string, bytes: Uint8Array): Promise<void> {
  const digest = await digestOf(bytes);
  const response = await registryFetch(`/v2/${name}/blobs/${digest}`);
  expect(response.status).toBe(200);
  expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
  expect(response.headers.get("Content-Length")).toBe(String(bytes.byteLength));
  const stored = await readBytes(response);
  expect(stored.byteLength).toBe(bytes.byteLength);
  expect(await digestOf(stored)).toBe(digest);

  const row = await findBlobRow(digest);
  expect(row).not.toBeNull();
  expect(row!.size).toBe(bytes.byteLength);
  expect(row!.sha1).toBe(await sha1Hex(bytes));
  expect(row!.md5).toBe(bytesToHex(md5(bytes)));

  const leftovers = await listBucketKeys(`${row!.storage_key}.`);
  expect(leftovers).toEqual([]);
}

/** Sends `chunks` as consecutive PATCH requests with Content-Range, checking the Range header of each response. */
async function patchInOrder(location: string, chunks: Uint8Array[]): Promise<void> {
  let offset = 0;
  for (const chunk of chunks) {
    const response = await patchChunk(location, chunk, offset);
    offset += chunk.byteLength;
    expect(response.status, `chunk ending at byte ${offset}`).toBe(202);
    expect(response.headers.get("Range")).toBe(`0-${offset - 1}`);
  }
}

/** Cuts `bytes` at the given offsets. */
function splitAt(bytes: Uint8Array, offsets: number[]): Uint8Array[] {
  const bounds = [0, ...offsets, bytes.byteLength];
  return bounds.slice(1).map((end, index) => bytes.subarray(bounds[index], end));
}

/** Checks that nothing of a rejected upload remains: no D1 row, no new R2 object, no session state. */
async function expectNothingStored(digests: string[], keysBefore: string[], uploadId?: string): Promise<void> {
  for (const digest of digests) {
    expect(await findBlobRow(digest), `D1 row for ${digest}`).toBeNull();
  }
  expect(await listBucketKeys()).toEqual(keysBefore);
  if (uploadId !== undefined) {
    expect((await readSessionStorage(uploadId)).size).toBe(0);
  }
}

describe("registry base", () => {
  it("GET /v2/ returns 200", async () => {
    const response = await registryFetch("/v2/");
    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
  });
});

describe("upload start", () => {
  it("POST opens session", async () => {
    const name = uniqueImage();
    const response = await registryFetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });

    expect(response.status).toBe(202);
    const uploadId = response.headers.get("Docker-Upload-UUID");
    expect(uploadId).toMatch(uuidPattern);
    expect(response.headers.get("Location")).toBe(`/v2/${name}/blobs/uploads/${uploadId}`);
    expect(response.headers.get("Range")).toBe("0-0");
  });

  it("POST sends part size as OCI-Chunk-Min-Length", async () => {
    const name = uniqueImage();

    const response = await registryFetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });

    expect(response.status).toBe(202);
    expect(response.headers.get("OCI-Chunk-Min-Length")).toBe(String(partSize));
    const uploadId = response.headers.get("Docker-Upload-UUID")!;
    const state = (await readSessionStorage(uploadId)).get("state") as { partSize: number };
    expect(state.partSize).toBe(partSize);
  });

  it("POST with digest sends no OCI-Chunk-Min-Length", async () => {
    const name = uniqueImage();
    const bytes = randomBytes(10);

    const response = await registryFetch(`/v2/${name}/blobs/uploads/?digest=${await digestOf(bytes)}`, { method: "POST", body: bytes });

    expect(response.status).toBe(201);
    expect(response.headers.get("OCI-Chunk-Min-Length")).toBeNull();
  });

  it("POST with digest stores whole body", async () => {
    const name = uniqueImage();
    const bytes = randomBytes(1000);
    const digest = await digestOf(bytes);

    const response = await registryFetch(`/v2/${name}/blobs/uploads/?digest=${digest}`, {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream", "Content-Length": String(bytes.byteLength) },
      body: bytes,
    });

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/v2/${name}/blobs/${digest}`);
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    await expectStoredBlob(name, bytes);
  });

  it("POST with digest over one part", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const bytes = randomBytes(partSize + 12_345);
    const digest = await uploadBlob(name, bytes);

    expect(digest).toBe(await digestOf(bytes));
    await expectStoredBlob(name, bytes);
  });

  it("POST with invalid digest opens nothing", async () => {
    const name = uniqueImage();
    const sessionsBefore = (await listDurableObjectIds(env.UPLOAD_SESSIONS)).length;

    const response = await registryFetch(`/v2/${name}/blobs/uploads/?digest=sha256:1234`, { method: "POST", body: "abc" });

    await expectRegistryError(response, 400, "DIGEST_INVALID");
    expect((await listDurableObjectIds(env.UPLOAD_SESSIONS)).length).toBe(sessionsBefore);
  });

  it("mount of linked blob returns 201", async () => {
    const source = uniqueImage("source");
    const target = uniqueImage("target");
    const bytes = randomBytes(300);
    // No manifest references the blob: an upload alone links it to the source image.
    const digest = await uploadBlob(source, bytes);

    const response = await registryFetch(`/v2/${target}/blobs/uploads/?mount=${digest}&from=${source}`, { method: "POST" });

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/v2/${target}/blobs/${digest}`);
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    await expectStoredBlob(target, bytes);
  });

  it.each([
    [
      "image without the blob",
      async () => {
        const source = uniqueImage("empty");
        await uploadBlob(source, randomBytes(10));
        return source;
      },
    ],
    ["image that does not exist", async () => "docker-local/never-pushed"],
    ["invalid name", async () => "Not//A/Name"],
    ["repository that does not exist", async () => "no-such-repository/app"],
  ])("mount from %s opens session", async (_label, prepareSource) => {
    const target = uniqueImage("target");
    const digest = await uploadBlob(uniqueImage("other"), randomBytes(200));
    const source = await prepareSource();

    const response = await registryFetch(`/v2/${target}/blobs/uploads/?mount=${digest}&from=${encodeURIComponent(source)}`, {
      method: "POST",
    });

    expect(response.status).toBe(202);
    const uploadId = response.headers.get("Docker-Upload-UUID");
    expect(uploadId).toMatch(uuidPattern);
    expect(response.headers.get("Location")).toBe(`/v2/${target}/blobs/uploads/${uploadId}`);
    expect(response.headers.get("Range")).toBe("0-0");
    expect(response.headers.get("OCI-Chunk-Min-Length")).toBe(String(partSize));
    await expectRegistryError(await registryFetch(`/v2/${target}/blobs/${digest}`), 404, "BLOB_UNKNOWN");
  });
});

describe("upload chunks", () => {
  it("PATCH streamed body without Content-Length", async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const chunks = [randomBytes(1000), randomBytes(1), randomBytes(70_000)];

    const request = new Request(`http://registry.test${location}`, { method: "PATCH", body: streamOf(...chunks) });
    expect(request.headers.get("Content-Length")).toBeNull();
    const response = await registryFetch(location, { method: "PATCH", body: streamOf(...chunks) });

    expect(response.status).toBe(202);
    expect(response.headers.get("Range")).toBe(`0-${71_000}`);
    expect(response.headers.get("Location")).toBe(location);
    expect(response.headers.get("Docker-Upload-UUID")).toBe(uploadId);

    const bytes = concatBytes(...chunks);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("PATCH with Content-Length", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const first = randomBytes(500);
    const second = randomBytes(777);

    const firstResponse = await patchChunk(location, first);
    expect(firstResponse.status).toBe(202);
    expect(firstResponse.headers.get("Range")).toBe("0-499");
    const secondResponse = await patchChunk(location, second);
    expect(secondResponse.status).toBe(202);
    expect(secondResponse.headers.get("Range")).toBe(`0-${500 + 777 - 1}`);

    const bytes = concatBytes(first, second);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("PATCH with Content-Range", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const chunks = [randomBytes(10), randomBytes(20), randomBytes(30)];

    await patchInOrder(location, chunks);

    const bytes = concatBytes(...chunks);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("PATCH with Content-Range and no Content-Length", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const chunk = randomBytes(4000);

    const response = await registryFetch(location, {
      method: "PATCH",
      headers: { "Content-Range": "0-3999" },
      body: streamOf(chunk.subarray(0, 1000), chunk.subarray(1000)),
    });
    expect(response.status).toBe(202);
    expect(response.headers.get("Range")).toBe("0-3999");

    expect((await putUpload(location, await digestOf(chunk))).status).toBe(201);
    await expectStoredBlob(name, chunk);
  });

  it("PATCH body shorter than Content-Range", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);

    const response = await registryFetch(location, {
      method: "PATCH",
      headers: { "Content-Range": "0-99" },
      body: streamOf(randomBytes(60)),
    });

    await expectRegistryError(response, 400, "SIZE_INVALID");
    expect((await uploadStatus(location)).headers.get("Range")).toBe("0-0");
  });

  it("PATCH body longer than Content-Range", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);

    const response = await registryFetch(location, {
      method: "PATCH",
      headers: { "Content-Range": "0-99" },
      body: streamOf(randomBytes(60), randomBytes(60)),
    });

    await expectRegistryError(response, 400, "SIZE_INVALID");
    expect((await uploadStatus(location)).headers.get("Range")).toBe("0-0");
  });

  it("PATCH Content-Range not matching Content-Length", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);

    const response = await registryFetch(location, {
      method: "PATCH",
      headers: { "Content-Range": "0-9", "Content-Length": "5" },
      body: randomBytes(5),
    });

    await expectRegistryError(response, 416, "RANGE_INVALID");
    expect((await uploadStatus(location)).headers.get("Range")).toBe("0-0");
  });

  it("PATCH malformed Content-Range", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);

    const response = await registryFetch(location, { method: "PATCH", headers: { "Content-Range": "bytes=abc" }, body: randomBytes(5) });

    await expectRegistryError(response, 416, "RANGE_INVALID");
  });

  it("chunk out of order returns 416", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const first = randomBytes(100);
    const second = randomBytes(50);
    expect((await patchChunk(location, first, 0)).status).toBe(202);

    const gap = await patchChunk(location, second, 150);
    const gapError = await expectRegistryError(gap, 416, "RANGE_INVALID");
    expect(gapError.detail).toBeDefined();
    expect(gap.headers.get("Range")).toBe("0-99");

    const overlap = await patchChunk(location, second, 50);
    await expectRegistryError(overlap, 416, "RANGE_INVALID");
    expect(overlap.headers.get("Range")).toBe("0-99");

    const status = await uploadStatus(location);
    expect(status.status).toBe(204);
    expect(status.headers.get("Range")).toBe("0-99");

    expect((await patchChunk(location, second, 100)).status).toBe(202);
    const bytes = concatBytes(first, second);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("GET returns session status", async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);

    const empty = await uploadStatus(location);
    expect(empty.status).toBe(204);
    expect(empty.headers.get("Range")).toBe("0-0");
    expect(empty.headers.get("Location")).toBe(location);
    expect(empty.headers.get("Docker-Upload-UUID")).toBe(uploadId);

    await patchChunk(location, randomBytes(42));
    const afterChunk = await uploadStatus(location);
    expect(afterChunk.status).toBe(204);
    expect(afterChunk.headers.get("Range")).toBe("0-41");
    expect(afterChunk.headers.get("Location")).toBe(location);
    expect(await afterChunk.text()).toBe("");
  });
});

describe("upload completion", () => {
  it("PUT without body completes", async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const bytes = randomBytes(2048);
    await patchChunk(location, bytes);
    const digest = await digestOf(bytes);

    const response = await putUpload(location, digest);

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/v2/${name}/blobs/${digest}`);
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    await expectStoredBlob(name, bytes);
    expect((await readSessionStorage(uploadId)).size).toBe(0);
    await expectRegistryError(await uploadStatus(location), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await putUpload(location, digest), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("PUT with final chunk completes", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const first = randomBytes(100);
    const last = randomBytes(333);
    await patchChunk(location, first, 0);
    const bytes = concatBytes(first, last);
    const digest = await digestOf(bytes);

    const response = await putUpload(location, digest, last, { "Content-Range": "100-432", "Content-Length": "333" });

    expect(response.status).toBe(201);
    expect(response.headers.get("Docker-Content-Digest")).toBe(digest);
    await expectStoredBlob(name, bytes);
  });

  it("PUT with whole blob and no PATCH", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const bytes = randomBytes(5000);

    const response = await putUpload(location, await digestOf(bytes), bytes);

    expect(response.status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("PUT final chunk out of order", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const first = randomBytes(100);
    const last = randomBytes(50);
    await patchChunk(location, first, 0);

    const response = await putUpload(location, await digestOf(concatBytes(first, last)), last, { "Content-Range": "120-169" });

    await expectRegistryError(response, 416, "RANGE_INVALID");
    expect(response.headers.get("Range")).toBe("0-99");
    expect((await uploadStatus(location)).headers.get("Range")).toBe("0-99");

    expect((await putUpload(location, await digestOf(first))).status).toBe(201);
    await expectStoredBlob(name, first);
  });

  it("PUT without digest", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);

    await expectRegistryError(await registryFetch(location, { method: "PUT" }), 400, "DIGEST_INVALID");
    await expectRegistryError(await registryFetch(`${location}?digest=md5:abc`, { method: "PUT" }), 400, "DIGEST_INVALID");
    expect((await uploadStatus(location)).status).toBe(204);
  });

  it("zero-byte blob, monolithic", async () => {
    const name = uniqueImage();
    const empty = new Uint8Array(0);
    const digest = await digestOf(empty);
    expect(digest).toBe("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    const response = await registryFetch(`/v2/${name}/blobs/uploads/?digest=${digest}`, {
      method: "POST",
      headers: { "Content-Length": "0" },
    });

    expect(response.status).toBe(201);
    await expectStoredBlob(name, empty);
  });

  it("zero-byte blob, session", async () => {
    const name = uniqueImage();
    const empty = new Uint8Array(0);
    const { location } = await openUpload(name);

    const patch = await patchChunk(location, empty);
    expect(patch.status).toBe(202);
    expect(patch.headers.get("Range")).toBe("0-0");
    const response = await putUpload(location, await digestOf(empty));

    expect(response.status).toBe(201);
    await expectStoredBlob(name, empty);
  });
});

describe("upload cancel and unknown ids", () => {
  it("DELETE cancels session", async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const keysBefore = await listBucketKeys();
    await patchChunk(location, randomBytes(1234));

    const response = await registryFetch(location, { method: "DELETE" });

    expect(response.status).toBe(204);
    expect(await listBucketKeys()).toEqual(keysBefore);
    expect((await readSessionStorage(uploadId)).size).toBe(0);
    await expectRegistryError(await uploadStatus(location), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await patchChunk(location, randomBytes(10)), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await putUpload(location, await digestOf(randomBytes(1))), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await registryFetch(location, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("DELETE aborts multipart upload", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const keysBefore = await listBucketKeys();
    const { uploadId, location } = await openUpload(name);
    await patchChunk(location, randomBytes(partSize + 10), 0);
    const state = (await readSessionStorage(uploadId)).get("state") as { storageKey: string; multipartUploadId: string | null };
    expect(state.multipartUploadId).not.toBeNull();

    expect((await registryFetch(location, { method: "DELETE" })).status).toBe(204);

    await expect(env.BLOBS.resumeMultipartUpload(state.storageKey, state.multipartUploadId!).complete([])).rejects.toThrow();
    expect(await listBucketKeys()).toEqual(keysBefore);
    expect((await readSessionStorage(uploadId)).size).toBe(0);
  });

  it("upload id under another image", async () => {
    const name = uniqueImage();
    const other = uniqueImage("other");
    const { uploadId, location } = await openUpload(name);
    const chunk = randomBytes(64);
    const foreign = `/v2/${other}/blobs/uploads/${uploadId}`;

    await expectRegistryError(await uploadStatus(foreign), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await patchChunk(foreign, chunk), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await putUpload(foreign, await digestOf(chunk), chunk), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await registryFetch(foreign, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");

    // The session under its own name is untouched.
    expect((await uploadStatus(location)).headers.get("Range")).toBe("0-0");
    expect((await putUpload(location, await digestOf(chunk), chunk)).status).toBe(201);
    await expectRegistryError(await registryFetch(`/v2/${other}/blobs/${await digestOf(chunk)}`), 404, "BLOB_UNKNOWN");
  });

  it.each([
    ["not a UUID", "not-an-upload"],
    ["uppercase UUID", "0AAAAAAA-AAAA-4AAA-8AAA-AAAAAAAAAAAA"],
    ["UUID with suffix", `${crypto.randomUUID()}x`],
    ["UUID never issued", crypto.randomUUID()],
  ])("upload id %s", async (_label, uploadId) => {
    const name = uniqueImage();
    const location = `/v2/${name}/blobs/uploads/${uploadId}`;
    const chunk = randomBytes(8);

    await expectRegistryError(await uploadStatus(location), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await patchChunk(location, chunk), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await putUpload(location, await digestOf(chunk), chunk), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await registryFetch(location, { method: "DELETE" }), 404, "BLOB_UPLOAD_UNKNOWN");
  });
});

describe("chunk sequences", () => {
  it.each([
    ["1 byte", 1],
    ["4 MiB + 3", 4 * MiB + 3],
    ["5 MiB exactly", 5 * MiB],
    ["5 MiB + 1", 5 * MiB + 1],
  ])("single chunk of %s", { timeout: largeTimeout }, async (_label, size) => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const bytes = randomBytes(size);

    await patchInOrder(location, [bytes]);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("odd sizes in order", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const chunks = [randomBytes(1), randomBytes(4 * MiB + 3), randomBytes(5 * MiB), randomBytes(5 * MiB + 1)];

    await patchInOrder(location, chunks);

    const bytes = concatBytes(...chunks);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("11 MiB + 7 split at odd places", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const bytes = randomBytes(11 * MiB + 7);
    const chunks = splitAt(bytes, [3, 5 * MiB - 1, 5 * MiB + 2, 10 * MiB + 5, 11 * MiB]);

    await patchInOrder(location, chunks);

    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("12 MiB streamed in 1 MiB chunks", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const bytes = randomBytes(12 * MiB);

    for (let start = 0; start < bytes.byteLength; start += MiB) {
      const chunk = bytes.subarray(start, start + MiB);
      const response = await registryFetch(location, { method: "PATCH", body: streamOf(chunk.subarray(0, 4096), chunk.subarray(4096)) });
      expect(response.status).toBe(202);
      expect(response.headers.get("Range")).toBe(`0-${start + MiB - 1}`);
    }

    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("chunks out of order", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const bytes = randomBytes(6 * MiB + 11);
    const [first, second, third] = splitAt(bytes, [3 * MiB, 5 * MiB + 5]);

    await expectRegistryError(await patchChunk(location, second!, 3 * MiB), 416, "RANGE_INVALID");
    expect((await patchChunk(location, first!, 0)).status).toBe(202);
    const early = await patchChunk(location, third!, 5 * MiB + 5);
    await expectRegistryError(early, 416, "RANGE_INVALID");
    expect(early.headers.get("Range")).toBe(`0-${3 * MiB - 1}`);
    expect((await patchChunk(location, second!, 3 * MiB)).status).toBe(202);
    expect((await patchChunk(location, third!, 5 * MiB + 5)).status).toBe(202);

    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("repeated chunk is rejected", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const bytes = randomBytes(5 * MiB + 100);
    const [first, second] = splitAt(bytes, [5 * MiB + 50]);

    expect((await patchChunk(location, first!, 0)).status).toBe(202);
    const repeated = await patchChunk(location, first!, 0);
    await expectRegistryError(repeated, 416, "RANGE_INVALID");
    expect(repeated.headers.get("Range")).toBe(`0-${5 * MiB + 49}`);
    expect((await patchChunk(location, second!, 5 * MiB + 50)).status).toBe(202);
    await expectRegistryError(await patchChunk(location, second!, 5 * MiB + 50), 416, "RANGE_INVALID");

    expect((await uploadStatus(location)).headers.get("Range")).toBe(`0-${bytes.byteLength - 1}`);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("final chunk in PUT after parts", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const bytes = randomBytes(13 * MiB + 9);
    const [first, last] = splitAt(bytes, [6 * MiB + 1]);
    await patchChunk(location, first!, 0);

    const response = await putUpload(location, await digestOf(bytes), last, {
      "Content-Range": `${6 * MiB + 1}-${bytes.byteLength - 1}`,
      "Content-Length": String(last!.byteLength),
    });

    expect(response.status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("final chunk in PUT streamed", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const bytes = randomBytes(5 * MiB + 3);
    const [first, last] = splitAt(bytes, [1000]);
    await patchChunk(location, first!);

    const response = await registryFetch(`${location}?digest=${await digestOf(bytes)}`, {
      method: "PUT",
      body: streamOf(last!.subarray(0, 2 * MiB), last!.subarray(2 * MiB)),
    });

    expect(response.status).toBe(201);
    await expectStoredBlob(name, bytes);
  });
});

describe("digest mismatch", () => {
  it.each([
    ["small body", 100],
    ["body over one part", partSize + 77],
  ])("monolithic POST, %s", { timeout: largeTimeout }, async (_label, size) => {
    const name = uniqueImage();
    const bytes = randomBytes(size);
    const claimed = await digestOf(randomBytes(8));
    const keysBefore = await listBucketKeys();
    const sessionsBefore = new Set((await listDurableObjectIds(env.UPLOAD_SESSIONS)).map((id) => id.toString()));

    const response = await registryFetch(`/v2/${name}/blobs/uploads/?digest=${claimed}`, { method: "POST", body: bytes });

    const error = await expectRegistryError(response, 400, "DIGEST_INVALID");
    expect(error.detail).toEqual({ expected: claimed, actual: await digestOf(bytes) });
    await expectNothingStored([claimed, await digestOf(bytes)], keysBefore);
    const opened = (await listDurableObjectIds(env.UPLOAD_SESSIONS)).filter((id) => !sessionsBefore.has(id.toString()));
    expect(opened).toHaveLength(1);
    const storage = await runInDurableObject(env.UPLOAD_SESSIONS.get(opened[0]!), (_instance, state) => state.storage.list());
    expect(storage.size).toBe(0);
  });

  it.each([
    ["below one part", 3000],
    ["after written parts", 2 * partSize + 5],
  ])("PUT after chunks, %s", { timeout: largeTimeout }, async (_label, size) => {
    const name = uniqueImage();
    const keysBefore = await listBucketKeys();
    const { uploadId, location } = await openUpload(name);
    const bytes = randomBytes(size);
    await patchInOrder(location, splitAt(bytes, [Math.floor(size / 3)]));
    const claimed = await digestOf(randomBytes(8));

    await expectRegistryError(await putUpload(location, claimed), 400, "DIGEST_INVALID");

    await expectNothingStored([claimed, await digestOf(bytes)], keysBefore, uploadId);
    await expectRegistryError(await uploadStatus(location), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it.each([
    ["below one part", 3000],
    ["after written parts", partSize + 5],
  ])("PUT with final chunk, %s", { timeout: largeTimeout }, async (_label, size) => {
    const name = uniqueImage();
    const keysBefore = await listBucketKeys();
    const { uploadId, location } = await openUpload(name);
    const bytes = randomBytes(size);
    const [first, last] = splitAt(bytes, [size - 1000]);
    await patchChunk(location, first!, 0);
    const claimed = await digestOf(randomBytes(8));

    await expectRegistryError(await putUpload(location, claimed, last), 400, "DIGEST_INVALID");

    await expectNothingStored([claimed, await digestOf(bytes)], keysBefore, uploadId);
    await expectRegistryError(await uploadStatus(location), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("zero bytes with wrong digest", async () => {
    const name = uniqueImage();
    const keysBefore = await listBucketKeys();
    const { uploadId, location } = await openUpload(name);
    const claimed = await digestOf(randomBytes(8));

    await expectRegistryError(await putUpload(location, claimed), 400, "DIGEST_INVALID");

    await expectNothingStored([claimed], keysBefore, uploadId);
  });
});

describe("session durability", () => {
  it("hash state survives eviction", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const bytes = randomBytes(11 * MiB + 13);
    const chunks = splitAt(bytes, [3 * MiB + 5, 3 * MiB + 70, 8 * MiB + 1]);

    let offset = 0;
    for (const [index, chunk] of chunks.entries()) {
      expect((await patchChunk(location, chunk, offset)).status).toBe(202);
      offset += chunk.byteLength;
      // A stub obtained before abortAllDurableObjects cannot evict the restarted object, so each eviction gets a fresh stub.
      if (index % 2 === 0) await evictDurableObject(uploadSessionStub(uploadId));
      else await abortAllDurableObjects();
    }

    expect((await uploadStatus(location)).headers.get("Range")).toBe(`0-${bytes.byteLength - 1}`);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("concurrent PATCH is rejected", async () => {
    const name = uniqueImage();
    const { location } = await openUpload(name);
    const first = randomBytes(3000);
    const { stream, controller, pulls } = controlledStream();

    const pending = registryFetch(location, { method: "PATCH", body: stream });
    controller.enqueue(first.subarray(0, 1000));
    await waitForPulls(pulls, 2);

    const second = await patchChunk(location, randomBytes(500));
    await expectRegistryError(second, 416, "RANGE_INVALID");
    expect(second.headers.get("Range")).toBe("0-0");

    controller.enqueue(first.subarray(1000));
    controller.close();
    const firstResponse = await pending;
    expect(firstResponse.status).toBe(202);
    expect(firstResponse.headers.get("Range")).toBe("0-2999");

    expect((await putUpload(location, await digestOf(first))).status).toBe(201);
    await expectStoredBlob(name, first);
  });

  it("expiry alarm aborts session", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const stub = uploadSessionStub(uploadId);
    await patchChunk(location, randomBytes(partSize + 1000), 0);

    const state = (await readSessionStorage(uploadId)).get("state") as {
      storageKey: string;
      multipartUploadId: string | null;
      parts: R2UploadedPart[];
      tailKey: string | null;
    };
    expect(state.multipartUploadId).not.toBeNull();
    expect(state.parts).toHaveLength(1);
    expect(state.tailKey).not.toBeNull();
    expect(await listBucketKeys(state.tailKey!)).toEqual([state.tailKey]);

    expect(await runDurableObjectAlarm(stub)).toBe(true);

    expect((await readSessionStorage(uploadId)).size).toBe(0);
    expect(await listBucketKeys(state.storageKey)).toEqual([]);
    const multipart = env.BLOBS.resumeMultipartUpload(state.storageKey, state.multipartUploadId!);
    await expect(multipart.complete(state.parts)).rejects.toThrow();
    await expectRegistryError(await uploadStatus(location), 404, "BLOB_UPLOAD_UNKNOWN");
    await expectRegistryError(await patchChunk(location, randomBytes(10)), 404, "BLOB_UPLOAD_UNKNOWN");
  });

  it("expiry alarm during PATCH waits", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const first = randomBytes(partSize + 10);
    const second = randomBytes(2000);
    await patchChunk(location, first, 0);
    const { stream, controller, pulls } = controlledStream();

    const pending = registryFetch(location, { method: "PATCH", body: stream });
    controller.enqueue(second.subarray(0, 1000));
    await waitForPulls(pulls, 2);
    expect(await runDurableObjectAlarm(uploadSessionStub(uploadId))).toBe(true);
    controller.enqueue(second.subarray(1000));
    controller.close();

    const response = await pending;
    expect(response.status).toBe(202);
    expect(response.headers.get("Range")).toBe(`0-${first.byteLength + second.byteLength - 1}`);
    const alarm = await runInDurableObject(uploadSessionStub(uploadId), (_instance, state) => state.storage.getAlarm());
    expect(alarm).not.toBeNull();

    const bytes = concatBytes(first, second);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("rejected chunk aborts its multipart upload", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const created = await recordMultipartUploads(uploadId);
    const keysBefore = await listBucketKeys();

    // The body is shorter than its Content-Range, which the session finds only after writing a part.
    const response = await registryFetch(location, {
      method: "PATCH",
      headers: { "Content-Range": `0-${partSize + 99}` },
      body: streamOf(randomBytes(partSize), randomBytes(10)),
    });

    await expectRegistryError(response, 400, "SIZE_INVALID");
    expect(created).toHaveLength(1);
    const { storageKey } = (await readSessionStorage(uploadId)).get("state") as { storageKey: string };
    const leftover = env.BLOBS.resumeMultipartUpload(storageKey, created[0]!);
    await expect(leftover.complete([])).rejects.toThrow();
    expect(await listBucketKeys()).toEqual(keysBefore);

    expect((await uploadStatus(location)).headers.get("Range")).toBe("0-0");
    const bytes = randomBytes(partSize + 1);
    expect((await patchChunk(location, bytes, 0)).status).toBe(202);
    expect((await putUpload(location, await digestOf(bytes))).status).toBe(201);
    await expectStoredBlob(name, bytes);
  });

  it("PATCH body that fails keeps the offset", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const first = randomBytes(partSize + 100);
    const second = randomBytes(partSize + 200);
    await patchChunk(location, first, 0);
    const keysBefore = await listBucketKeys();

    // A part fills and is written before the body fails.
    const body = failingStream(second.subarray(0, partSize + 50));
    const result = await runInDurableObject(uploadSessionStub(uploadId), (instance: UploadSession) =>
      instance.append({ name, body, start: first.byteLength, length: null }),
    );

    const error = rpcError(result);
    expect(error.code).toBe("BLOB_UPLOAD_INVALID");
    expect(error.message).toBe("the request body ended before it was complete");
    expect((await uploadStatus(location)).headers.get("Range")).toBe(`0-${first.byteLength - 1}`);
    expect(await listBucketKeys()).toEqual(keysBefore);

    expect((await patchChunk(location, second, first.byteLength)).status).toBe(202);
    const bytes = concatBytes(first, second);
    const completed = await putUpload(location, await digestOf(bytes));
    expect(completed.status).toBe(201);
    expect(completed.headers.get("Docker-Content-Digest")).toBe(await digestOf(bytes));
    await expectStoredBlob(name, bytes);
  });

  it("PUT body that fails keeps the offset", async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const first = randomBytes(1000);
    const last = randomBytes(500);
    await patchChunk(location, first, 0);
    const bytes = concatBytes(first, last);
    const digest = await digestOf(bytes);

    const result = await runInDurableObject(uploadSessionStub(uploadId), (instance: UploadSession) =>
      instance.commit({ name, body: failingStream(last.subarray(0, 200)), start: null, length: null, digest }),
    );

    expect(rpcError(result).code).toBe("BLOB_UPLOAD_INVALID");
    expect((await uploadStatus(location)).headers.get("Range")).toBe(`0-${first.byteLength - 1}`);
    expect(await findBlobRow(digest)).toBeNull();

    const completed = await putUpload(location, digest, last, { "Content-Range": `${first.byteLength}-${bytes.byteLength - 1}` });
    expect(completed.status).toBe(201);
    expect(completed.headers.get("Docker-Content-Digest")).toBe(digest);
    await expectStoredBlob(name, bytes);
  });

  it("PUT past 10,000 parts returns SIZE_INVALID", { timeout: largeTimeout }, async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const bytes = randomBytes(partSize + 10);
    await patchChunk(location, bytes, 0);
    // Pretend 9,999 more parts were written, so the 10-byte tail would be part 10,001.
    await runInDurableObject(uploadSessionStub(uploadId), async (_instance, state) => {
      const saved = (await state.storage.get<{ parts: R2UploadedPart[] }>("state"))!;
      expect(saved.parts).toHaveLength(1);
      const padding = Array.from({ length: maxParts - 1 }, (_, index) => ({ partNumber: index + 2, etag: `never-written-${index + 2}` }));
      await state.storage.put("state", { ...saved, parts: [...saved.parts, ...padding] });
    });

    const response = await putUpload(location, await digestOf(bytes));

    const error = await expectRegistryError(response, 400, "SIZE_INVALID");
    expect(error.message).toBe(`blob exceeds ${maxParts} parts of ${partSize} bytes`);
    expect((await uploadStatus(location)).headers.get("Range")).toBe(`0-${bytes.byteLength - 1}`);
    expect(await findBlobRow(await digestOf(bytes))).toBeNull();
    expect((await registryFetch(location, { method: "DELETE" })).status).toBe(204);
  });

  it("each request extends expiry", async () => {
    const name = uniqueImage();
    const { uploadId, location } = await openUpload(name);
    const alarmAt = () => runInDurableObject(uploadSessionStub(uploadId), (_instance, state) => state.storage.getAlarm());

    const opened = await alarmAt();
    expect(opened).not.toBeNull();
    await scheduler.wait(20);
    await patchChunk(location, randomBytes(10));
    const patched = await alarmAt();
    expect(patched).toBeGreaterThan(opened!);
    expect(patched! - Date.now()).toBeGreaterThan(86_000 * 1000);
  });
});

/** Returns the error of a Durable Object result, failing the test when the result is a value. */
function rpcError(result: RpcResult<unknown>): RegistryErrorData {
  expect(result.ok, "the session returned a value, not an error").toBe(false);
  return (result as Extract<RpcResult<unknown>, { ok: false }>).error;
}

/** Returns a body stream that yields `bytes` in 64 KiB chunks and then fails, as when a client disconnects. */
function failingStream(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.byteLength) {
        controller.error(new Error("the client disconnected"));
        return;
      }
      controller.enqueue(bytes.slice(offset, offset + 65_536));
      offset += 65_536;
    },
  });
}

/** Creates a request body that stays open until the test closes it, and counts the reads it has served. */
function controlledStream() {
  const pulls = { count: 0 };
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({
    start(streamController) {
      controller = streamController;
    },
    pull() {
      pulls.count += 1;
    },
  });
  return { stream, controller, pulls };
}

/**
 * Waits until the stream's reader asked for `count` chunks, then a little
 * longer, so the session is inside its read loop when the test continues.
 */
async function waitForPulls(pulls: { count: number }, count: number): Promise<void> {
  for (let attempt = 0; attempt < 200 && pulls.count < count; attempt++) await scheduler.wait(10);
  expect(pulls.count).toBeGreaterThanOrEqual(count);
  await scheduler.wait(50);
}

/** Records the id of every multipart upload the session's object creates from now on. */
async function recordMultipartUploads(uploadId: string): Promise<string[]> {
  const created: string[] = [];
  await runInDurableObject(uploadSessionStub(uploadId), (instance) => {
    const blobs = (instance as unknown as { env: Env }).env.BLOBS;
    const create = blobs.createMultipartUpload.bind(blobs);
    blobs.createMultipartUpload = async (...args: Parameters<R2Bucket["createMultipartUpload"]>) => {
      const upload = await create(...args);
      created.push(upload.uploadId);
      return upload;
    };
  });
  return created;
}
