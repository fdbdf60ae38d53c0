import { addLogFields, type AppContext } from "../context";
import { RegistryError, unwrapRpcResult } from "../errors";
import { parseDigestFromPath, type ImageName } from "../names";
import type { RouteParams } from "../routes";
import { fillBlob } from "../remote/fill";
import { headUpstreamBlob } from "../remote/upstream-blob";
import { findLinkedBlob, getRemoteSettings, type BlobRow, type RemoteSettingsRow } from "../storage/metadata";
import { etagOf, imageStore, requireUpstreamFetch, resolveImage } from "./shared";

/** `GET` and `HEAD /v2/<name>/blobs/<digest>`, with single byte ranges and If-Range. */
export async function get(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const digest = parseDigestFromPath(params.digest ?? "");
  addLogFields(c, { digest });

  const blob = await findLinkedBlob(c.env.DB, image.full, digest);
  if (blob) return blobResponse(c, blob);

  const remote = await getRemoteSettings(c.env.DB, image.repositoryKey);
  if (!remote) throw blobUnknown(image, digest);
  await requireUpstreamFetch(c, image, remote);
  const response = await upstreamBlobResponse(c, image, remote, digest);
  if (!response) throw blobUnknown(image, digest);
  return response;
}

/** Serves a blob from R2 for GET or HEAD, or the single byte range that Range and If-Range ask for. */
export async function blobResponse(c: AppContext, blob: BlobRow): Promise<Response> {
  const range = requestedRange(c, blob.digest, blob.size);
  const { status, headers } = blobHeaders(blob.digest, blob.size, range);
  if (c.req.method === "HEAD") return new Response(null, { status, headers });

  const options = range ? { range: { offset: range.start, length: range.end - range.start + 1 } } : {};
  const object = await c.env.BLOBS.get(blob.storage_key, options);
  if (!object) throw new Error(`blob ${blob.digest} is recorded in D1 but missing from R2 at ${blob.storage_key}`);
  return new Response(object.body, { status, headers });
}

/**
 * Serves a blob that a remote repository's image lacks. HEAD sends HEAD
 * upstream and stores nothing. A GET with Range waits until the whole blob is
 * stored and then serves the range from R2. Any other GET streams the bytes
 * to the client that starts the fill while they are stored. Clients that
 * arrive during a fill wait for it and read from R2. Returns null when the
 * upstream does not have the blob or the repository is offline. The caller
 * checks that the request may fetch upstream.
 */
export async function upstreamBlobResponse(
  c: AppContext,
  image: ImageName,
  remote: RemoteSettingsRow,
  digest: string,
): Promise<Response | null> {
  if (c.req.method === "HEAD") {
    const size = await headUpstreamBlob(c.env, image, remote, digest);
    if (size === null) return null;
    const { status, headers } = blobHeaders(digest, size, requestedRange(c, digest, size));
    return new Response(null, { status, headers });
  }

  const wantsRange = c.req.header("Range") !== undefined && ifRangeMatches(c.req.header("If-Range") ?? null, digest);
  const fill = await fillBlob(c.env, image, remote, digest, !wantsRange);
  if (fill.status === "missing") return null;
  if (fill.status === "streaming") return new Response(fill.body, blobHeaders(digest, fill.size, null));

  const blob = await findLinkedBlob(c.env.DB, image.full, digest);
  if (!blob) throw new Error(`blob ${digest} was filled from upstream but is not linked to ${image.full}`);
  return blobResponse(c, blob);
}

function blobUnknown(image: ImageName, digest: string): RegistryError {
  return new RegistryError("BLOB_UNKNOWN", `blob ${digest} is not in repository ${image.full}`, { digest });
}

/** Returns the byte range that the request's Range and If-Range headers select, or null for the whole blob. */
function requestedRange(c: AppContext, digest: string, size: number): ByteRange | null {
  if (!ifRangeMatches(c.req.header("If-Range") ?? null, digest)) return null;
  return parseRange(c.req.header("Range") ?? null, size);
}

/** Builds the status and headers of a blob response, 206 with Content-Range when `range` is set. */
function blobHeaders(digest: string, size: number, range: ByteRange | null): { status: 200 | 206; headers: Headers } {
  const headers = new Headers({
    "Content-Type": "application/octet-stream",
    "Docker-Content-Digest": digest,
    ETag: etagOf(digest),
    "Accept-Ranges": "bytes",
    "Cache-Control": "max-age=31536000, immutable",
  });
  const length = range ? range.end - range.start + 1 : size;
  headers.set("Content-Length", String(length));
  if (range) headers.set("Content-Range", `bytes ${range.start}-${range.end}/${size}`);
  return { status: range ? 206 : 200, headers };
}

/** `DELETE /v2/<name>/blobs/<digest>`: unlinks the blob from this image only. */
export async function remove(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const digest = parseDigestFromPath(params.digest ?? "");
  addLogFields(c, { digest });

  const removed = unwrapRpcResult(await imageStore(c.env, image).unlinkBlob(image.full, digest));
  if (!removed) throw new RegistryError("BLOB_UNKNOWN", `blob ${digest} is not in repository ${image.full}`, { digest });
  return new Response(null, { status: 202, headers: { "Content-Length": "0" } });
}

/**
 * Returns whether Range applies under If-Range (RFC 9110 section 13.1.5).
 * Only the blob's own strong ETag matches. A date never does, because blobs
 * send no Last-Modified, so the whole blob is sent instead of the range.
 */
function ifRangeMatches(ifRange: string | null, digest: string): boolean {
  return ifRange === null || ifRange.trim() === etagOf(digest);
}

interface ByteRange {
  start: number;
  end: number;
}

/**
 * Parses a Range header with one byte range (`a-b`, `a-` or `-n`). Returns
 * null when the whole blob is wanted; throws RANGE_INVALID (416) when the
 * range cannot be satisfied.
 */
export function parseRange(header: string | null, size: number): ByteRange | null {
  if (header === null) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === "" && match[2] === "")) {
    // RFC 9110 lets a server ignore a Range it does not understand, such as several ranges.
    return null;
  }

  const unsatisfiable = new RegistryError("RANGE_INVALID", `range ${header} cannot be satisfied for a blob of ${size} bytes`, null, {
    "Content-Range": `bytes */${size}`,
  });
  if (match[1] === "") {
    const suffix = Number(match[2]);
    if (suffix === 0 || size === 0) throw unsatisfiable;
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }

  const start = Number(match[1]);
  const end = match[2] === "" ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || start > end) throw unsatisfiable;
  return { start, end };
}
