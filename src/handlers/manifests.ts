import { addLogFields, type AppContext } from "../context";
import { RegistryError, unwrapRpcResult } from "../errors";
import { parseManifest } from "../manifests/schema";
import { manifestStorageKey } from "../manifests/storage-key";
import { assertTag, isDigestReference, parseDigest, type ImageName } from "../names";
import type { RouteParams } from "../routes";
import { digestBytes } from "../storage/hashing";
import { fillManifest, revalidateTagOnce } from "../remote/fill";
import type { CachedTag } from "../remote/revalidate-tag";
import type { Env } from "../env";
import { findManifest, findTaggedManifest, getRemoteSettings, type RemoteSettingsRow } from "../storage/metadata";
import { linkMemberBlobs } from "../virtual/push";
import { etagOf, imageStore, locationName, requireUpstreamFetch, requireWriteAction, resolveImage, storeManifest } from "./shared";

/** Manifests larger than this are rejected with 413. */
export const maxManifestBytes = 4 * 1024 * 1024;

/** `GET` and `HEAD /v2/<name>/manifests/<reference>`, negotiated on Accept. */
export async function get(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const reference = decodeReference(params.reference ?? "");
  return manifestResponse(c, reference, await resolveReference(c, image, reference));
}

/**
 * Builds the response of a manifest GET or HEAD: the exact stored bytes with
 * their digest, 304 for a matching If-None-Match, and a Warning header when
 * a remote repository served a stale copy.
 */
export async function manifestResponse(c: AppContext, reference: string, found: CachedTag): Promise<Response> {
  const { manifest, stale } = found;
  addLogFields(c, { reference, digest: manifest.digest });

  assertAccepted(c.req.header("Accept") ?? null, manifest.media_type);
  const headers = new Headers({
    "Content-Type": manifest.media_type,
    "Content-Length": String(manifest.size),
    "Docker-Content-Digest": manifest.digest,
    ETag: etagOf(manifest.digest),
  });
  if (stale) headers.set("Warning", '110 - "Response is stale"');
  if (matchesEtag(c.req.header("If-None-Match") ?? null, manifest.digest)) {
    return new Response(null, { status: 304, headers });
  }
  if (c.req.method === "HEAD") return new Response(null, { status: 200, headers });

  const object = await c.env.BLOBS.get(manifestStorageKey(manifest.digest));
  if (!object) throw new Error(`manifest ${manifest.digest} is recorded in D1 but missing from R2`);
  return new Response(object.body, { status: 200, headers });
}

/** `PUT /v2/<name>/manifests/<reference>`: stores the exact bytes and moves the tag. */
export async function put(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const reference = decodeReference(params.reference ?? "");
  const byDigest = isDigestReference(reference);
  if (byDigest) parseDigest(reference);
  else assertTag(reference);

  const bytes = await readLimitedBody(c, maxManifestBytes);
  const algorithm = byDigest && reference.startsWith("sha512:") ? "sha512" : "sha256";
  const digest = await digestBytes(algorithm, bytes);
  addLogFields(c, { reference, digest });
  if (byDigest && digest !== reference) {
    throw new RegistryError("DIGEST_INVALID", `manifest content has digest ${digest}, not ${reference}`, {
      expected: reference,
      actual: digest,
    });
  }

  const manifest = parseManifest(bytes, c.req.header("Content-Type") ?? null);
  if (!byDigest) {
    // Moving an existing tag to other content overwrites it, which needs delete.
    const current = await findTaggedManifest(c.env.DB, image.full, reference);
    if (current && current.digest !== digest) await requireWriteAction(c, image, "delete");
  }
  if (c.get("pushThrough")) await linkMemberBlobs(c, image, manifest);
  await storeManifest(c.env, image, { digest, bytes, manifest, tag: byDigest ? null : reference });

  const headers = new Headers({
    Location: `/v2/${locationName(c, image)}/manifests/${digest}`,
    "Docker-Content-Digest": digest,
    "Content-Length": "0",
  });
  if (manifest.subjectDigest) headers.set("OCI-Subject", manifest.subjectDigest);
  return new Response(null, { status: 201, headers });
}

/** `DELETE /v2/<name>/manifests/<reference>`: by digest removes the manifest, by tag only the tag. */
export async function remove(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const reference = decodeReference(params.reference ?? "");
  addLogFields(c, { reference });
  const store = imageStore(c.env, image);

  if (isDigestReference(reference)) {
    const digest = parseDigest(reference);
    if (!unwrapRpcResult(await store.deleteManifest(image.full, digest))) {
      throw new RegistryError("MANIFEST_UNKNOWN", `manifest ${digest} is not in repository ${image.full}`, { digest });
    }
  } else {
    assertTag(reference);
    if (!unwrapRpcResult(await store.deleteTag(image.full, reference))) {
      throw new RegistryError("MANIFEST_UNKNOWN", `tag ${reference} is not in repository ${image.full}`, { tag: reference });
    }
  }
  return new Response(null, { status: 202, headers: { "Content-Length": "0" } });
}

