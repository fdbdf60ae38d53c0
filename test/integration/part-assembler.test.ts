import { describe, expect, it } from "vitest";
import { RegistryError } from "../../src/errors";
import { assertRoomForPart, maxParts, PartAssembler } from "../../src/storage/part-assembler";
import { concatBytes, randomBytes } from "./helpers";

interface AssemblyRecord {
  parts: Uint8Array[];
  /** Largest number of bytes the assembler buffered after any push. */
  maxBuffered: number;
  /** Bytes the assembler buffered while a part was being uploaded. */
  bufferedDuringUpload: number[];
  remainder: Uint8Array;
}

/** Feeds `chunkSizes` of `bytes` through an assembler and records each part it produced. */
async function assemble(bytes: Uint8Array, chunkSizes: number[], partSize: number, initial?: Uint8Array): Promise<AssemblyRecord> {
  const parts: Uint8Array[] = [];
  const bufferedDuringUpload: number[] = [];
  let maxBuffered = initial?.byteLength ?? 0;
  const assembler: PartAssembler = new PartAssembler(
    partSize,
    async (part) => {
      bufferedDuringUpload.push(assembler.bufferedBytes);
      parts.push(new Uint8Array(await part.arrayBuffer()));
    },
    initial,
  );

  let offset = 0;
  let index = 0;
  while (offset < bytes.byteLength) {
    const size = chunkSizes[index % chunkSizes.length]!;
    await assembler.push(bytes.subarray(offset, offset + size));
    maxBuffered = Math.max(maxBuffered, assembler.bufferedBytes);
    offset += size;
    index += 1;
  }
  const remainder = await assembler.takeRemainder();
  return { parts, maxBuffered, bufferedDuringUpload, remainder };
}

describe("PartAssembler", () => {
  const partSize = 64;

  it.each([
    ["1-byte chunks", [1]],
    ["odd chunk sizes", [7, 13, 1, 100]],
    ["chunks of exactly one part", [64]],
    ["chunks one byte over a part", [65]],
    ["chunks spanning several parts", [200, 3]],
    ["empty chunks between others", [0, 30, 0, 50]],
  ])("parts of exact size: %s", async (_label, chunkSizes) => {
    const bytes = randomBytes(1000);
    const record = await assemble(bytes, chunkSizes, partSize);

    expect(record.parts).toHaveLength(Math.floor(1000 / partSize));
    for (const part of record.parts) expect(part.byteLength).toBe(partSize);
    expect(record.remainder.byteLength).toBe(1000 % partSize);
    expect(concatBytes(...record.parts, record.remainder)).toEqual(bytes);
  });

  it.each([[[1]], [[7, 13, 1, 100]], [[64]], [[65]], [[500]]])("holds at most one part: chunks %j", async (chunkSizes) => {
    const record = await assemble(randomBytes(2000), chunkSizes, partSize);

    expect(record.maxBuffered).toBeLessThan(partSize);
    // The buffer is handed over before each upload, so no second part accumulates meanwhile.
    expect(record.bufferedDuringUpload.every((buffered) => buffered === 0)).toBe(true);
  });

  it("initial tail starts first part", async () => {
    const tail = randomBytes(50);
    const bytes = randomBytes(100);
    const record = await assemble(bytes, [9], partSize, tail);

    expect(record.parts).toHaveLength(2);
    expect(record.parts[0]).toEqual(concatBytes(tail, bytes.subarray(0, 14)));
    expect(record.parts[1]).toEqual(bytes.subarray(14, 78));
    expect(record.remainder).toEqual(bytes.subarray(78));
  });

  it("takeRemainder empties buffer", async () => {
    const assembler = new PartAssembler(partSize, async () => {});
    await assembler.push(randomBytes(10));
    expect(assembler.bufferedBytes).toBe(10);

    expect((await assembler.takeRemainder()).byteLength).toBe(10);
    expect(assembler.bufferedBytes).toBe(0);
    expect((await assembler.takeRemainder()).byteLength).toBe(0);
  });

  it("no part below part size", async () => {
    const parts: Blob[] = [];
    const assembler = new PartAssembler(partSize, async (part) => {
      parts.push(part);
    });
    await assembler.push(randomBytes(partSize - 1));

    expect(parts).toHaveLength(0);
    expect(assembler.bufferedBytes).toBe(partSize - 1);
  });
});

describe("part limit", () => {
  /** Returns the error that `assertRoomForPart` throws, or null. */
  function partLimitError(partCount: number, partSize: number, limit?: number): unknown {
    try {
      assertRoomForPart(partCount, partSize, limit);
      return null;
    } catch (error) {
      return error;
    }
  }

  it("allows a part below the limit", () => {
    expect(partLimitError(2, 5, 3)).toBeNull();
  });

  it("rejects a part at the limit", () => {
    const error = partLimitError(3, 5, 3);

    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).code).toBe("SIZE_INVALID");
    expect((error as RegistryError).status).toBe(400);
    expect((error as RegistryError).message).toBe("blob exceeds 3 parts of 5 bytes");
  });

  it("rejects a part past the limit", () => {
    expect((partLimitError(4, 5, 3) as RegistryError).code).toBe("SIZE_INVALID");
  });

  it("defaults to 10,000 parts", () => {
    expect(maxParts).toBe(10_000);
    expect(partLimitError(9_999, 8 * 1024 * 1024)).toBeNull();
    expect((partLimitError(10_000, 8 * 1024 * 1024) as RegistryError).code).toBe("SIZE_INVALID");
  });
});
