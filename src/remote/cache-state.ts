import type { RemoteSettingsRow } from "../storage/metadata";

/**
 * D1 queries for the cache state of remote repositories: when each cached tag
 * was last checked upstream and pulled by a client, which manifest
 * references the upstream lacks, until when an upstream 429 blocks requests,
 * and the count of consecutive upstream failures. Times are Unix seconds.
 * The Worker writes these rows directly, not through the ImageStore Durable
 * Object, because each write is one independent upsert that changes no
 * manifest or tag.
 */

/** Returns the current time in Unix seconds. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** When a cached tag was last checked upstream and last pulled by a client (null when never pulled). */
export interface TagCacheState {
  checkedAt: number;
  pulledAt: number | null;
}

/** Returns the cache state of the tag, or null when no check is recorded. */
export async function findTagCacheState(db: D1Database, imageName: string, tag: string): Promise<TagCacheState | null> {
  const row = await db
    .prepare("SELECT rt.checked_at, rt.pulled_at FROM remote_tags rt JOIN images i ON i.id = rt.image_id WHERE i.name = ? AND rt.tag = ?")
    .bind(imageName, tag)
    .first<{ checked_at: number; pulled_at: number | null }>();
  return row ? { checkedAt: row.checked_at, pulledAt: row.pulled_at } : null;
}

/**
 * Records that the tag was checked upstream at `checkedAt` and, when
 * `pulledAt` is given, that a client pulled it then. Does nothing when the image does not exist.
 */
export async function recordTagChecked(
  db: D1Database,
  imageName: string,
  tag: string,
  checkedAt: number,
  pulledAt?: number,
): Promise<void> {
  await db
    .prepare(
      `INSERT INTO remote_tags (image_id, tag, checked_at, pulled_at)
         SELECT id, ?, ?, ? FROM images WHERE name = ?
       ON CONFLICT (image_id, tag) DO UPDATE SET checked_at = excluded.checked_at, pulled_at = COALESCE(excluded.pulled_at, pulled_at)`,
    )
    .bind(tag, checkedAt, pulledAt ?? null, imageName)
    .run();
}

/** Records that a client pulled the cached tag at `pulledAt`. */
export async function recordTagPulled(db: D1Database, imageName: string, tag: string, pulledAt: number): Promise<void> {
  await db
    .prepare("UPDATE remote_tags SET pulled_at = ? WHERE tag = ? AND image_id = (SELECT id FROM images WHERE name = ?)")
    .bind(pulledAt, tag, imageName)
    .run();
}

/** Returns when the upstream last returned 404 for the manifest reference, or null. */
export async function findManifestMissedAt(db: D1Database, imageName: string, reference: string): Promise<number | null> {
  const row = await db
    .prepare("SELECT missed_at FROM remote_missing_manifests WHERE image_name = ? AND reference = ?")
    .bind(imageName, reference)
    .first<{ missed_at: number }>();
  return row?.missed_at ?? null;
}

/** Records an upstream 404 for the manifest reference at `missedAt`. */
export async function recordManifestMissing(
  db: D1Database,
  repositoryKey: string,
  imageName: string,
  reference: string,
  missedAt: number,
): Promise<void> {
  await db
    .prepare(
      `INSERT INTO remote_missing_manifests (repository_key, image_name, reference, missed_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (image_name, reference) DO UPDATE SET missed_at = excluded.missed_at`,
    )
    .bind(repositoryKey, imageName, reference, missedAt)
    .run();
}

/** Forgets a recorded upstream 404, after the upstream has served the reference. */
export async function forgetManifestMissing(db: D1Database, imageName: string, reference: string): Promise<void> {
  await db.prepare("DELETE FROM remote_missing_manifests WHERE image_name = ? AND reference = ?").bind(imageName, reference).run();
}

/** Blocks upstream requests for the repository until `retryAt`. */
export async function recordUpstreamRetryAt(db: D1Database, repositoryKey: string, retryAt: number): Promise<void> {
  await db.prepare("UPDATE remote_repositories SET upstream_retry_at = ? WHERE repository_key = ?").bind(retryAt, repositoryKey).run();
}

/** Returns whether the repository sends no upstream request now: the administrator set it offline, or an automatic offline period is in force. */
export function isUpstreamOffline(settings: RemoteSettingsRow, now: number): boolean {
  return settings.offline === 1 || (settings.offline_until !== null && settings.offline_until > now);
}

/** The failure count after a failed upstream request, and the end of the offline period it started, if any. */
export interface UpstreamFailureState {
  consecutiveFailures: number;
  failureThreshold: number;
  offlineUntil: number | null;
}

/**
 * Counts a failed upstream request. When the count reaches the repository's
 * failure_threshold, no upstream request is sent for offline_seconds. The
 * count is not reset then, so the first failure after the period starts the
 * next period. Returns null when the repository no longer exists.
 */
export async function recordUpstreamFailure(db: D1Database, repositoryKey: string, now: number): Promise<UpstreamFailureState | null> {
  const row = await db
    .prepare(
      `UPDATE remote_repositories
          SET consecutive_failures = consecutive_failures + 1,
              offline_until = CASE WHEN consecutive_failures + 1 >= failure_threshold AND offline_seconds > 0
                                   THEN ? + offline_seconds ELSE offline_until END
        WHERE repository_key = ?
    RETURNING consecutive_failures, failure_threshold, offline_until`,
    )
    .bind(now, repositoryKey)
    .first<{ consecutive_failures: number; failure_threshold: number; offline_until: number | null }>();
  if (!row) return null;
  return { consecutiveFailures: row.consecutive_failures, failureThreshold: row.failure_threshold, offlineUntil: row.offline_until };
}

/** Resets the failure count and ends any automatic offline period. Returns whether anything was reset. */
export async function recordUpstreamSuccess(db: D1Database, repositoryKey: string): Promise<boolean> {
  const result = await db
    .prepare(
      `UPDATE remote_repositories SET consecutive_failures = 0, offline_until = NULL
        WHERE repository_key = ? AND (consecutive_failures > 0 OR offline_until IS NOT NULL)`,
    )
    .bind(repositoryKey)
    .run();
  return result.meta.changes > 0;
}

/** Returns when the upstream last returned 404 for the blob of the image, or null. */
export async function findBlobMissedAt(db: D1Database, imageName: string, digest: string): Promise<number | null> {
  const row = await db
    .prepare("SELECT missed_at FROM remote_missing_blobs WHERE image_name = ? AND digest = ?")
    .bind(imageName, digest)
    .first<{ missed_at: number }>();
  return row?.missed_at ?? null;
}

/** Records an upstream 404 for the blob of the image at `missedAt`. */
export async function recordBlobMissing(
  db: D1Database,
  repositoryKey: string,
  imageName: string,
  digest: string,
  missedAt: number,
): Promise<void> {
  await db
    .prepare(
      `INSERT INTO remote_missing_blobs (repository_key, image_name, digest, missed_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (image_name, digest) DO UPDATE SET missed_at = excluded.missed_at`,
    )
    .bind(repositoryKey, imageName, digest, missedAt)
    .run();
}

/** Forgets a recorded upstream 404 for a blob, after the upstream has served it. */
export async function forgetBlobMissing(db: D1Database, imageName: string, digest: string): Promise<void> {
  await db.prepare("DELETE FROM remote_missing_blobs WHERE image_name = ? AND digest = ?").bind(imageName, digest).run();
}
