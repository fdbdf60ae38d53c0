import { formatRange } from "../../durable-objects/upload-session";
import { allows } from "../auth/authorize";
import { addLogFields, type AppContext } from "../context";
import { RegistryError, unwrapRpcResult, type RpcResult } from "../errors";
import { log } from "../log";
import { parseDigest, parseImageName, type ImageName } from "../names";
import type { RouteParams } from "../routes";
import { findBlobToMount } from "../virtual/push";
import { imageStore, locationName, resolveImage } from "./shared";

const uploadIdPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * `POST /v2/<name>/blobs/uploads/`: opens an upload session, or with
 * `?digest=` stores the whole body in one request, or with `?mount=&from=`
 * links a blob from another image.
 */
export async function start(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const mountDigest = c.req.query("mount");
  const from = c.req.query("from");
  const rawDigest = c.req.query("digest");
  // Checked before the session opens, so an invalid digest leaves no session behind.
  const digest = rawDigest === undefined ? undefined : parseBlobDigest(rawDigest);

  if (mountDigest !== undefined && from !== undefined) {
    const mounted = await tryMount(c, image, parseDigest(mountDigest), from);
    if (mounted) return blobCreated(locationName(c, image), mounted);
  }

  const uploadId = crypto.randomUUID();
  addLogFields(c, { uploadId });
  const session = uploadSession(c, uploadId);
  const partSize = await session.open(image.full, uploadId);

  if (digest !== undefined) {
    const committed = unwrapSessionResult(
      c,
      await session.commit({ name: image.full, body: c.req.raw.body, start: null, length: declaredLength(c), digest }),
    );
    unwrapRpcResult(await imageStore(c.env, image).linkUploadedBlob(image.full, image.repositoryKey, committed));
    return blobCreated(locationName(c, image), committed.digest);
  }

  // Every PATCH rewrites the bytes that have not yet filled a part, so many
  // chunks smaller than a part rewrite the same bytes many times.
  const response = uploadAccepted(locationName(c, image), uploadId, 0);
  response.headers.set("OCI-Chunk-Min-Length", String(partSize));
  return response;
}

/** `GET /v2/<name>/blobs/uploads/<id>`: the session's progress. */
export async function status(c: AppContext, params: RouteParams): Promise<Response> {
  const { image, uploadId } = await resolveSession(c, params);
  const current = unwrapRpcResult(await uploadSession(c, uploadId).status(image.full));
  const response = uploadAccepted(locationName(c, image), uploadId, current.offset);
  return new Response(null, { status: 204, headers: response.headers });
}

/** `PATCH /v2/<name>/blobs/uploads/<id>`: appends one chunk, streamed, with or without Content-Range. */
export async function append(c: AppContext, params: RouteParams): Promise<Response> {
  const { image, uploadId } = await resolveSession(c, params);
  const range = parseContentRange(c.req.header("Content-Range") ?? null);
  const length = declaredLength(c);
  if (range && length !== null && range.end - range.start + 1 !== length) {
    throw new RegistryError("RANGE_INVALID", `Content-Range ${range.start}-${range.end} does not match Content-Length ${length}`);
  }

  const current = unwrapSessionResult(
    c,
    await uploadSession(c, uploadId).append({
      name: image.full,
      body: c.req.raw.body,
      start: range?.start ?? null,
      length: range ? range.end - range.start + 1 : length,
    }),
  );
  return uploadAccepted(locationName(c, image), uploadId, current.offset);
}

/** `PUT /v2/<name>/blobs/uploads/<id>?digest=`: appends an optional last chunk and completes the blob. */
export async function commit(c: AppContext, params: RouteParams): Promise<Response> {
  const { image, uploadId } = await resolveSession(c, params);
  const rawDigest = c.req.query("digest");
  if (rawDigest === undefined) throw new RegistryError("DIGEST_INVALID", "the digest query parameter is required to complete an upload");
  const digest = parseBlobDigest(rawDigest);
  addLogFields(c, { digest });

  const range = parseContentRange(c.req.header("Content-Range") ?? null);
  const committed = unwrapSessionResult(
    c,
    await uploadSession(c, uploadId).commit({
      name: image.full,
      body: c.req.raw.body,
      start: range?.start ?? null,
      length: range ? range.end - range.start + 1 : declaredLength(c),
      digest,
    }),
  );
  // NOTE: a session outlives a delete of its repository, so when a repository
  // with the same key is created before the session expires, the blob is
  // linked into the new repository.
  unwrapRpcResult(await imageStore(c.env, image).linkUploadedBlob(image.full, image.repositoryKey, committed));
  return blobCreated(locationName(c, image), committed.digest);
}

