import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import { RegistryError, toRpcResult, type RpcResult } from "../src/errors";
import type { ParsedManifest } from "../src/manifests/schema";
import { manifestStorageKey } from "../src/manifests/storage-key";
import type { CommittedBlob } from "./upload-session";

export interface ManifestWrite {
  name: string;
  repositoryKey: string;
  digest: string;
  /** The manifest's exact bytes, written to R2 once its references are checked. */
  bytes: Uint8Array;
  manifest: ParsedManifest;
  tag: string | null;
  /**
   * Set for a manifest cached from the upstream of a remote repository. Its
   * blobs are fetched when a client first requests them, so they are not
   * required to be linked yet.
   */
  fromUpstream?: boolean;
}

/**
 * One object per OCI repository (image name). It is the only writer of that
 * image's blob links, manifests and tags in D1, so a check such as "every
 * referenced blob is linked" and the write that depends on it cannot be
 * interleaved with another change to the same image.
 */
export class ImageStore extends DurableObject<Env> {
  /**
   * Records a committed upload and links it to the image. When the digest is
   * already stored, the new copy is deleted and the existing one is linked.
   */
  async linkUploadedBlob(name: string, repositoryKey: string, blob: CommittedBlob): Promise<RpcResult<void>> {
    return this.#rpc(async () => {
      const db = this.env.DB;
      await db
        .prepare("INSERT INTO blobs (digest, size, storage_key, sha1, md5) VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING")
        .bind(blob.digest, blob.size, blob.storageKey, blob.sha1, blob.md5)
        .run();
      const stored = await db.prepare("SELECT storage_key FROM blobs WHERE digest = ?").bind(blob.digest).first<{ storage_key: string }>();
      if (stored && stored.storage_key !== blob.storageKey) {
        await this.env.BLOBS.delete(blob.storageKey);
      }
      await this.#link(name, repositoryKey, blob.digest);
    });
  }

  /** Links a blob that is already stored, for a cross-repository mount. */
  async linkExistingBlob(name: string, repositoryKey: string, digest: string): Promise<RpcResult<void>> {
    return this.#rpc(() => this.#link(name, repositoryKey, digest));
  }

  /** Removes the image's link to a blob. Returns false when there was none. */
  async unlinkBlob(name: string, digest: string): Promise<RpcResult<boolean>> {
    return this.#rpc(async () => {
      const result = await this.env.DB.prepare(
        "DELETE FROM blob_links WHERE digest = ? AND image_id = (SELECT id FROM images WHERE name = ?)",
      )
        .bind(digest, name)
        .run();
      return result.meta.changes > 0;
    });
  }

  /**
   * Stores a manifest's metadata and moves the tag, after checking that every
   * referenced blob is linked with the size its descriptor declares and every
   * child manifest exists in this image, unless it comes from an upstream.
   * The manifest bytes are already in R2 under their digest.
   */
  async putManifest(write: ManifestWrite): Promise<RpcResult<void>> {
    return this.#rpc(async () => {
      const db = this.env.DB;
      const existing = await db.prepare("SELECT id FROM images WHERE name = ?").bind(write.name).first<{ id: number }>();
      if (!write.fromUpstream) await this.#assertReferencesExist(existing?.id ?? null, write.manifest);
      await this.env.BLOBS.put(manifestStorageKey(write.digest), write.bytes);
      const imageId = existing?.id ?? (await this.#ensureImage(write.name, write.repositoryKey));

      const statements = [
        db
          .prepare(
            `INSERT INTO manifests (image_id, digest, media_type, artifact_type, size, subject_digest, annotations)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (image_id, digest) DO NOTHING`,
          )
          .bind(
            imageId,
            write.digest,
            write.manifest.mediaType,
            write.manifest.artifactType,
            write.bytes.byteLength,
            write.manifest.subjectDigest,
            write.manifest.annotations ? JSON.stringify(write.manifest.annotations) : null,
          ),
        ...write.manifest.blobDigests.map((target) =>
          db
            .prepare(
              "INSERT INTO manifest_references (image_id, manifest_digest, target_digest, kind) VALUES (?, ?, ?, 'blob') ON CONFLICT DO NOTHING",
            )
            .bind(imageId, write.digest, target),
        ),
        ...write.manifest.manifestDigests.map((target) =>
          db
            .prepare(
              "INSERT INTO manifest_references (image_id, manifest_digest, target_digest, kind) VALUES (?, ?, ?, 'manifest') ON CONFLICT DO NOTHING",
            )
            .bind(imageId, write.digest, target),
        ),
      ];
      if (write.tag !== null) {
        statements.push(
          db
            .prepare(
              `INSERT INTO tags (image_id, name, digest) VALUES (?, ?, ?)
               ON CONFLICT (image_id, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at`,
            )
            .bind(imageId, write.tag, write.digest),
        );
      }
      await db.batch(statements);
    });
  }

  /** Deletes a manifest and every tag that points at it. Returns false when it was not there. */
  async deleteManifest(name: string, digest: string): Promise<RpcResult<boolean>> {
    return this.#rpc(async () => {
      const db = this.env.DB;
      const image = await db.prepare("SELECT id FROM images WHERE name = ?").bind(name).first<{ id: number }>();
      if (!image) return false;
      const [, , deleted] = await db.batch([
        db.prepare("DELETE FROM tags WHERE image_id = ? AND digest = ?").bind(image.id, digest),
        db.prepare("DELETE FROM manifest_references WHERE image_id = ? AND manifest_digest = ?").bind(image.id, digest),
        db.prepare("DELETE FROM manifests WHERE image_id = ? AND digest = ?").bind(image.id, digest),
      ]);
      return (deleted?.meta.changes ?? 0) > 0;
    });
  }

  /** Deletes one tag, leaving its manifest. Returns false when the tag was not there. */
  async deleteTag(name: string, tag: string): Promise<RpcResult<boolean>> {
    return this.#rpc(async () => {
      const result = await this.env.DB.prepare("DELETE FROM tags WHERE name = ? AND image_id = (SELECT id FROM images WHERE name = ?)")
        .bind(tag, name)
        .run();
      return result.meta.changes > 0;
    });
  }

  /** The tail of the queue of writes; each write starts when the one before it has settled. */
  #lastWrite: Promise<unknown> = Promise.resolve();

  /**
   * Runs one write after every earlier one has finished. Input gates do not
   * cover D1 calls, so without this queue two writes could interleave at
   * their awaits.
   */
  async #rpc<T>(work: () => Promise<T>): Promise<RpcResult<T>> {
    const run = this.#lastWrite.then(work, work);
    this.#lastWrite = run.catch(() => undefined);
    return toRpcResult(() => run);
  }

  async #ensureImage(name: string, repositoryKey: string): Promise<number> {
    const db = this.env.DB;
    await db
      .prepare("INSERT INTO images (repository_key, name) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
      .bind(repositoryKey, name)
      .run();
    const image = await db.prepare("SELECT id FROM images WHERE name = ?").bind(name).first<{ id: number }>();
    if (!image) throw new Error(`image ${name} vanished right after it was created`);
    return image.id;
  }

  async #link(name: string, repositoryKey: string, digest: string): Promise<void> {
    const imageId = await this.#ensureImage(name, repositoryKey);
    await this.env.DB.prepare("INSERT INTO blob_links (image_id, digest) VALUES (?, ?) ON CONFLICT DO NOTHING").bind(imageId, digest).run();
  }

  /**
   * Checks references before anything is written, so a rejected manifest
   * leaves no rows behind. One query per batch of digests reads the links and
   * the stored blob sizes together.
   */
  async #assertReferencesExist(imageId: number | null, manifest: ParsedManifest): Promise<void> {
    const linkedBlobs = await this.#rowsByDigest<{ digest: string; size: number }>(
      "SELECT l.digest, b.size FROM blob_links l JOIN blobs b ON b.digest = l.digest WHERE l.image_id = ? AND l.digest IN",
      imageId,
      manifest.blobDigests,
    );
    const storedSizes = new Map(linkedBlobs.map((row) => [row.digest, row.size]));
    const missingBlob = manifest.blobDigests.find((digest) => !storedSizes.has(digest));
    if (missingBlob) {
      throw new RegistryError("MANIFEST_BLOB_UNKNOWN", `blob ${missingBlob} is not in this repository`, { digest: missingBlob });
    }
    for (const descriptor of manifest.blobDescriptors) {
      const storedSize = storedSizes.get(descriptor.digest)!;
      if (descriptor.size === storedSize) continue;
      throw new RegistryError(
        "MANIFEST_INVALID",
        `descriptor of blob ${descriptor.digest} has size ${descriptor.size}, but the stored blob has ${storedSize} bytes`,
        { digest: descriptor.digest, size: descriptor.size, storedSize },
      );
    }

    const children = await this.#rowsByDigest<{ digest: string }>(
      "SELECT digest FROM manifests WHERE image_id = ? AND digest IN",
      imageId,
      manifest.manifestDigests,
    );
    const childDigests = new Set(children.map((row) => row.digest));
    const missingChild = manifest.manifestDigests.find((digest) => !childDigests.has(digest));
    if (missingChild) {
      throw new RegistryError("MANIFEST_BLOB_UNKNOWN", `manifest ${missingChild} referenced by the index is not in this repository`, {
        digest: missingChild,
      });
    }
  }

  /** Runs `query` (ending in "IN") over the digests in batches that stay under D1's 100 bound parameters. */
  async #rowsByDigest<Row>(query: string, imageId: number | null, digests: string[]): Promise<Row[]> {
    const rows: Row[] = [];
    if (imageId === null) return rows;
    for (let start = 0; start < digests.length; start += 90) {
      const batch = digests.slice(start, start + 90);
      const placeholders = batch.map(() => "?").join(", ");
      const { results } = await this.env.DB.prepare(`${query} (${placeholders})`)
        .bind(imageId, ...batch)
        .all<Row>();
      rows.push(...results);
    }
    return rows;
  }
}
