/**
 * D1 queries for repositories, images, blobs, manifests and tags. Every query
 * is parameterised; reads are called from the Worker, writes only from the
 * ImageStore Durable Object of the image they change. The exception is a
 * repository delete in the admin API: it deletes the repository row, and D1
 * cascades the delete to the rows of its images.
 */

export interface RepositoryRow {
  key: string;
  /** "remote" or "virtual" when the repository has a row in that side table, else the column's value. */
  type: "local" | "remote" | "virtual";
  description: string;
  created_at: string;
}

export interface BlobRow {
  digest: string;
  size: number;
  storage_key: string;
  sha1: string;
  md5: string;
}

export interface ManifestRow {
  digest: string;
  media_type: string;
  artifact_type: string | null;
  size: number;
  subject_digest: string | null;
  annotations: string | null;
}

/** Settings of a remote repository, a pull-through cache of another registry. */
export interface RemoteSettingsRow {
  repository_key: string;
  url: string;
  username: string | null;
  tag_cache_seconds: number;
  negative_cache_seconds: number;
  offline: number;
  docker_hub: number;
  /** Unix seconds before which no upstream request is sent, after an upstream 429; null when not rate-limited. */
  upstream_retry_at: number | null;
  /** The upstream password encrypted under CREDENTIALS_KEY (see `src/remote/credentials.ts`); null when none is set. */
  password_ciphertext: string | null;
  failure_threshold: number;
  offline_seconds: number;
  consecutive_failures: number;
  /** Unix seconds before which no upstream request is sent, after failure_threshold consecutive failures; null when not offline. */
  offline_until: number | null;
  recent_pull_seconds: number;
}

const repositoryColumns = `r.key,
  CASE WHEN rr.repository_key IS NOT NULL THEN 'remote' WHEN vr.repository_key IS NOT NULL THEN 'virtual' ELSE r.type END AS type,
  r.description, r.created_at
  FROM repositories r
  LEFT JOIN remote_repositories rr ON rr.repository_key = r.key
  LEFT JOIN virtual_repositories vr ON vr.repository_key = r.key`;

export async function getRepository(db: D1Database, key: string): Promise<RepositoryRow | null> {
  return db.prepare(`SELECT ${repositoryColumns} WHERE r.key = ?`).bind(key).first<RepositoryRow>();
}

/** Returns the repositories among `keys` that exist, in byte order of their keys. */
export async function getRepositories(db: D1Database, keys: string[]): Promise<RepositoryRow[]> {
  if (keys.length === 0) return [];
  const { results } = await db
    .prepare(`SELECT ${repositoryColumns} WHERE r.key IN (${placeholders(keys)}) ORDER BY r.key`)
    .bind(...keys)
    .all<RepositoryRow>();
  return results;
}

export async function listRepositories(db: D1Database): Promise<RepositoryRow[]> {
  const { results } = await db.prepare(`SELECT ${repositoryColumns} ORDER BY r.key`).all<RepositoryRow>();
  return results;
}

/** Returns the settings of a remote repository, or null for a local or missing one. */
export async function getRemoteSettings(db: D1Database, key: string): Promise<RemoteSettingsRow | null> {
  return db
    .prepare(
      `SELECT repository_key, url, username, tag_cache_seconds, negative_cache_seconds, offline, docker_hub, upstream_retry_at,
              password_ciphertext, failure_threshold, offline_seconds, consecutive_failures, offline_until, recent_pull_seconds
         FROM remote_repositories WHERE repository_key = ?`,
    )
    .bind(key)
    .first<RemoteSettingsRow>();
}

/** Returns the blob when it is linked to the image, else null. */
export async function findLinkedBlob(db: D1Database, imageName: string, digest: string): Promise<BlobRow | null> {
  return db
    .prepare(
      `SELECT b.digest, b.size, b.storage_key, b.sha1, b.md5
         FROM blob_links l
         JOIN images i ON i.id = l.image_id
         JOIN blobs b ON b.digest = l.digest
        WHERE i.name = ? AND l.digest = ?`,
    )
    .bind(imageName, digest)
    .first<BlobRow>();
}

export async function findManifest(db: D1Database, imageName: string, digest: string): Promise<ManifestRow | null> {
  return db
    .prepare(
      `SELECT m.digest, m.media_type, m.artifact_type, m.size, m.subject_digest, m.annotations
         FROM manifests m JOIN images i ON i.id = m.image_id
        WHERE i.name = ? AND m.digest = ?`,
    )
    .bind(imageName, digest)
    .first<ManifestRow>();
}

export async function findTaggedManifest(db: D1Database, imageName: string, tag: string): Promise<ManifestRow | null> {
  return db
    .prepare(
      `SELECT m.digest, m.media_type, m.artifact_type, m.size, m.subject_digest, m.annotations
         FROM tags t
         JOIN images i ON i.id = t.image_id
         JOIN manifests m ON m.image_id = t.image_id AND m.digest = t.digest
        WHERE i.name = ? AND t.name = ?`,
    )
    .bind(imageName, tag)
    .first<ManifestRow>();
}

export async function imageExists(db: D1Database, imageName: string): Promise<boolean> {
  const row = await db.prepare("SELECT 1 AS found FROM images WHERE name = ?").bind(imageName).first();
  return row !== null;
}

/**
 * Lists the tag names of one or more images after `last` in byte order, at
 * most `limit` of them. A tag that several images have is listed once.
 */
