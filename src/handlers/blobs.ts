import { addLogFields, type AppContext } from "../context";
import { RegistryError, unwrapRpcResult } from "../errors";
import { parseDigestFromPath, type ImageName } from "../names";
import type { RouteParams } from "../routes";
import { cacheBlob } from "../remote/pull-through";
import { findLinkedBlob, getRemoteSettings, type BlobRow } from "../storage/metadata";
import { etagOf, imageStore, requireUpstreamFetch, resolveImage } from "./shared";

/** `GET` and `HEAD /v2/<name>/blobs/<digest>`, with single byte ranges and If-Range. */
export async function get(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const digest = parseDigestFromPath(params.digest ?? "");
  addLogFields(c, { digest });

  const blob = (await findLinkedBlob(c.env.DB, image.full, digest)) ?? (await cacheFromUpstream(c, image, digest));
  if (!blob) throw new RegistryError("BLOB_UNKNOWN", `blob ${digest} is not in repository ${image.full}`, { digest });
  return blobResponse(c, blob);
}

/** Builds the response of a blob GET or HEAD from R2, with the single byte range that Range and If-Range ask for. */
export async function blobResponse(c: AppContext, blob: BlobRow): Promise<Response> {
  const digest = blob.digest;
  const range = ifRangeMatches(c.req.header("If-Range") ?? null, digest) ? parseRange(c.req.header("Range") ?? null, blob.size) : null;
  const headers = new Headers({
    "Content-Type": "application/octet-stream",
    "Docker-Content-Digest": digest,
    ETag: etagOf(digest),
    "Accept-Ranges": "bytes",
    "Cache-Control": "max-age=31536000, immutable",
  });
  const status = range ? 206 : 200;
  const length = range ? range.end - range.start + 1 : blob.size;
  headers.set("Content-Length", String(length));
  if (range) headers.set("Content-Range", `bytes ${range.start}-${range.end}/${blob.size}`);

  if (c.req.method === "HEAD") return new Response(null, { status, headers });

  const object = await c.env.BLOBS.get(blob.storage_key, range ? { range: { offset: range.start, length } } : {});
  if (!object) throw new Error(`blob ${digest} is recorded in D1 but missing from R2 at ${blob.storage_key}`);
  return new Response(object.body, { status, headers });
}

/** Fetches a blob that a remote repository lacks from its upstream; returns null for a local repository. */
async function cacheFromUpstream(c: AppContext, image: ImageName, digest: string) {
  const remote = await getRemoteSettings(c.env.DB, image.repositoryKey);
  if (!remote) return null;
  await requireUpstreamFetch(c, image, remote);
  return cacheBlob(c.env, image, remote, digest);
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
