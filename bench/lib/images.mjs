// Test images made of random bytes: a Docker build context with one COPY per
// layer, and an OCI image layout with gzip-compressed layers for skopeo.

import { createHash, randomFillSync } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { constants, createGzip } from "node:zlib";

const MiB = 1024 * 1024;
const chunkSize = 4 * MiB;

/** Yields `size` random bytes in chunks of at most 4 MiB. */
function* randomChunks(size) {
  for (let left = size; left > 0; left -= chunkSize) {
    yield randomFillSync(Buffer.allocUnsafe(Math.min(chunkSize, left)));
  }
}

function layerFileName(index) {
  return `layer-${index}.bin`;
}

/**
 * Writes a Docker build context for an image FROM scratch whose layers are
 * `layerCount` random files of `layerMiB` MiB, one COPY instruction each.
 */
export async function writeBuildContext(dir, { layerCount, layerMiB }) {
  await mkdir(dir, { recursive: true });
  const instructions = ["FROM scratch"];
  for (let i = 0; i < layerCount; i++) {
    await pipeline(Readable.from(randomChunks(layerMiB * MiB)), createWriteStream(join(dir, layerFileName(i))));
    instructions.push(`COPY ${layerFileName(i)} /${layerFileName(i)}`);
  }
  await writeFile(join(dir, "Dockerfile"), `${instructions.join("\n")}\n`);
}

/** Builds a ustar header block for one regular file of `size` bytes. */
function tarHeader(name, size) {
  const header = Buffer.alloc(512);
  const field = (offset, length, value) => header.write(value, offset, length, "ascii");
  const octal = (value, width) => value.toString(8).padStart(width - 1, "0");
  field(0, 100, name);
  field(100, 8, octal(0o644, 8));
  field(108, 8, octal(0, 8));
  field(116, 8, octal(0, 8));
  field(124, 12, octal(size, 12));
  field(136, 12, octal(0, 12));
  field(156, 1, "0");
  field(257, 6, "ustar");
  field(263, 2, "00");
  // The checksum is the byte sum of the header with its own field read as eight spaces.
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  field(148, 8, `${octal(sum, 7)}\0`);
  return header;
}

/** Yields a tar stream that contains one file of `size` random bytes. */
function* tarOfRandomFile(name, size) {
  yield tarHeader(name, size);
  yield* randomChunks(size);
  const padding = (512 - (size % 512)) % 512;
  // A tar stream ends with two zero blocks after the last file's padding.
  yield Buffer.alloc(padding + 1024);
}

/** Creates a pass-through stream that hashes and counts the bytes that flow through it. */
function hashingStream() {
  const hash = createHash("sha256");
  let size = 0;
  const stream = new Transform({
    transform(chunk, _encoding, callback) {
      hash.update(chunk);
      size += chunk.length;
      callback(null, chunk);
    },
  });
  return { stream, result: () => ({ digest: `sha256:${hash.digest("hex")}`, size }) };
}

async function writeBlob(layoutDir, bytes) {
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  await writeFile(join(layoutDir, "blobs", "sha256", digest.slice(7)), bytes);
  return { digest, size: bytes.length };
}

/**
 * Writes an OCI image layout with one manifest tagged `tag`, whose layers
 * are gzip-compressed tars of random files. The layers are compressed here
 * so that skopeo sends them as they are instead of compressing them while
 * it pushes.
 */
export async function writeOciLayout(layoutDir, { layerCount, layerMiB }, tag) {
  const blobDir = join(layoutDir, "blobs", "sha256");
  await mkdir(blobDir, { recursive: true });

  const layers = [];
  const diffIds = [];
  for (let i = 0; i < layerCount; i++) {
    const uncompressed = hashingStream();
    const compressed = hashingStream();
    const partial = join(blobDir, `layer-${i}.partial`);
    await pipeline(
      Readable.from(tarOfRandomFile(layerFileName(i), layerMiB * MiB)),
      uncompressed.stream,
      createGzip({ level: constants.Z_BEST_SPEED }),
      compressed.stream,
      createWriteStream(partial),
    );
    const layer = compressed.result();
    await rename(partial, join(blobDir, layer.digest.slice(7)));
    layers.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...layer });
    diffIds.push(uncompressed.result().digest);
  }

  const config = { architecture: "amd64", os: "linux", config: {}, rootfs: { type: "layers", diff_ids: diffIds } };
  const configBlob = await writeBlob(layoutDir, Buffer.from(JSON.stringify(config)));
  const manifest = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...configBlob },
    layers,
  };
  const manifestBlob = await writeBlob(layoutDir, Buffer.from(JSON.stringify(manifest)));
  const index = {
    schemaVersion: 2,
    manifests: [{ mediaType: manifest.mediaType, ...manifestBlob, annotations: { "org.opencontainers.image.ref.name": tag } }],
  };
  await writeFile(join(layoutDir, "index.json"), JSON.stringify(index));
  await writeFile(join(layoutDir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
}
