import { log } from "../log";
import { StreamingHasher, type Checksums } from "../storage/hashing";
import { upstreamUnavailable } from "./upstream-client";

/**
 * Bytes that may wait in the first client's stream before a blob fill pauses
 * reading the upstream. A slow client therefore slows the fill, and the Durable
 * Object buffers at most this much plus one upstream chunk for it.
 */
const clientQueueBytes = 4 * 1024 * 1024;

/** Default of UPSTREAM_CLIENT_STALL_SECONDS: how long a fill waits for a first client whose queue is full before it drops that client. */
export const defaultClientStallSeconds = 30;

/** The R2 key, digest and size of a blob that a fill stores. */
export interface BlobCopyTarget {
  storageKey: string;
  /** The sha256 digest that the bytes must have. */
  digest: string;
  /** The upstream Content-Length, which the stored object must match. */
  size: number;
}

/** Creates the stream that carries a blob fill's bytes to its first client. */
export function createClientStream(): TransformStream<Uint8Array, Uint8Array> {
  return new TransformStream<Uint8Array, Uint8Array>({}, new ByteLengthQueuingStrategy({ highWaterMark: clientQueueBytes }));
}

/**
 * Streams an upstream blob body into R2 under `target.storageKey`, hashing it
 * on the way, and forwards the same chunks to `client` when one is given.
 * Once the digest is verified, `onStored` runs (it records the blob in D1).
 * The client's last byte is held back until `onStored` has finished, so a
 * client never sees a complete body with the wrong digest or one that is not
 * recorded yet. A client that cancels its stream, or leaves its queue full
 * for `clientStallMs`, is dropped and the copy goes on. On a short or long body, an R2 failure or a digest mismatch, the object
 * is deleted, the client stream is aborted and UNAVAILABLE is raised. When
 * `onStored` fails, the object is deleted and its error is raised.
 */
export async function copyUpstreamBlob(
  bucket: R2Bucket,
  target: BlobCopyTarget,
  body: ReadableStream<Uint8Array>,
  client: WritableStream<Uint8Array> | null,
  onStored: (checksums: Checksums) => Promise<void>,
  clientStallMs: number = defaultClientStallSeconds * 1000,
): Promise<void> {
  const forwarder = new ClientForwarder(client, target, clientStallMs);
  const hasher = new StreamingHasher();
  try {
    await storeChunks(bucket, target, body, async (chunk) => {
      await hasher.update(chunk);
      await forwarder.write(chunk);
    });
  } catch (error) {
    await hasher.abort();
    log.warn("storing an upstream blob failed", { storageKey: target.storageKey, digest: target.digest, error: String(error) });
    await bucket.delete(target.storageKey);
    const failure = upstreamUnavailable(`the upstream registry sent fewer or more bytes than its Content-Length for blob ${target.digest}`);
    await forwarder.abort(failure);
    throw failure;
  }

  const checksums = await hasher.finish();
  if (checksums.digest !== target.digest) {
    await bucket.delete(target.storageKey);
    log.warn("upstream blob digest mismatch", { storageKey: target.storageKey, expected: target.digest, actual: checksums.digest });
    const mismatch = upstreamUnavailable(`the upstream registry sent blob content with digest ${checksums.digest} for ${target.digest}`);
    await forwarder.abort(new Error(`blob ${target.digest} failed its digest check`));
    throw mismatch;
  }

  try {
    await onStored(checksums);
  } catch (error) {
    await bucket.delete(target.storageKey);
    await forwarder.abort(new Error("recording the stored blob failed"));
    throw error;
  }
  forwarder.finish();
}

/**
 * Pipes `body` into a FixedLengthStream that R2 stores, passing each chunk to
 * `onChunk` after R2 has accepted it. Resolves once R2 has stored the whole object.
 */
