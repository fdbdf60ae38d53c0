import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

export const mediaTypes = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar+gzip",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
} as const;

/** Every manifest media type, for an Accept header. */
export const manifestMediaTypes: readonly string[] = [
  mediaTypes.ociIndex,
  mediaTypes.ociManifest,
  mediaTypes.dockerManifestList,
  mediaTypes.dockerManifest,
];

/** A blob or manifest with the bytes that its digest covers. */
export interface Content {
  mediaType: string;
  digest: string;
  size: number;
  bytes: Buffer;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface GeneratedImage {
  platform: Platform;
  config: Content;
  layers: Content[];
  manifest: Content;
}

/** A multi-platform image: an index (or Docker manifest list) and one image per platform. */
export interface GeneratedIndex {
  format: "oci" | "docker";
  index: Content;
  images: GeneratedImage[];
}

export interface GenerateIndexOptions {
  /** OCI media types, or Docker schema 2 ones (manifest list, manifest, config, layers). */
  format?: "oci" | "docker";
  platforms?: Platform[];
  layersPerImage?: number;
  /** Bytes of random file content in each layer, before tar and gzip. */
  layerSize?: number;
}

/**
 * Builds a multi-platform image in memory. Each platform gets layers that
 * are gzipped tar files of one random file each, a config whose diff_ids
 * match them and an image manifest. An index lists the image manifests.
 * Random content makes every digest new, so no test depends on a blob that
 * an earlier push left in the registry.
 */
export function generateIndex(options: GenerateIndexOptions = {}): GeneratedIndex {
  const format = options.format ?? "oci";
  const types = format === "oci" ? ociTypes : dockerTypes;
  const platforms = options.platforms ?? [
    { os: "linux", architecture: "amd64" },
    { os: "linux", architecture: "arm64", variant: "v8" },
  ];

  const images = platforms.map((platform) => generateImage(platform, format, options.layersPerImage ?? 2, options.layerSize ?? 64 * 1024));
  const index = jsonContent(types.index, {
    schemaVersion: 2,
    mediaType: types.index,
    manifests: images.map((image) => ({ ...descriptorOf(image.manifest), platform: image.platform })),
  });
  return { format, index, images };
}

/** Builds one image of the given platform, as `generateIndex` does for each platform. */
export function generateImage(platform: Platform, format: "oci" | "docker" = "oci", layerCount = 2, layerSize = 64 * 1024): GeneratedImage {
  const types = format === "oci" ? ociTypes : dockerTypes;
  const layers: Content[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < layerCount; i++) {
    const tar = tarOfOneFile(`layer-${i}.bin`, randomBytes(layerSize));
    diffIds.push(sha256Digest(tar));
    layers.push(content(types.layer, gzipSync(tar)));
  }

  const config = jsonContent(types.config, {
    created: "2026-01-01T00:00:00Z",
    ...platform,
    config: { Labels: { "org.example.edge-registry.e2e": randomBytes(8).toString("hex") } },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: layers.map((_, i) => ({ created: "2026-01-01T00:00:00Z", created_by: `e2e layer ${i}` })),
  });
  const manifest = jsonContent(types.manifest, {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: descriptorOf(config),
    layers: layers.map(descriptorOf),
  });
  return { platform, config, layers, manifest };
}

/** Returns every blob and manifest of the index: configs and layers first, then image manifests, then the index. */
export function allContent(generated: GeneratedIndex): Content[] {
  const blobs = generated.images.flatMap((image) => [image.config, ...image.layers]);
  const manifests = generated.images.map((image) => image.manifest);
  return [...blobs, ...manifests, generated.index];
}

/** Returns the config, the layers and the manifest of one image. */
export function imageContent(image: GeneratedImage): Content[] {
  return [image.config, ...image.layers, image.manifest];
}

export function descriptorOf(item: Content): { mediaType: string; digest: string; size: number } {
  return { mediaType: item.mediaType, digest: item.digest, size: item.size };
}

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * Writes an OCI image layout (image-layout 1.0.0) with every item of
 * `contents` as a blob and index.json entries for `tags`, each annotated
 * with `org.opencontainers.image.ref.name` as `skopeo copy oci:<dir>:<tag>`
 * expects. A tag may point at an image manifest or an index.
 */
export async function writeOciLayout(dir: string, contents: readonly Content[], tags: Record<string, Content>): Promise<void> {
  await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
  await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  for (const item of contents) {
    await writeFile(blobPath(dir, item.digest), item.bytes);
  }

  const layoutIndex = {
    schemaVersion: 2,
    mediaType: mediaTypes.ociIndex,
    manifests: Object.entries(tags).map(([tag, item]) => ({
      ...descriptorOf(item),
      annotations: { "org.opencontainers.image.ref.name": tag },
    })),
  };
  await writeFile(join(dir, "index.json"), JSON.stringify(layoutIndex));
}

/** Returns the digest that the layout's index.json records for a tag. */
export async function layoutDigestOfTag(dir: string, tag: string): Promise<string> {
  const index = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as {
    manifests: { digest: string; annotations?: Record<string, string> }[];
  };
  const entry = index.manifests.find((manifest) => manifest.annotations?.["org.opencontainers.image.ref.name"] === tag);
  if (!entry) throw new Error(`OCI layout ${dir} has no manifest tagged ${tag}`);
  return entry.digest;
}

/** Reads every blob of an OCI layout and returns them by digest. */
export async function readLayoutBlobs(dir: string): Promise<Map<string, Buffer>> {
  const blobs = new Map<string, Buffer>();
  const folder = join(dir, "blobs", "sha256");
  for (const hex of await readdir(folder)) {
    blobs.set(`sha256:${hex}`, await readFile(join(folder, hex)));
  }
  return blobs;
}

function blobPath(dir: string, digest: string): string {
  const [algorithm, hex] = digest.split(":");
  return join(dir, "blobs", algorithm!, hex!);
}

const ociTypes = { index: mediaTypes.ociIndex, manifest: mediaTypes.ociManifest, config: mediaTypes.ociConfig, layer: mediaTypes.ociLayer };
const dockerTypes = {
  index: mediaTypes.dockerManifestList,
  manifest: mediaTypes.dockerManifest,
  config: mediaTypes.dockerConfig,
  layer: mediaTypes.dockerLayer,
};

function content(mediaType: string, bytes: Buffer): Content {
  return { mediaType, digest: sha256Digest(bytes), size: bytes.byteLength, bytes };
}

function jsonContent(mediaType: string, value: unknown): Content {
  return content(mediaType, Buffer.from(JSON.stringify(value)));
}

/** Returns a POSIX ustar archive with one regular file. */
function tarOfOneFile(name: string, data: Buffer): Buffer {
  const header = Buffer.alloc(512);
  const field = (offset: number, length: number, value: string) => header.write(value, offset, length, "ascii");
  const octal = (value: number, length: number) => value.toString(8).padStart(length - 1, "0");

  field(0, 100, name);
  field(100, 8, octal(0o644, 8));
  field(108, 8, octal(0, 8));
  field(116, 8, octal(0, 8));
  field(124, 12, octal(data.byteLength, 12));
  field(136, 12, octal(Math.floor(Date.parse("2026-01-01T00:00:00Z") / 1000), 12));
  field(148, 8, "        ");
  field(156, 1, "0");
  field(257, 6, "ustar\0");
  field(263, 2, "00");

  // The checksum is the byte sum of the header with its own field read as spaces.
  let checksum = 0;
  for (const byte of header) checksum += byte;
  field(148, 8, `${octal(checksum, 7)}\0 `);

  const padding = Buffer.alloc((512 - (data.byteLength % 512)) % 512);
  const endOfArchive = Buffer.alloc(1024);
  return Buffer.concat([header, data, padding, endOfArchive]);
}