/**
 * Percent-decodes a tag or digest taken from the request path. A malformed
 * escape such as `%zz` is DIGEST_INVALID when the reference has a colon,
 * encoded or not, and TAG_INVALID otherwise.
 */
export function decodeReference(encoded: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch {
    if (/:|%3a/i.test(encoded)) {
      throw new RegistryError("DIGEST_INVALID", "digest in the path contains a malformed percent escape", { digest: encoded });
    }
    throw new RegistryError("TAG_INVALID", "tag in the path contains a malformed percent escape", { tag: encoded });
  }
}

/**
 * Finds the manifest of a tag or digest. A remote repository fetches a missing
 * one from its upstream and revalidates a cached tag after tagCacheSeconds.
 */
async function resolveReference(c: AppContext, image: ImageName, reference: string): Promise<CachedTag> {
  assertReference(reference);
  const remote = await getRemoteSettings(c.env.DB, image.repositoryKey);
  const stored = await findStoredManifest(c.env, image, remote, reference);
  if (stored) return stored;

  if (remote) await requireUpstreamFetch(c, image, remote);
  const cached = remote ? await fillManifest(c.env, image, remote, reference) : null;
  if (cached) return { manifest: cached, stale: false };
  throw manifestUnknown(image.full, reference);
}

/** Validates a tag or digest reference, throwing TAG_INVALID or DIGEST_INVALID. */
export function assertReference(reference: string): void {
  if (isDigestReference(reference)) parseDigest(reference);
  else assertTag(reference);
}

/**
 * Finds the manifest of a tag or digest that the image already stores. A
 * remote repository's cached tag is revalidated upstream after
 * tagCacheSeconds. Returns null when the image does not store it.
 */
export async function findStoredManifest(
  env: Env,
  image: ImageName,
  remote: RemoteSettingsRow | null,
  reference: string,
): Promise<CachedTag | null> {
  const byDigest = isDigestReference(reference);
  const stored = byDigest ? await findManifest(env.DB, image.full, reference) : await findTaggedManifest(env.DB, image.full, reference);
  if (!stored) return null;
  if (remote && !byDigest) return revalidateTagOnce(env, image, remote, reference, stored);
  return { manifest: stored, stale: false };
}

/** Builds MANIFEST_UNKNOWN for a tag or digest that the named image does not have. */
export function manifestUnknown(name: string, reference: string): RegistryError {
  if (isDigestReference(reference)) {
    return new RegistryError("MANIFEST_UNKNOWN", `manifest ${reference} is not in repository ${name}`, { digest: reference });
  }
  return new RegistryError("MANIFEST_UNKNOWN", `tag ${reference} is not in repository ${name}`, { tag: reference });
}

/**
 * Rejects a request whose Accept header lists media types but neither the
 * manifest's type nor a wildcard. A missing Accept header accepts anything.
 */
function assertAccepted(accept: string | null, mediaType: string): void {
  if (!accept) return;
  const accepted = accept.split(",").map((entry) => entry.split(";")[0]!.trim().toLowerCase());
  if (accepted.some((type) => type === mediaType || type === "*/*" || type === "application/*")) return;
  throw new RegistryError("MANIFEST_UNKNOWN", `manifest has media type ${mediaType}, which the Accept header does not list`, { mediaType });
}

function matchesEtag(ifNoneMatch: string | null, digest: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(",").some((entry) => {
    const value = entry.trim().replace(/^W\//, "");
    return value === "*" || value === etagOf(digest) || value === digest;
  });
}

/** Reads the request body, failing with 413 as soon as it passes `limit` bytes. */
async function readLimitedBody(c: AppContext, limit: number): Promise<Uint8Array> {
  const tooLarge = new RegistryError("MANIFEST_TOO_LARGE", `manifest exceeds the limit of ${limit} bytes`, { limit });
  const declared = c.req.header("Content-Length");
  if (declared !== undefined && Number(declared) > limit) throw tooLarge;
  const body = c.req.raw.body;
  if (!body) return new Uint8Array(0);

  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel();
      throw tooLarge;
    }
    chunks.push(value);
  }
  return new Uint8Array(await new Blob(chunks).arrayBuffer());
}
