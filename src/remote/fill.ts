import type { Env } from "../env";
import { unwrapRpcResult } from "../errors";
import type { ImageName } from "../names";
import type { BlobFillResult } from "../../durable-objects/upstream-fill";
import type { ManifestRow, RemoteSettingsRow } from "../storage/metadata";
import { checkTagFreshness, type CachedTag } from "./revalidate-tag";
import { nowSeconds } from "./cache-state";

/**
 * Returns the name of the UpstreamFill object of a blob. Blobs are named per
 * remote repository, so the same layer in two images of one repository is
 * fetched once.
 */
export function blobFillName(repositoryKey: string, digest: string): string {
  return `blob ${repositoryKey} ${digest}`;
}

/** Returns the name of the UpstreamFill object of a manifest reference (tag or digest) of one image. */
export function manifestFillName(imageName: string, reference: string): string {
  return `manifest ${imageName} ${reference}`;
}

function upstreamFill(env: Env, name: string) {
  return env.UPSTREAM_FILLS.get(env.UPSTREAM_FILLS.idFromName(name));
}

/**
 * Fetches a blob that the image lacks through the blob's UpstreamFill object,
 * so concurrent misses send one upstream request. With `stream`, the caller
 * that starts the fill receives the bytes while they are stored. The caller
 * checks that the request may fetch upstream (`requireUpstreamFetch`).
 */
export async function fillBlob(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  digest: string,
  stream: boolean,
): Promise<BlobFillResult> {
  const stub = upstreamFill(env, blobFillName(image.repositoryKey, digest));
  return unwrapRpcResult(await stub.fillBlob({ image, settings, digest, stream }));
}

/**
 * Fetches a manifest that the image lacks through its UpstreamFill object and
 * returns its row, or null when the upstream does not have it. The caller
 * checks that the request may fetch upstream.
 */
export async function fillManifest(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  reference: string,
): Promise<ManifestRow | null> {
  const stub = upstreamFill(env, manifestFillName(image.full, reference));
  return unwrapRpcResult(await stub.fillManifest(image, settings, reference));
}

/**
 * Returns a cached tag, revalidated upstream through the tag's UpstreamFill
 * object once tagCacheSeconds have passed since its last check, so concurrent
 * requests send one HEAD. A tag checked within the period costs no RPC.
 */
export async function revalidateTagOnce(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  tag: string,
  cached: ManifestRow,
): Promise<CachedTag> {
  if (await checkTagFreshness(env, image, settings, tag, nowSeconds(), "pull")) return { manifest: cached, stale: false };

  const stub = upstreamFill(env, manifestFillName(image.full, tag));
  return unwrapRpcResult(await stub.revalidateTag(image, settings, tag, cached));
}