export async function listTags(db: D1Database, imageNames: string[], last: string, limit: number): Promise<string[]> {
  if (imageNames.length === 0) return [];
  const { results } = await db
    .prepare(
      `SELECT DISTINCT t.name FROM tags t JOIN images i ON i.id = t.image_id
        WHERE i.name IN (${placeholders(imageNames)}) AND t.name > ? ORDER BY t.name LIMIT ?`,
    )
    .bind(...imageNames, last, limit)
    .all<{ name: string }>();
  return results.map((row) => row.name);
}

/** Lists image names after `last` in byte order, at most `limit` of them. */
export async function listImages(db: D1Database, last: string, limit: number): Promise<string[]> {
  const { results } = await db
    .prepare("SELECT name FROM images WHERE name > ? ORDER BY name LIMIT ?")
    .bind(last, limit)
    .all<{ name: string }>();
  return results.map((row) => row.name);
}

/**
 * Lists manifests of one or more images whose subject is `subjectDigest`,
 * optionally of one artifact type, in digest order after `after`, at most
 * `limit` of them. A digest that several images have is listed once.
 */
export async function listReferrers(
  db: D1Database,
  imageNames: string[],
  subjectDigest: string,
  artifactType: string | null,
  after: string,
  limit: number,
): Promise<ManifestRow[]> {
  if (imageNames.length === 0) return [];
  const filter = artifactType === null ? "" : "AND m.artifact_type = ?";
  // Equal digests mean equal bytes, so SQLite may take the other columns from any row of a group.
  const statement = db.prepare(
    `SELECT m.digest, m.media_type, m.artifact_type, m.size, m.subject_digest, m.annotations
       FROM manifests m JOIN images i ON i.id = m.image_id
      WHERE i.name IN (${placeholders(imageNames)}) AND m.subject_digest = ? AND m.digest > ? ${filter}
      GROUP BY m.digest ORDER BY m.digest LIMIT ?`,
  );
  const parameters = artifactType === null ? [...imageNames, subjectDigest, after] : [...imageNames, subjectDigest, after, artifactType];
  const { results } = await statement.bind(...parameters, limit).all<ManifestRow>();
  return results;
}

export async function findBlob(db: D1Database, digest: string): Promise<BlobRow | null> {
  return db.prepare("SELECT digest, size, storage_key, sha1, md5 FROM blobs WHERE digest = ?").bind(digest).first<BlobRow>();
}

/** A member of a virtual repository. */
export interface VirtualMemberRow {
  key: string;
  type: "local" | "remote";
}

/** Settings of a virtual repository: its members in configured order and the local member that receives pushes. */
export interface VirtualSettings {
  members: VirtualMemberRow[];
  defaultDeploymentKey: string | null;
}

/** Returns the settings of a virtual repository, or null for a repository of another type or a missing one. */
export async function getVirtualSettings(db: D1Database, key: string): Promise<VirtualSettings | null> {
  const [settings, members] = await db.batch([
    db.prepare("SELECT default_deployment_key FROM virtual_repositories WHERE repository_key = ?").bind(key),
    db
      .prepare(
        `SELECT m.member_key AS key, CASE WHEN rr.repository_key IS NULL THEN 'local' ELSE 'remote' END AS type
           FROM virtual_repository_members m LEFT JOIN remote_repositories rr ON rr.repository_key = m.member_key
          WHERE m.virtual_key = ? ORDER BY m.position`,
      )
      .bind(key),
  ]);
  const row = settings!.results[0] as { default_deployment_key: string | null } | undefined;
  if (!row) return null;
  return { members: members!.results as unknown as VirtualMemberRow[], defaultDeploymentKey: row.default_deployment_key };
}

/** Lists the keys of all virtual repositories in byte order. */
export async function listVirtualKeys(db: D1Database): Promise<string[]> {
  const { results } = await db
    .prepare("SELECT repository_key FROM virtual_repositories ORDER BY repository_key")
    .all<{ repository_key: string }>();
  return results.map((row) => row.repository_key);
}

/** An image of a member repository, as its path and the member's key. */
export interface MemberImageRow {
  path: string;
  repository_key: string;
}

/**
 * Lists the images of the given repositories as (path, repository key) pairs
 * in that order, at most `limit` of them. They start after the pair
 * (`afterPath`, `afterKey`), or with a null `afterKey` after every pair of `afterPath`.
 */
export async function listMemberImages(
  db: D1Database,
  repositoryKeys: string[],
  afterPath: string,
  afterKey: string | null,
  limit: number,
): Promise<MemberImageRow[]> {
  if (repositoryKeys.length === 0) return [];
  const { results } = await db
    .prepare(
      `SELECT path, repository_key FROM (
         SELECT substr(name, length(repository_key) + 2) AS path, repository_key FROM images
          WHERE repository_key IN (${placeholders(repositoryKeys)}))
        WHERE path > ? OR (path = ? AND ? IS NOT NULL AND repository_key > ?)
        ORDER BY path, repository_key LIMIT ?`,
    )
    .bind(...repositoryKeys, afterPath, afterPath, afterKey, afterKey, limit)
    .all<MemberImageRow>();
  return results;
}

/** Returns `?, ?, …` with one placeholder per value, for an SQL IN list. */
function placeholders(values: unknown[]): string {
  return values.map(() => "?").join(", ");
}
