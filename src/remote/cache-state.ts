/**
 * D1 queries for the cache state of remote repositories: when each cached tag
 * was last checked upstream, which manifest references the upstream lacks,
 * and until when an upstream 429 blocks requests. Times are Unix seconds.
 * The Worker writes these rows directly, not through the ImageStore Durable
 * Object, because each write is one independent upsert that changes no
 * manifest or tag.
 */

/** Returns the current time in Unix seconds. */
export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** Returns when the tag was last checked upstream, or null when no check is recorded. */
export async function findTagCheckedAt(db: D1Database, imageName: string, tag: string): Promise<number | null> {
  const row = await db
    .prepare("SELECT rt.checked_at FROM remote_tags rt JOIN images i ON i.id = rt.image_id WHERE i.name = ? AND rt.tag = ?")
    .bind(imageName, tag)
    .first<{ checked_at: number }>();
  return row?.checked_at ?? null;
}

/** Records that the tag was checked upstream at `checkedAt`. Does nothing when the image does not exist. */
export async function recordTagChecked(db: D1Database, imageName: string, tag: string, checkedAt: number): Promise<void> {
  await db
    .prepare(
      `INSERT INTO remote_tags (image_id, tag, checked_at)
         SELECT id, ?, ? FROM images WHERE name = ?
       ON CONFLICT (image_id, tag) DO UPDATE SET checked_at = excluded.checked_at`,
    )
    .bind(tag, checkedAt, imageName)
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
