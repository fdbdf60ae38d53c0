import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import { RegistryError, toRpcError } from "../src/errors";
import type { ParsedManifest } from "../src/manifests/schema";
import type { CommittedBlob } from "./upload-session";

export interface ManifestWrite {
  name: string;
  repositoryKey: string;
  digest: string;
  size: number;
  manifest: ParsedManifest;
  tag: string | null;
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
  async linkUploadedBlob(name: string, repositoryKey: string, blob: CommittedBlob): Promise<void> {
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
  async linkExistingBlob(name: string, repositoryKey: string, digest: string): Promise<void> {
    return this.#rpc(() => this.#link(name, repositoryKey, digest));
  }

  /** Removes the image's link to a blob. Returns false when there was none. */
  async unlinkBlob(name: string, digest: string): Promise<boolean> {
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
   * referenced blob is linked and every child manifest exists in this image.
   * The manifest bytes are already in R2 under their digest.
   */
  async putManifest(write: ManifestWrite): Promise<void> {
    return this.#rpc(async () => {
      const db = this.env.DB;
      const imageId = await this.#ensureImage(write.name, write.repositoryKey);
      await this.#assertReferencesExist(imageId, write.manifest);

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
            write.size,
            write.manifest.subjectDigest,
            write.manifest.annotations ? JSON.stringify(write.manifest.annotations) : null,
          ),
        ...write.manifest.blobDigests.map((target) =>
          db
            .prepare("INSERT INTO manifest_references (image_id, manifest_digest, target_digest, kind) VALUES (?, ?, ?, 'blob') ON CONFLICT DO NOTHING")
            .bind(imageId, write.digest, target),
        ),
        ...write.manifest.manifestDigests.map((target) =>
          db
            .prepare("INSERT INTO manifest_references (image_id, manifest_digest, target_digest, kind) VALUES (?, ?, ?, 'manifest') ON CONFLICT DO NOTHING")
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
  async deleteManifest(name: string, digest: string): Promise<boolean> {
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
  async deleteTag(name: string, tag: string): Promise<boolean> {
    return this.#rpc(async () => {
      const result = await this.env.DB.prepare("DELETE FROM tags WHERE name = ? AND image_id = (SELECT id FROM images WHERE name = ?)")
        .bind(tag, name)
        .run();
      return result.meta.changes > 0;
    });
  }

  async #rpc<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw toRpcError(error);
    }
  }

  async #ensureImage(name: string, repositoryKey: string): Promise<number> {
    const db = this.env.DB;
    await db.prepare("INSERT INTO images (repository_key, name) VALUES (?, ?) ON CONFLICT (name) DO NOTHING").bind(repositoryKey, name).run();
    const image = await db.prepare("SELECT id FROM images WHERE name = ?").bind(name).first<{ id: number }>();
    if (!image) throw new Error(`image ${name} vanished right after it was created`);
    return image.id;
  }

  async #link(name: string, repositoryKey: string, digest: string): Promise<void> {
    const imageId = await this.#ensureImage(name, repositoryKey);
    await this.env.DB.prepare("INSERT INTO blob_links (image_id, digest) VALUES (?, ?) ON CONFLICT DO NOTHING").bind(imageId, digest).run();
  }

  async #assertReferencesExist(imageId: number, manifest: ParsedManifest): Promise<void> {
    const db = this.env.DB;
    for (const digest of manifest.blobDigests) {
      const linked = await db.prepare("SELECT 1 AS found FROM blob_links WHERE image_id = ? AND digest = ?").bind(imageId, digest).first();
      if (!linked) throw new RegistryError("MANIFEST_BLOB_UNKNOWN", `blob ${digest} is not in this repository`, { digest });
    }
    for (const digest of manifest.manifestDigests) {
      const found = await db.prepare("SELECT 1 AS found FROM manifests WHERE image_id = ? AND digest = ?").bind(imageId, digest).first();
      if (!found) throw new RegistryError("MANIFEST_UNKNOWN", `manifest ${digest} referenced by the index is not in this repository`, { digest });
    }
  }
}