/** `DELETE /v2/<name>/blobs/uploads/<id>`: cancels the session. */
export async function cancel(c: AppContext, params: RouteParams): Promise<Response> {
  const { image, uploadId } = await resolveSession(c, params);
  unwrapRpcResult(await uploadSession(c, uploadId).cancel(image.full));
  return new Response(null, { status: 204 });
}

async function resolveSession(c: AppContext, params: RouteParams): Promise<{ image: ImageName; uploadId: string }> {
  const image = await resolveImage(c, params.name);
  const uploadId = params.uploadId ?? "";
  addLogFields(c, { uploadId });
  if (!uploadIdPattern.test(uploadId))
    throw new RegistryError("BLOB_UPLOAD_UNKNOWN", "upload id is not one this registry issued", { uploadId });
  return { image, uploadId };
}

/**
 * Returns the value of an append or commit, or throws its error. A body that
 * ended early, usually because the client disconnected, is logged at level
 * warn with the request's ids, because that client never reads the response.
 */
function unwrapSessionResult<T>(c: AppContext, result: RpcResult<T>): T {
  if (!result.ok && result.error.code === "BLOB_UPLOAD_INVALID") {
    log.warn("upload request body ended early", { requestId: c.get("requestId"), ...c.get("logFields"), error: result.error.message });
  }
  return unwrapRpcResult(result);
}

function uploadSession(c: AppContext, uploadId: string) {
  return c.env.UPLOAD_SESSIONS.get(c.env.UPLOAD_SESSIONS.idFromName(uploadId));
}

/** Links the blob from `from` when that image has it; returns its digest, or null to fall back to an upload. */
async function tryMount(c: AppContext, image: ImageName, digest: string, from: string): Promise<string | null> {
  addLogFields(c, { digest, mountFrom: from });
  let source: ImageName;
  try {
    source = parseImageName(from);
  } catch {
    return null;
  }
  // A source the caller cannot read is treated like one without the blob, so
  // a mount never reveals or copies content across a permission boundary.
  if (!(await allows(c, source, "read"))) return null;
  const blob = await findBlobToMount(c, source, digest);
  if (!blob) return null;
  unwrapRpcResult(await imageStore(c.env, image).linkExistingBlob(image.full, image.repositoryKey, digest));
  return digest;
}

function declaredLength(c: AppContext): number | null {
  const header = c.req.header("Content-Length");
  return header !== undefined && /^\d+$/.test(header) ? Number(header) : null;
}

/** Parses Content-Range as `<start>-<end>`, the form the distribution spec uses for chunks. */
function parseContentRange(header: string | null): { start: number; end: number } | null {
  if (header === null) return null;
  const match = /^(?:bytes )?(\d+)-(\d+)(?:\/(?:\d+|\*))?$/.exec(header.trim());
  if (!match) throw new RegistryError("RANGE_INVALID", "Content-Range must be '<start>-<end>'", { contentRange: header });
  const start = Number(match[1]);
  const end = Number(match[2]);
  if (end < start) throw new RegistryError("RANGE_INVALID", "Content-Range end is before its start", { contentRange: header });
  return { start, end };
}

function uploadAccepted(name: string, uploadId: string, offset: number): Response {
  return new Response(null, {
    status: 202,
    headers: {
      Location: `/v2/${name}/blobs/uploads/${uploadId}`,
      "Docker-Upload-UUID": uploadId,
      Range: formatRange(offset),
      "Content-Length": "0",
    },
  });
}

function blobCreated(name: string, digest: string): Response {
  return new Response(null, {
    status: 201,
    headers: { Location: `/v2/${name}/blobs/${digest}`, "Docker-Content-Digest": digest, "Content-Length": "0" },
  });
}

/**
 * Validates the digest of a blob upload. Uploads hash only sha256 as the
 * bytes stream through, so another algorithm is rejected before the session
 * is touched.
 */
function parseBlobDigest(raw: string): string {
  const digest = parseDigest(raw);
  if (!digest.startsWith("sha256:")) {
    throw new RegistryError("DIGEST_INVALID", "blob uploads accept sha256 digests only", { digest });
  }
  return digest;
}
