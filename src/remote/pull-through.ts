import type { Env } from "../env";
import { RegistryError } from "../errors";
import { parseManifest } from "../manifests/schema";
import { isDigestReference } from "../names";
import type { ImageName } from "../names";
import { digestBytes } from "../storage/hashing";
import { findManifest, type ManifestRow, type RemoteSettingsRow } from "../storage/metadata";
import { log } from "../log";
import { storeManifest } from "../handlers/shared";
import {
  findManifestMissedAt,
  isUpstreamOffline,
  forgetManifestMissing,
  nowSeconds,
  recordManifestMissing,
  recordTagChecked,
  recordUpstreamRetryAt,
} from "./cache-state";
import { manifestMediaTypes, manifestTimeoutMs, parseRetryAfter, UpstreamClient, upstreamUnavailable } from "./upstream-client";

/** Manifests larger than this are not cached. A manifest push has the same limit. */
const maxManifestBytes = 4 * 1024 * 1024;

/** How long upstream requests stay blocked after a 429 without a valid Retry-After header. */
const defaultRetryAfterSeconds = 60;

/**
 * Fetches a manifest that a remote repository does not have from its
 * upstream, stores its exact bytes through the image's ImageStore and returns
 * its row. Returns null when the upstream does not have it or the repository
 * is offline (set by the administrator or after repeated upstream failures). The caller checks that the request may fetch upstream
 * (`requireUpstreamFetch`), because a miss writes to the cache.
 */
export async function cacheManifest(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  reference: string,
): Promise<ManifestRow | null> {
  const now = nowSeconds();
  if (isUpstreamOffline(settings, now)) return null;
  const missedAt = await findManifestMissedAt(env.DB, image.full, reference);
  if (missedAt !== null && now - missedAt < settings.negative_cache_seconds) return null;
  assertUpstreamNotRateLimited(settings, now);

  const client = await UpstreamClient.open(env, settings, image.path);
  const response = await client.get(`manifests/${reference}`, manifestMediaTypes.join(", "), manifestTimeoutMs);
  if (response.status === 404) {
    await response.body?.cancel();
    await recordManifestMissing(env.DB, image.repositoryKey, image.full, reference, now);
    return null;
  }

  const stored = await storeUpstreamManifest(env, image, settings, client, reference, response);
  if (missedAt !== null) await forgetManifestMissing(env.DB, image.full, reference);
  // A client pulled the tag, so the Cron Trigger refreshes it while it stays in use.
  if (!isDigestReference(reference)) await recordTagChecked(env.DB, image.full, reference, now, now);
  return stored;
}

/**
 * Stores the manifest of an upstream GET response for `reference` through the
 * image's ImageStore, moving the tag when `reference` is a tag, and returns
 * its row. Any status but 200 raises UNAVAILABLE, and a 429 also blocks
 * upstream requests for the repository until its Retry-After.
 */
export async function storeUpstreamManifest(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  client: UpstreamClient,
  reference: string,
  response: Response,
): Promise<ManifestRow> {
  if (response.status !== 200) {
    await response.body?.cancel();
    const retryAfterSeconds = await recordRateLimit(env, settings, response);
    const hint = response.status === 401 || response.status === 403 ? "; check the username and password of the remote repository" : "";
    throw upstreamFailure(
      `the upstream registry returned ${response.status} for manifest ${reference} of ${client.path}${hint}`,
      retryAfterSeconds,
    );
  }

  const declared = Number(response.headers.get("Content-Length") ?? "0");
  if (declared > maxManifestBytes) {
    await response.body?.cancel();
    throw upstreamUnavailable(`the upstream manifest ${reference} of ${client.path} exceeds the limit of ${maxManifestBytes} bytes`);
  }
  const bytes = await readUpstreamBody(client, response, `manifest ${reference} of ${client.path}`);
  if (bytes.byteLength > maxManifestBytes) {
    throw upstreamUnavailable(`the upstream manifest ${reference} of ${client.path} exceeds the limit of ${maxManifestBytes} bytes`);
  }

  const byDigest = isDigestReference(reference);
  const algorithm = byDigest && reference.startsWith("sha512:") ? "sha512" : "sha256";
  const digest = await digestBytes(algorithm, bytes);
  const expected = byDigest ? reference : response.headers.get("Docker-Content-Digest");
  if (expected !== null && expected.startsWith(`${algorithm}:`) && expected !== digest) {
    log.warn("upstream manifest digest mismatch", { repository: image.full, reference, expected, actual: digest });
    throw upstreamUnavailable(`the upstream registry sent manifest content with digest ${digest} for ${expected}`);
  }

  const manifest = parseManifest(bytes, response.headers.get("Content-Type"));
  await storeManifest(env, image, { digest, bytes, manifest, tag: byDigest ? null : reference, fromUpstream: true });
  const row = await findManifest(env.DB, image.full, digest);
  if (!row) throw new Error(`manifest ${digest} was stored but is missing from D1`);
  return row;
}

/**
 * Reads a whole upstream response body, raising UNAVAILABLE and counting an
 * upstream failure when the connection fails or the timeout aborts it.
 */
async function readUpstreamBody(client: UpstreamClient, response: Response, description: string): Promise<Uint8Array> {
  try {
    return new Uint8Array(await response.arrayBuffer());
  } catch (error) {
    log.warn("reading an upstream response failed", { url: response.url, error: String(error) });
    await client.recordFailure();
    throw upstreamUnavailable(`reading the upstream ${description} failed`);
  }
}

/** Raises UNAVAILABLE while an earlier upstream 429 blocks requests for the repository. */
export function assertUpstreamNotRateLimited(settings: RemoteSettingsRow, now: number): void {
  if (settings.upstream_retry_at === null || settings.upstream_retry_at <= now) return;
  throw new RegistryError(
    "UNAVAILABLE",
    `the upstream registry of ${settings.repository_key} returned 429, so no request is sent before ${new Date(settings.upstream_retry_at * 1000).toISOString()}`,
    null,
    { "Retry-After": String(settings.upstream_retry_at - now) },
  );
}

/**
 * Blocks upstream requests for the repository until the Retry-After of a 429
 * response, and returns the seconds until then. Does nothing and returns null
 * for any other status.
 */
export async function recordRateLimit(env: Env, settings: RemoteSettingsRow, response: Response): Promise<number | null> {
  if (response.status !== 429) return null;
  const now = nowSeconds();
  const retryAt = parseRetryAfter(response.headers.get("Retry-After"), now, defaultRetryAfterSeconds);
  log.warn("upstream registry rate limit", { repository: settings.repository_key, retryAt });
  await recordUpstreamRetryAt(env.DB, settings.repository_key, retryAt);
  return retryAt - now;
}

/**
 * Builds the UNAVAILABLE error for an upstream response that failed a miss.
 * After a 429 (`retryAfterSeconds` from `recordRateLimit`) it carries the
 * Retry-After that blocks upstream requests, as the misses that follow do.
 */
export function upstreamFailure(message: string, retryAfterSeconds: number | null): RegistryError {
  if (retryAfterSeconds === null) return upstreamUnavailable(message);
  return new RegistryError("UNAVAILABLE", message, null, { "Retry-After": String(retryAfterSeconds) });
}
