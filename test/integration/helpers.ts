import { runInDurableObject } from "cloudflare:test";
import { env, exports } from "cloudflare:workers";
import { expect } from "vitest";
import type { ErrorCode } from "../../src/errors";

/** Origin of the requests sent to the Worker under test. The Worker ignores the host. */
export const origin = "http://registry.test";

export const MiB = 1024 * 1024;

/** Multipart part size in the tests, from UPLOAD_PART_SIZE_MIB in vitest.config.ts. */
export const partSize = 5 * MiB;

/** The administrator's password, from ADMIN_PASSWORD in vitest.config.ts. */
export const adminPassword = "test-admin-password";

/** Returns a Basic Authorization header value. */
export function basicAuthorization(user: string, password: string): string {
  return `Basic ${btoa(`${user}:${password}`)}`;
}

/**
 * Sends a request to the Worker under test as the administrator, unless the
 * request sets its own Authorization header. `path` starts with a slash, such as `/v2/`.
 */
export async function registryFetch(path: string, init?: RequestInit): Promise<Response> {
  const request = new Request(`${origin}${path}`, init);
  if (!request.headers.has("Authorization")) request.headers.set("Authorization", basicAuthorization("admin", adminPassword));
  return exports.default.fetch(request);
}

/** Sends a request to the Worker under test without credentials. */
export async function anonymousFetch(path: string, init?: RequestInit): Promise<Response> {
  return exports.default.fetch(new Request(`${origin}${path}`, init));
}

let imageCounter = 0;

/**
 * Returns an image name in the `docker-local` repository that no other test
 * of the file uses, so tests sharing a file's storage do not see each other's blobs.
 */
export function uniqueImage(label = "app"): string {
  imageCounter += 1;
  return `docker-local/${label}-${imageCounter}-${crypto.randomUUID().slice(0, 8)}`;
}

/** Returns `n` random bytes. */
export function randomBytes(n: number): Uint8Array {
  const bytes = new Uint8Array(n);
  // getRandomValues fills at most 65,536 bytes per call.
  for (let offset = 0; offset < n; offset += 65_536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(n, offset + 65_536)));
  }
  return bytes;
}

/** Returns the lowercase hex SHA-256 of `bytes`, computed by WebCrypto. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  return toHex(await crypto.subtle.digest("SHA-256", bytes));
}

/** Returns the lowercase hex SHA-1 of `bytes`, computed by WebCrypto. */
export async function sha1Hex(bytes: Uint8Array): Promise<string> {
  return toHex(await crypto.subtle.digest("SHA-1", bytes));
}

/** Returns the OCI digest `sha256:<hex>` of `bytes`. */
export async function digestOf(bytes: Uint8Array): Promise<string> {
  return `sha256:${await sha256Hex(bytes)}`;
}

function toHex(buffer: ArrayBuffer): string {
  return Array.from(new Uint8Array(buffer), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Joins byte arrays into one. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const joined = new Uint8Array(parts.reduce((total, part) => total + part.byteLength, 0));
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.byteLength;
  }
  return joined;
}

/** Pushes a blob to the image in one monolithic `POST ?digest=` and returns its digest. */
export async function uploadBlob(name: string, bytes: Uint8Array): Promise<string> {
  const digest = await digestOf(bytes);
  const response = await registryFetch(`/v2/${name}/blobs/uploads/?digest=${digest}`, {
    method: "POST",
    headers: { "Content-Type": "application/octet-stream" },
    body: bytes,
  });
  if (response.status !== 201) {
    throw new Error(`uploading ${digest} to ${name} returned ${response.status}: ${await response.text()}`);
  }
  return digest;
}

/** An upload session opened by `POST /v2/<name>/blobs/uploads/`. */
export interface OpenedUpload {
  uploadId: string;
  /** The session URL path from the Location header, such as `/v2/<name>/blobs/uploads/<id>`. */
  location: string;
}

/** Opens an upload session for the image and returns its id and Location path. */
export async function openUpload(name: string): Promise<OpenedUpload> {
  const response = await registryFetch(`/v2/${name}/blobs/uploads/`, { method: "POST" });
  if (response.status !== 202) {
    throw new Error(`opening an upload for ${name} returned ${response.status}: ${await response.text()}`);
  }
  return { uploadId: response.headers.get("Docker-Upload-UUID")!, location: response.headers.get("Location")! };
}

/** Sends one PATCH chunk with Content-Length and, when `start` is given, Content-Range. */
export async function patchChunk(location: string, chunk: Uint8Array, start?: number): Promise<Response> {
  const headers: Record<string, string> = { "Content-Type": "application/octet-stream", "Content-Length": String(chunk.byteLength) };
  if (start !== undefined) headers["Content-Range"] = `${start}-${start + chunk.byteLength - 1}`;
  return registryFetch(location, { method: "PATCH", headers, body: chunk });
}

/** Returns a ReadableStream that yields `chunks` one by one and then closes, so its request has no Content-Length. */
export function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  let index = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const chunk = chunks[index];
      index += 1;
      if (chunk === undefined) controller.close();
      else controller.enqueue(chunk);
    },
  });
}

/** Reads a response body into one byte array. */
export async function readBytes(response: Response): Promise<Uint8Array> {
  return new Uint8Array(await response.arrayBuffer());
}

/**
 * Checks that the response is an OCI error: the code's status, a JSON
 * Content-Type and the body `{"errors":[{"code","message","detail"}]}` with
 * exactly one error of `code`. Returns that error for further checks.
 */
export async function expectRegistryError(
  response: Response,
  status: number,
  code: ErrorCode,
): Promise<{ code: string; message: string; detail: unknown }> {
  expect(response.status).toBe(status);
  expect(response.headers.get("Content-Type")).toMatch(/^application\/json/);

  const body = (await response.json()) as { errors: { code: string; message: string; detail: unknown }[] };
  expect(Object.keys(body)).toEqual(["errors"]);
  expect(body.errors).toHaveLength(1);

  const [error] = body.errors;
  expect(Object.keys(error!).sort()).toEqual(["code", "detail", "message"]);
  expect(error!.code).toBe(code);
  expect(typeof error!.message).toBe("string");
  expect(error!.message.length).toBeGreaterThan(0);
  return error!;
}

/** Lists every key in the R2 bucket under `prefix`, following list cursors. */
export async function listBucketKeys(prefix = ""): Promise<string[]> {
  const keys: string[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await env.BLOBS.list({ prefix, cursor });
    keys.push(...page.objects.map((object) => object.key));
    if (!page.truncated) return keys;
    cursor = page.cursor;
  }
}

/** The blob's row in D1, whatever image it is linked to. */
export interface StoredBlobRow {
  digest: string;
  size: number;
  storage_key: string;
  sha1: string;
  md5: string;
}

/** Reads the blob's row from D1, or null when the registry stored none. */
export async function findBlobRow(digest: string): Promise<StoredBlobRow | null> {
  return env.DB.prepare("SELECT digest, size, storage_key, sha1, md5 FROM blobs WHERE digest = ?").bind(digest).first<StoredBlobRow>();
}

/** Returns a stub of the upload session's Durable Object. */
export function uploadSessionStub(uploadId: string) {
  return env.UPLOAD_SESSIONS.get(env.UPLOAD_SESSIONS.idFromName(uploadId));
}

/** Returns every key/value pair in the upload session's Durable Object storage. */
export async function readSessionStorage(uploadId: string): Promise<Map<string, unknown>> {
  return runInDurableObject(uploadSessionStub(uploadId), (_instance, state) => state.storage.list());
}
