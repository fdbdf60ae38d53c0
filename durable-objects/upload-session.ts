import { DurableObject } from "cloudflare:workers";
import type { Env } from "../src/env";
import { RegistryError, toRpcResult, type RpcResult } from "../src/errors";
import { log } from "../src/log";
import { BlobHasher, type ChecksumState, type Checksums } from "../src/storage/hashing";
import { assertRoomForPart, minPartSize, PartAssembler, type UploadedPart } from "../src/storage/part-assembler";

/** The state an upload session keeps in Durable Object storage between requests. */
interface SessionState {
  /** The OCI repository name the session was opened for. */
  name: string;
  /** R2 key of the finished blob. */
  storageKey: string;
  /** Bytes received so far. */
  offset: number;
  /** The R2 multipart upload id, once the first full part was written. */
  multipartUploadId: string | null;
  parts: UploadedPart[];
  /** R2 key of the bytes that have not yet filled a part, or null. */
  tailKey: string | null;
  tailLength: number;
  /** Counts tail objects written, so each tail gets a fresh key. */
  tailGeneration: number;
  checksums: ChecksumState;
  partSize: number;
}

export interface AppendRequest {
  name: string;
  body: ReadableStream<Uint8Array> | null;
  /** First byte of the chunk from Content-Range, when the client sent one. */
  start: number | null;
  /** Chunk length from Content-Range or Content-Length, when the client sent one. */
  length: number | null;
}

export interface SessionStatus {
  name: string;
  offset: number;
}

export interface CommittedBlob {
  digest: string;
  size: number;
  storageKey: string;
  sha1: string;
  md5: string;
}

const stateKey = "state";

/**
 * One upload session per object. Every request of the session runs here, so
 * appends are serialised. The hash state, the multipart parts and the tail of
 * bytes not yet in a part are saved after each request, so the session can
 * continue from any Worker instance.
 */
export class UploadSession extends DurableObject<Env> {
  /** Set while a request streams bytes; a second one is rejected meanwhile. */
  #busy = false;

  /** Opens the session for an image name. Returns its part size in bytes. */
  async open(name: string, sessionId: string): Promise<number> {
    const partSize = Math.max(minPartSize, Number(this.env.UPLOAD_PART_SIZE_MIB) * 1024 * 1024 || minPartSize);
    const state: SessionState = {
      name,
      storageKey: `blobs/uploads/${sessionId}`,
      offset: 0,
      multipartUploadId: null,
      parts: [],
      tailKey: null,
      tailLength: 0,
      tailGeneration: 0,
      checksums: new BlobHasher().save(),
      partSize,
    };
    await this.ctx.storage.put(stateKey, state);
    await this.#extendExpiry();
    return partSize;
  }

