import type { Env } from "../env";
import { RegistryError } from "../errors";
import type { ImageName } from "../names";
import type { RemoteSettingsRow } from "../storage/metadata";
import { findBlobMissedAt, forgetBlobMissing, isUpstreamOffline, nowSeconds, recordBlobMissing } from "./cache-state";
import { assertUpstreamNotRateLimited, recordRateLimit, upstreamFailure } from "./pull-through";
import { UpstreamClient, upstreamUnavailable } from "./upstream-client";

/** An upstream blob response with its body and Content-Length. */
export interface UpstreamBlob {
  body: ReadableStream<Uint8Array>;
  size: number;
  /** The client that sent the request, which counts a failure while reading the body towards automatic offline. */
  client: UpstreamClient;
}

/**
 * Sends GET for a blob upstream. Returns null when the upstream does not have
 * it or the repository is offline. Raises UNSUPPORTED for a digest other than
 * sha256 and UNAVAILABLE for any other status, a missing Content-Length or a
 * 429 still in force.
 */
export async function requestUpstreamBlob(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  digest: string,
): Promise<UpstreamBlob | null> {
  const prepared = await prepareBlobRequest(env, settings, image, digest);
  if (!prepared) return null;
  const { client } = prepared;
  const response = await client.get(`blobs/${digest}`);
  const size = await checkBlobResponse(env, settings, image, prepared, digest, response);
  if (size === null) return null;
  if (!response.body) throw upstreamUnavailable(`the upstream registry returned no body for blob ${digest} of ${client.path}`);
  return { body: response.body, size, client };
}

/**
 * Sends HEAD for a blob upstream and returns its size, or null when the
 * upstream does not have it or the repository is offline. Raises like
 * `requestUpstreamBlob`. Nothing is stored.
 */
export async function headUpstreamBlob(env: Env, image: ImageName, settings: RemoteSettingsRow, digest: string): Promise<number | null> {
  const prepared = await prepareBlobRequest(env, settings, image, digest);
  if (!prepared) return null;
  const response = await prepared.client.head(`blobs/${digest}`);
  await response.body?.cancel();
  return checkBlobResponse(env, settings, image, prepared, digest, response);
}

/** A blob request about to be sent: its client and when the upstream last returned 404 for the blob, if it did. */
interface PreparedBlobRequest {
  client: UpstreamClient;
  missedAt: number | null;
}

/**
 * Returns the client for a blob request, or null when the repository is
 * offline, by hand or automatically, or the upstream returned 404 for the
 * blob within negativeCacheSeconds.
 */
async function prepareBlobRequest(
  env: Env,
  settings: RemoteSettingsRow,
  image: ImageName,
  digest: string,
): Promise<PreparedBlobRequest | null> {
  const now = nowSeconds();
  if (isUpstreamOffline(settings, now)) return null;
  if (!digest.startsWith("sha256:")) {
    throw new RegistryError("UNSUPPORTED", `remote repositories cache only sha256 blobs, not ${digest}`, { digest });
  }
  const missedAt = await findBlobMissedAt(env.DB, image.full, digest);
  if (missedAt !== null && now - missedAt < settings.negative_cache_seconds) return null;
  assertUpstreamNotRateLimited(settings, now);
  return { client: await UpstreamClient.open(env, settings, image.path), missedAt };
}

/**
 * Returns the Content-Length of a 200 blob response, or null for a 404, which
 * is recorded for the negative cache. Anything else cancels the body, records
 * a 429 and raises UNAVAILABLE.
 */
async function checkBlobResponse(
  env: Env,
  settings: RemoteSettingsRow,
  image: ImageName,
  { client, missedAt }: PreparedBlobRequest,
  digest: string,
  response: Response,
): Promise<number | null> {
  if (response.status === 404) {
    await response.body?.cancel();
    await recordBlobMissing(env.DB, image.repositoryKey, image.full, digest, nowSeconds());
    return null;
  }
  const size = Number(response.headers.get("Content-Length") ?? Number.NaN);
  if (response.status === 200 && Number.isSafeInteger(size) && size >= 0) {
    if (missedAt !== null) await forgetBlobMissing(env.DB, image.full, digest);
    return size;
  }

  await response.body?.cancel();
  const retryAfterSeconds = await recordRateLimit(env, settings, response);
  // NOTE: an upstream blob response without Content-Length is rejected, because R2 needs the length of a streamed put.
  const problem = response.status === 200 ? "no Content-Length" : `status ${response.status}`;
  throw upstreamFailure(`the upstream registry returned ${problem} for blob ${digest} of ${client.path}`, retryAfterSeconds);
}