async function storeChunks(
  bucket: R2Bucket,
  target: BlobCopyTarget,
  body: ReadableStream<Uint8Array>,
  onChunk: (chunk: Uint8Array) => Promise<void>,
): Promise<void> {
  const sized = new FixedLengthStream(target.size);
  const stored = bucket.put(target.storageKey, sized.readable);
  // The put's rejection is awaited below; this only keeps it from being reported as unhandled meanwhile.
  stored.catch(() => undefined);
  const writer = sized.writable.getWriter();
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      await writer.write(value);
      await onChunk(value);
    }
    await writer.close();
  } catch (error) {
    await reader.cancel(error).catch(() => undefined);
    await writer.abort(error).catch(() => undefined);
    await stored.catch(() => undefined);
    throw error;
  }
  await stored;
}

/**
 * Writes chunks to the first client of a fill until it disconnects or
 * stalls, holding back the blob's last byte.
 */
class ClientForwarder {
  #writer: WritableStreamDefaultWriter<Uint8Array> | null;
  readonly #target: BlobCopyTarget;
  readonly #stallMs: number;
  #received = 0;
  #lastByte: Uint8Array | null = null;

  constructor(client: WritableStream<Uint8Array> | null, target: BlobCopyTarget, stallMs: number) {
    this.#writer = client?.getWriter() ?? null;
    this.#target = target;
    this.#stallMs = stallMs;
  }

  /**
   * Queues a chunk for the client, waiting while the client's queue is full.
   * A client whose queue stays full for the stall time is dropped with an
   * error, so that a client that stops reading cannot hold up the fill and
   * every caller waiting for it. Its retry reads the stored blob from R2.
   */
  async write(chunk: Uint8Array): Promise<void> {
    this.#received += chunk.byteLength;
    let sendable = chunk;
    if (this.#received === this.#target.size && chunk.byteLength > 0) {
      this.#lastByte = chunk.subarray(chunk.byteLength - 1);
      sendable = chunk.subarray(0, chunk.byteLength - 1);
    }
    const writer = this.#writer;
    if (!writer || sendable.byteLength === 0) return;

    // A queue with room needs no wait, so most chunks start no timer.
    const hasRoom = writer.desiredSize !== null && writer.desiredSize > 0;
    if (!hasRoom && !(await this.#waitForRoom(writer, chunk.byteLength))) return;
    writer.write(sendable).catch((error: unknown) => this.#drop(error));
  }

  /**
   * Waits until the client's queue has room and returns true. Returns false
   * after dropping the client, when the stream failed or stayed full for the
   * stall time.
   */
  async #waitForRoom(writer: WritableStreamDefaultWriter<Uint8Array>, chunkBytes: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<"stalled">((resolve) => (timer = setTimeout(() => resolve("stalled"), this.#stallMs)));
    const ready = writer.ready.then(() => "ready" as const);
    // After a stall the writer is aborted, which rejects `ready` when nothing awaits it any more.
    ready.catch(() => undefined);
    try {
      if ((await Promise.race([ready, stalled])) === "ready") return true;
    } catch (error) {
      this.#drop(error);
      return false;
    } finally {
      clearTimeout(timer ?? null);
    }

    log.warn("dropping the first client of a blob fill, which stopped reading", {
      digest: this.#target.digest,
      stallMs: this.#stallMs,
      sentBytes: this.#received - chunkBytes,
    });
    // Not awaited: the abort waits for the write that the full queue holds, which may never finish.
    this.#writer = null;
    writer.abort(new Error(`the client read nothing of blob ${this.#target.digest} for ${this.#stallMs} ms`)).catch(() => undefined);
    return false;
  }

  /**
   * Sends the held-back byte and closes the client stream. It does not wait
   * until the client has read everything, so callers waiting for the fill
   * are not held up by a slow first client.
   */
  finish(): void {
    const writer = this.#writer;
    if (!writer) return;
    if (this.#lastByte) writer.write(this.#lastByte).catch((error: unknown) => this.#drop(error));
    writer.close().catch((error: unknown) => this.#drop(error));
  }

  /** Fails the client stream, so the client's response ends with an error instead of a complete body. */
  async abort(reason: Error): Promise<void> {
    const writer = this.#writer;
    this.#writer = null;
    await writer?.abort(reason).catch(() => undefined);
  }

  #drop(error: unknown): void {
    if (!this.#writer) return;
    this.#writer = null;
    log.info("client left a blob fill, which goes on storing", { digest: this.#target.digest, error: String(error) });
  }
}