  async status(name: string): Promise<RpcResult<SessionStatus>> {
    return this.#rpc(async () => {
      const state = await this.#load(name);
      await this.#extendExpiry();
      return { name: state.name, offset: state.offset };
    });
  }

  /** Appends one chunk. Returns the new offset. */
  async append(request: AppendRequest): Promise<RpcResult<SessionStatus>> {
    return this.#rpc(async () => {
      const next = await this.#exclusive(request.name, (state) => this.#appendChunk(state, request));
      await this.#extendExpiry();
      return { name: next.name, offset: next.offset };
    });
  }

  /**
   * Appends an optional final chunk, checks the digest and completes the R2
   * object. On a digest mismatch everything the session stored is deleted.
   */
  async commit(request: AppendRequest & { digest: string }): Promise<RpcResult<CommittedBlob>> {
    return this.#rpc(async () => {
      return this.#exclusive(request.name, async (state) => {
        const appended = request.body ? await this.#appendChunk(state, request) : state;
        return this.#complete(appended, request.digest);
      });
    });
  }

  /** Cancels the session and deletes what it stored. */
  async cancel(name: string): Promise<RpcResult<void>> {
    return this.#rpc(async () => {
      await this.#exclusive(name, (state) => this.#discard(state));
    });
  }

  override async alarm(): Promise<void> {
    // A request still streaming into the session keeps it alive, because
    // discarding now would abort the multipart upload it is writing to.
    if (this.#busy) {
      await this.#extendExpiry();
      return;
    }

    this.#busy = true;
    try {
      const state = await this.ctx.storage.get<SessionState>(stateKey);
      if (!state) return;
      log.info("upload session expired", { name: state.name, offset: state.offset, storageKey: state.storageKey });
      await this.#discard(state);
    } finally {
      this.#busy = false;
    }
  }

  async #rpc<T>(work: () => Promise<T>): Promise<RpcResult<T>> {
    return toRpcResult(work);
  }

  async #load(name: string): Promise<SessionState> {
    const state = await this.ctx.storage.get<SessionState>(stateKey);
    if (!state || state.name !== name) {
      throw new RegistryError("BLOB_UPLOAD_UNKNOWN");
    }
    return state;
  }

  /**
   * Runs `work` on freshly loaded state while no other request of the
   * session runs; a request that arrives meanwhile is rejected, not queued.
   */
  async #exclusive<T>(name: string, work: (state: SessionState) => Promise<T>): Promise<T> {
    if (this.#busy) {
      const state = await this.#load(name);
      throw new RegistryError("RANGE_INVALID", "another request is writing to this upload; retry after it finishes", null, {
        Range: formatRange(state.offset),
      });
    }
    this.#busy = true;
    try {
      return await work(await this.#load(name));
    } finally {
      this.#busy = false;
    }
  }

  async #extendExpiry(): Promise<void> {
    const ttlSeconds = Number(this.env.UPLOAD_TTL_SECONDS) || 86_400;
    await this.ctx.storage.setAlarm(Date.now() + ttlSeconds * 1000);
  }

  async #appendChunk(state: SessionState, request: AppendRequest): Promise<SessionState> {
    if (request.start !== null && request.start !== state.offset) {
      throw new RegistryError("RANGE_INVALID", `chunk starts at byte ${request.start}; the upload has ${state.offset} bytes`, null, {
        Range: formatRange(state.offset),
      });
    }
    if (!request.body) return state;

    const hasher = new BlobHasher(state.checksums);
    const parts = [...state.parts];
    let multipart = state.multipartUploadId ? this.env.BLOBS.resumeMultipartUpload(state.storageKey, state.multipartUploadId) : null;
    const uploadPart = async (bytes: Blob): Promise<void> => {
      assertRoomForPart(parts.length, state.partSize);
      multipart ??= await this.env.BLOBS.createMultipartUpload(state.storageKey);
      const uploaded = await multipart.uploadPart(parts.length + 1, bytes);
      parts.push({ partNumber: uploaded.partNumber, etag: uploaded.etag });
    };

    let next: SessionState;
    try {
      const tail = await this.#readTail(state);
      const assembler = new PartAssembler(state.partSize, uploadPart, tail);
      let received = 0;
      const reader = request.body.getReader();
      for (;;) {
        const { done, value } = await readBodyChunk(reader);
        if (done) break;
        received += value.byteLength;
        if (request.length !== null && received > request.length) {
          throw new RegistryError("SIZE_INVALID", `the body is longer than the ${request.length} bytes the request declared`);
        }
        hasher.update(value);
        await assembler.push(value);
      }

      if (request.length !== null && received !== request.length) {
        throw new RegistryError("SIZE_INVALID", `received ${received} bytes; the request declared ${request.length}`);
      }

      const remainder = await assembler.takeRemainder();
      next = {
        ...state,
        offset: state.offset + received,
        multipartUploadId: multipart?.uploadId ?? null,
        parts,
        checksums: hasher.save(),
        tailGeneration: state.tailGeneration + 1,
        tailLength: remainder.byteLength,
        tailKey: remainder.byteLength > 0 ? `${state.storageKey}.tail.${state.tailGeneration + 1}` : null,
      };
      if (next.tailKey) await this.env.BLOBS.put(next.tailKey, remainder);
      await this.ctx.storage.put(stateKey, next);
    } catch (error) {
      // The saved state never recorded a multipart upload created by this
      // request, so nothing else would abort it.
      if (multipart && !state.multipartUploadId) await this.#abortMultipart(state.storageKey, multipart.uploadId);
      throw error;
    }

    if (state.tailKey) await this.env.BLOBS.delete(state.tailKey);
    return next;
  }

  async #readTail(state: SessionState): Promise<Uint8Array | undefined> {
    if (!state.tailKey) return undefined;
    const object = await this.env.BLOBS.get(state.tailKey);
    if (!object) throw new Error(`upload tail ${state.tailKey} is missing from R2`);
    return new Uint8Array(await object.arrayBuffer());
  }

  async #complete(state: SessionState, expectedDigest: string): Promise<CommittedBlob> {
    // The tail becomes one more part of the multipart upload.
    if (state.multipartUploadId && state.tailLength > 0) assertRoomForPart(state.parts.length, state.partSize);

    const checksums: Checksums = new BlobHasher(state.checksums).finish();
    if (checksums.digest !== expectedDigest) {
      await this.#discard(state);
      throw new RegistryError("DIGEST_INVALID", `uploaded content has digest ${checksums.digest}`, {
        expected: expectedDigest,
        actual: checksums.digest,
      });
    }

    const tail = (await this.#readTail(state)) ?? new Uint8Array(0);
    if (state.multipartUploadId) {
      const multipart = this.env.BLOBS.resumeMultipartUpload(state.storageKey, state.multipartUploadId);
      const parts = [...state.parts];
      if (tail.byteLength > 0) parts.push(await multipart.uploadPart(parts.length + 1, tail));
      await multipart.complete(parts);
    } else {
      await this.env.BLOBS.put(state.storageKey, tail, { sha256: checksums.digest.slice("sha256:".length) });
    }

    if (state.tailKey) await this.env.BLOBS.delete(state.tailKey);
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    return { digest: checksums.digest, size: state.offset, storageKey: state.storageKey, sha1: checksums.sha1, md5: checksums.md5 };
  }

  async #discard(state: SessionState): Promise<void> {
    if (state.multipartUploadId) await this.#abortMultipart(state.storageKey, state.multipartUploadId);
    if (state.tailKey) await this.env.BLOBS.delete(state.tailKey);
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
  }

  /** Aborts a multipart upload. A failure is logged, not raised, so cleanup never hides the error that led to it. */
  async #abortMultipart(storageKey: string, multipartUploadId: string): Promise<void> {
    try {
      await this.env.BLOBS.resumeMultipartUpload(storageKey, multipartUploadId).abort();
    } catch (error) {
      log.warn("aborting multipart upload failed", { storageKey, multipartUploadId, error: String(error) });
    }
  }
}

/**
 * Reads the next chunk of a request body. The read fails when the client
 * disconnects before the body is complete, which becomes BLOB_UPLOAD_INVALID.
 */
async function readBodyChunk(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<ReadableStreamReadResult<Uint8Array>> {
  try {
    return await reader.read();
  } catch {
    throw new RegistryError("BLOB_UPLOAD_INVALID", "the request body ended before it was complete");
  }
}

/** Formats the Range header of an upload that has received `offset` bytes. */
export function formatRange(offset: number): string {
  return `0-${Math.max(0, offset - 1)}`;
}
