import type { Env } from "../env";
import { RegistryError } from "../errors";
import { log } from "../log";
import type { ImageName } from "../names";
import type { ManifestRow, RemoteSettingsRow } from "../storage/metadata";
import { findTagCacheState, isUpstreamOffline, nowSeconds, recordTagChecked, recordTagPulled } from "./cache-state";
import { recordRateLimit, storeUpstreamManifest } from "./pull-through";
import { manifestMediaTypes, manifestTimeoutMs, UpstreamClient } from "./upstream-client";

/** A cached manifest and whether it is served without a successful upstream check within tagCacheSeconds. */
export interface CachedTag {
  manifest: ManifestRow;
  stale: boolean;
}

/** Seconds within which a second pull of the same tag records nothing, so that a busy tag costs at most one D1 write a minute. */
const pullRecordSeconds = 60;

/**
 * Why a tag is revalidated: `pull` for a client's request, which is recorded
 * for the Cron Trigger, and `refresh` for the Cron Trigger itself, which checks
 * upstream even within tagCacheSeconds and records no pull.
 */
export type RevalidationTrigger = "pull" | "refresh";

/**
 * Returns the manifest of a tag that a remote repository has cached. Within
 * tagCacheSeconds of the last upstream check it sends no upstream request.
 * After that it sends HEAD upstream, and when the upstream digest differs it
 * fetches the new manifest and moves the cached tag. When the upstream fails
 * (connection error, timeout, any status but 200, an undecryptable password,
 * or a 429 or offline period still in force) it returns the cached manifest
 * marked stale. A revalidation needs only the `read` that the request already
 * passed, because it keeps cached content current.
 */
export async function revalidateTag(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  tag: string,
  cached: ManifestRow,
  trigger: RevalidationTrigger = "pull",
): Promise<CachedTag> {
  const now = nowSeconds();
  const fresh = await checkTagFreshness(env, image, settings, tag, now, trigger);
  if (trigger === "pull" && fresh) return { manifest: cached, stale: false };
  if (isUpstreamOffline(settings, now)) return { manifest: cached, stale: !fresh };

  const ids = { repository: image.full, tag, digest: cached.digest };
  if (settings.upstream_retry_at !== null && settings.upstream_retry_at > now) {
    log.warn("serving a stale tag because the upstream rate limit is in force", { ...ids, retryAt: settings.upstream_retry_at });
    return { manifest: cached, stale: true };
  }

  try {
    const moved = await fetchIfMoved(env, image, settings, tag, cached);
    await recordTagChecked(env.DB, image.full, tag, now, trigger === "pull" ? now : undefined);
    if (moved) log.info("cached tag moved upstream", { ...ids, upstreamDigest: moved.digest });
    return { manifest: moved ?? cached, stale: false };
  } catch (error) {
    if (!(error instanceof RegistryError)) throw error;
    log.warn("serving a stale tag because revalidating it upstream failed", { ...ids, error: error.message });
    return { manifest: cached, stale: true };
  }
}

/**
 * Returns whether the tag was checked upstream less than tagCacheSeconds
 * before `now`. For a client's pull it also records the pull for the Cron
 * Trigger, at most once every pullRecordSeconds.
 */
export async function checkTagFreshness(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  tag: string,
  now: number,
  trigger: RevalidationTrigger,
): Promise<boolean> {
  const state = await findTagCacheState(env.DB, image.full, tag);
  if (trigger === "pull" && state && (state.pulledAt === null || now - state.pulledAt >= pullRecordSeconds)) {
    await recordTagPulled(env.DB, image.full, tag, now);
  }
  return state !== null && now - state.checkedAt < settings.tag_cache_seconds;
}

/** Sends HEAD for the tag upstream and, when its digest differs from `cached`, fetches and stores the new manifest. */
async function fetchIfMoved(
  env: Env,
  image: ImageName,
  settings: RemoteSettingsRow,
  tag: string,
  cached: ManifestRow,
): Promise<ManifestRow | null> {
  const client = await UpstreamClient.open(env, settings, image.path);
  const accept = manifestMediaTypes.join(", ");
  const head = await client.head(`manifests/${tag}`, accept, manifestTimeoutMs);
  await head.body?.cancel();
  if (head.status !== 200) {
    await recordRateLimit(env, settings, head);
    // NOTE: an upstream 404 for a cached tag is treated as a failure, so the cached tag keeps being served stale.
    throw new RegistryError("UNAVAILABLE", `the upstream registry returned ${head.status} for HEAD of manifest ${tag} of ${client.path}`);
  }
  if (head.headers.get("Docker-Content-Digest") === cached.digest) return null;

  const response = await client.get(`manifests/${tag}`, accept, manifestTimeoutMs);
  const stored = await storeUpstreamManifest(env, image, settings, client, tag, response);
  return stored.digest === cached.digest ? null : stored;
}
