import { sha1 } from "@noble/hashes/legacy.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import SparkMD5 from "spark-md5";

/**
 * The running state of one Merkle–Damgård hash: its chaining words, the bytes
 * of the unfinished block and the total length hashed so far.
 */
export interface HashState {
  words: number[];
  pending: number[];
  length: number;
}

/** The state of all three blob checksums, saved between PATCH requests. */
export interface ChecksumState {
  sha256: HashState;
  sha1: HashState;
  /** spark-md5's own documented state object. */
  md5: SparkMD5.State;
}

export interface Checksums {
  /** `sha256:<hex>`, the blob's OCI digest. */
  digest: string;
  sha1: string;
  md5: string;
}

/**
 * The fields of @noble/hashes' HashMD base class (version 2.0) that contain
 * the running state. WebCrypto cannot save a hash halfway, so the state is read
 * from and written to these fields; a round-trip test guards the layout.
 */
interface MerkleDamgardHash {
  get(): number[];
  set(...words: number[]): void;
  buffer: Uint8Array;
  pos: number;
  length: number;
  update(data: Uint8Array): unknown;
  digest(): Uint8Array;
}

function exportState(hash: MerkleDamgardHash): HashState {
  return { words: hash.get(), pending: Array.from(hash.buffer.subarray(0, hash.pos)), length: hash.length };
}

function importState(hash: MerkleDamgardHash, state: HashState): void {
  hash.set(...state.words);
  hash.buffer.set(state.pending);
  hash.pos = state.pending.length;
  hash.length = state.length;
}

/**
 * Computes sha256, sha1 and md5 of a blob in one pass, with a state that can
 * be saved after any number of bytes and resumed in another Worker instance.
 */
export class BlobHasher {
  readonly #sha256: MerkleDamgardHash;
  readonly #sha1: MerkleDamgardHash;
  /**
   * spark-md5 rather than @noble/hashes for MD5: it has a documented
   * getState/setState API and hashed about three times faster on Node 22.
   */
  readonly #md5: SparkMD5.ArrayBuffer;

  constructor(state?: ChecksumState) {
    this.#sha256 = sha256.create() as unknown as MerkleDamgardHash;
    this.#sha1 = sha1.create() as unknown as MerkleDamgardHash;
    this.#md5 = new SparkMD5.ArrayBuffer();
    if (state) {
      importState(this.#sha256, state.sha256);
      importState(this.#sha1, state.sha1);
      this.#md5.setState(state.md5);
    }
  }

  update(data: Uint8Array): void {
    this.#sha256.update(data);
    this.#sha1.update(data);
    this.#md5.append(toArrayBuffer(data));
  }

  get byteLength(): number {
    return this.#sha256.length;
  }

  save(): ChecksumState {
    return { sha256: exportState(this.#sha256), sha1: exportState(this.#sha1), md5: this.#md5.getState() };
  }

  /** Finishes all three hashes; the hasher cannot be updated afterwards. */
  finish(): Checksums {
    return {
      digest: `sha256:${bytesToHex(this.#sha256.digest())}`,
      sha1: bytesToHex(this.#sha1.digest()),
      md5: this.#md5.end(false),
    };
  }
}

/**
 * Computes the sha256, sha1 and md5 of bytes that arrive in one request, in
 * the runtime's native code through `crypto.DigestStream`. Its state cannot
 * be saved, so it suits a single-request copy such as a remote blob fill;
 * resumable uploads use BlobHasher.
 */
export class StreamingHasher {
  readonly #streams = [new crypto.DigestStream("SHA-256"), new crypto.DigestStream("SHA-1"), new crypto.DigestStream("MD5")];
  readonly #writers = this.#streams.map((stream) => stream.getWriter());

  /** Adds bytes to all three hashes. */
  async update(data: Uint8Array): Promise<void> {
    await Promise.all(this.#writers.map((writer) => writer.write(data)));
  }

  /** Finishes all three hashes; the hasher cannot be updated afterwards. */
  async finish(): Promise<Checksums> {
    await Promise.all(this.#writers.map((writer) => writer.close()));
    const [sha256, sha1, md5] = await Promise.all(this.#streams.map(async (stream) => bytesToHex(new Uint8Array(await stream.digest))));
    return { digest: `sha256:${sha256}`, sha1: sha1!, md5: md5! };
  }

  /** Discards the hashes after a failed copy. */
  async abort(): Promise<void> {
    await Promise.all(this.#writers.map((writer) => writer.abort().catch(() => undefined)));
    // An aborted DigestStream rejects its digest promise, which nothing else reads.
    await Promise.all(this.#streams.map((stream) => stream.digest.catch(() => undefined)));
  }
}

/** Returns the bytes of a view as an ArrayBuffer of their own, copying only when the view is partial. */
function toArrayBuffer(data: Uint8Array): ArrayBuffer {
  const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer;
  return whole ? (data.buffer as ArrayBuffer) : (data.slice().buffer as ArrayBuffer);
}

/** Computes the digest of a complete byte array with the given algorithm through WebCrypto. */
export async function digestBytes(algorithm: "sha256" | "sha512", bytes: Uint8Array): Promise<string> {
  const name = algorithm === "sha256" ? "SHA-256" : "SHA-512";
  const hash = await crypto.subtle.digest(name, bytes);
  return `${algorithm}:${bytesToHex(new Uint8Array(hash))}`;
}
