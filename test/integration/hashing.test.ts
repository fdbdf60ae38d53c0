import { md5 } from "@noble/hashes/legacy.js";
import { bytesToHex } from "@noble/hashes/utils.js";
import { describe, expect, it } from "vitest";
import { BlobHasher, digestBytes, type ChecksumState } from "../../src/storage/hashing";
import { randomBytes, sha1Hex, sha256Hex } from "./helpers";

const encoder = new TextEncoder();

/** Published test vectors: FIPS 180-2 examples for SHA-256 and SHA-1, RFC 1321 for MD5. */
const vectors = [
  {
    input: "",
    sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    sha1: "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    md5: "d41d8cd98f00b204e9800998ecf8427e",
  },
  {
    input: "abc",
    sha256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    sha1: "a9993e364706816aba3e25717850c26c9cd0d89d",
    md5: "900150983cd24fb0d6963f7d28e17f72",
  },
  {
    input: "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
    sha256: "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    sha1: "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
    md5: "8215ef0796a20bcaaae116d3876c664a",
  },
  {
    input: "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
    sha256: "f371bc4a311f2b009eef952dd83ca80e2b60026c8e935592d0f9c308453c813e",
    sha1: "50abf5706a150990a08b2c5ea40fa0e585554732",
    md5: "57edf4a22be3c955ac49da2e2107b67a",
  },
  {
    input: "a".repeat(1_000_000),
    sha256: "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    sha1: "34aa973cd4c4daa4f61eeb2bdbad27316534016f",
    md5: "7707d6ae4e027c70eea2a935c2296f21",
  },
];

/**
 * Hashes `bytes` in pieces cut at `splits`, saving the state after each piece
 * and resuming it in a new hasher, as an upload session does between PATCH
 * requests. The state also goes through structured cloning, as Durable
 * Object storage does.
 */
function hashWithSaves(bytes: Uint8Array, splits: number[]) {
  let state: ChecksumState = new BlobHasher().save();
  let start = 0;
  for (const end of [...splits, bytes.byteLength]) {
    const hasher = new BlobHasher(state);
    hasher.update(bytes.subarray(start, end));
    expect(hasher.byteLength).toBe(end);
    state = structuredClone(hasher.save());
    start = end;
  }
  return new BlobHasher(state).finish();
}

/** Split points inside the first block, at block boundaries, next to them and inside later blocks. */
function interestingSplits(length: number): number[] {
  const candidates = [
    1, 3, 55, 56, 57, 63, 64, 65, 100, 119, 120, 127, 128, 129, 191, 192, 1000, 4095, 4096, 4097, 65_536, 65_537, 524_288, 999_999,
  ];
  return candidates.filter((split) => split > 0 && split < length);
}

describe("BlobHasher", () => {
  it.each(vectors.map((vector) => [vector.input.length, vector] as const))("one-shot vector of %i bytes", (_length, vector) => {
    const hasher = new BlobHasher();
    hasher.update(encoder.encode(vector.input));
    const checksums = hasher.finish();

    expect(checksums.digest).toBe(`sha256:${vector.sha256}`);
    expect(checksums.sha1).toBe(vector.sha1);
    expect(checksums.md5).toBe(vector.md5);
  });

  it.each(vectors.map((vector) => [vector.input.length, vector] as const))("saved state, vector of %i bytes", (_length, vector) => {
    const bytes = encoder.encode(vector.input);
    // Each split of the million-byte vector costs a whole hash, so only the short vectors get every split.
    const singleSplitLimit = bytes.byteLength > 1000 ? 0 : bytes.byteLength;
    for (let split = 0; split <= singleSplitLimit; split++) {
      const checksums = hashWithSaves(bytes, [split]);
      expect(checksums.digest, `split at byte ${split}`).toBe(`sha256:${vector.sha256}`);
      expect(checksums.sha1, `split at byte ${split}`).toBe(vector.sha1);
      expect(checksums.md5, `split at byte ${split}`).toBe(vector.md5);
    }

    const many = hashWithSaves(bytes, interestingSplits(bytes.byteLength));
    expect(many.digest).toBe(`sha256:${vector.sha256}`);
    expect(many.sha1).toBe(vector.sha1);
    expect(many.md5).toBe(vector.md5);
  });

  it("saved state at every split of random data", async () => {
    const bytes = randomBytes(300);
    const expectedSha256 = `sha256:${await sha256Hex(bytes)}`;
    const expectedSha1 = await sha1Hex(bytes);
    const expectedMd5 = bytesToHex(md5(bytes));

    for (let first = 0; first <= bytes.byteLength; first++) {
      const second = Math.min(bytes.byteLength, first + 1 + (first % 70));
      const checksums = hashWithSaves(bytes, [first, second]);
      expect(checksums.digest, `splits at ${first} and ${second}`).toBe(expectedSha256);
      expect(checksums.sha1, `splits at ${first} and ${second}`).toBe(expectedSha1);
      expect(checksums.md5, `splits at ${first} and ${second}`).toBe(expectedMd5);
    }
  });

  it("saved state keeps partial block", () => {
    const hasher = new BlobHasher();
    hasher.update(encoder.encode("a".repeat(70)));
    const state = hasher.save();

    expect(state.sha256.length).toBe(70);
    expect(state.sha256.pending).toHaveLength(6);
    expect(state.sha1.pending).toHaveLength(6);
    expect(state.sha256.words).toHaveLength(8);
    expect(state.sha1.words).toHaveLength(5);
  });

  it("digestBytes matches WebCrypto", async () => {
    const bytes = randomBytes(1000);
    expect(await digestBytes("sha256", bytes)).toBe(`sha256:${await sha256Hex(bytes)}`);
    expect(await digestBytes("sha256", encoder.encode("abc"))).toBe(`sha256:${vectors[1]!.sha256}`);
  });
});
