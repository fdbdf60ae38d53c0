import { RegistryError } from "../errors";

/** R2 rejects multipart parts below 5 MiB, except the last part of an object. */
export const minPartSize = 5 * 1024 * 1024;
/** R2 allows at most this many parts in one multipart upload. */
export const maxParts = 10_000;

/**
 * Throws SIZE_INVALID when a blob of `partCount` parts cannot take one more.
 * `limit` defaults to R2's maximum; tests pass a small one.
 */
export function assertRoomForPart(partCount: number, partSize: number, limit: number = maxParts): void {
  if (partCount < limit) return;
  throw new RegistryError("SIZE_INVALID", `blob exceeds ${limit} parts of ${partSize} bytes`);
}

export interface UploadedPart {
  partNumber: number;
  etag: string;
}

/**
 * Cuts a stream of chunks of any size into parts of exactly `partSize` bytes
 * and hands each complete part to `uploadPart`. Between calls it keeps less
 * than one part in memory, so memory stays bounded whatever chunk sizes a
 * client sends. `takeRemainder` returns the bytes that did not fill a part.
 */
export class PartAssembler {
  readonly #partSize: number;
  readonly #uploadPart: (bytes: Blob) => Promise<void>;
  #chunks: Uint8Array[] = [];
  #buffered = 0;

  constructor(partSize: number, uploadPart: (bytes: Blob) => Promise<void>, initial?: Uint8Array) {
    this.#partSize = partSize;
    this.#uploadPart = uploadPart;
    if (initial && initial.byteLength > 0) {
      this.#chunks.push(initial);
      this.#buffered = initial.byteLength;
    }
  }

  async push(chunk: Uint8Array): Promise<void> {
    let rest = chunk;
    while (this.#buffered + rest.byteLength >= this.#partSize) {
      const take = this.#partSize - this.#buffered;
      this.#chunks.push(rest.subarray(0, take));
      rest = rest.subarray(take);

      const part = new Blob(this.#chunks);
      this.#chunks = [];
      this.#buffered = 0;
      await this.#uploadPart(part);
    }
    if (rest.byteLength > 0) {
      this.#chunks.push(rest);
      this.#buffered += rest.byteLength;
    }
  }

  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Returns the bytes that did not fill a whole part, and empties the buffer. */
  async takeRemainder(): Promise<Uint8Array> {
    const remainder = new Uint8Array(await new Blob(this.#chunks).arrayBuffer());
    this.#chunks = [];
    this.#buffered = 0;
    return remainder;
  }
}
