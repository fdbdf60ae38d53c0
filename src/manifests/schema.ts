import { z } from "zod";
import { RegistryError } from "../errors";

export const mediaTypes = {
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
} as const;

export type ManifestMediaType = (typeof mediaTypes)[keyof typeof mediaTypes];

export const manifestMediaTypes: readonly string[] = Object.values(mediaTypes);

/** Layers of these types may live outside the registry, so they need not be uploaded. */
const nonDistributableLayerTypes = new Set([
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
]);

/**
 * Media types and digests are stored in D1 rows, so their length is capped.
 * RFC 6838 allows at most 127 characters for each of type and subtype, and
 * sha512, the longest digest the registry computes, has 135 characters.
 */
const maxMediaTypeLength = 255;
const maxDigestLength = 255;

const digestSchema = z
  .string()
  .max(maxDigestLength)
  .regex(/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/, "invalid digest");
const mediaTypeSchema = z.string().min(1).max(maxMediaTypeLength);
const annotationsSchema = z.record(z.string(), z.string());

const descriptorSchema = z.object({
  mediaType: mediaTypeSchema,
  digest: digestSchema,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: annotationsSchema.optional(),
  artifactType: mediaTypeSchema.optional(),
  platform: z.record(z.string(), z.unknown()).optional(),
});

const imageManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: mediaTypeSchema.optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: annotationsSchema.optional(),
});

const indexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  artifactType: mediaTypeSchema.optional(),
  manifests: z.array(descriptorSchema),
  subject: descriptorSchema.optional(),
  annotations: annotationsSchema.optional(),
});

/** The digest and declared size of a config or layer descriptor. */
export interface BlobDescriptor {
  digest: string;
  size: number;
}

/** The facts about a manifest that the registry stores and indexes. */
export interface ParsedManifest {
  mediaType: ManifestMediaType;
  /** artifactType, or for image manifests without one the config media type. */
  artifactType: string | null;
  subjectDigest: string | null;
  annotations: Record<string, string> | null;
  /** Config and layer digests that must be linked to the image. */
  blobDigests: string[];
  /** Config and layer descriptors, whose sizes must match the blobs they name. */
  blobDescriptors: BlobDescriptor[];
  /** Child manifest digests of an index that must exist in the image. */
  manifestDigests: string[];
}

/**
 * Validates a manifest body. The media type comes from the body's mediaType
 * field, or from the Content-Type header when that field is absent. When both
 * are set, they must agree.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | null): ParsedManifest {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch {
    throw new RegistryError("MANIFEST_INVALID", "manifest is not valid UTF-8 JSON");
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new RegistryError("MANIFEST_INVALID", "manifest must be a JSON object");
  }

  const mediaType = resolveMediaType(json as Record<string, unknown>, contentType);
  if (mediaType === mediaTypes.dockerManifestList || mediaType === mediaTypes.ociIndex) {
    const index = validate(indexSchema, json);
    return {
      mediaType,
      artifactType: index.artifactType ?? null,
      subjectDigest: index.subject?.digest ?? null,
      annotations: index.annotations ?? null,
      blobDigests: [],
      blobDescriptors: [],
      manifestDigests: unique(index.manifests.map((descriptor) => descriptor.digest)),
    };
  }

  const manifest = validate(imageManifestSchema, json);
  const layers = manifest.layers.filter((layer) => !(nonDistributableLayerTypes.has(layer.mediaType) && layer.urls?.length));
  return {
    mediaType,
    artifactType: manifest.artifactType ?? manifest.config.mediaType,
    subjectDigest: manifest.subject?.digest ?? null,
    annotations: manifest.annotations ?? null,
    blobDigests: unique([manifest.config.digest, ...layers.map((layer) => layer.digest)]),
    blobDescriptors: [manifest.config, ...layers].map(({ digest, size }) => ({ digest, size })),
    manifestDigests: [],
  };
}

function resolveMediaType(json: Record<string, unknown>, contentType: string | null): ManifestMediaType {
  const declared = typeof json.mediaType === "string" ? json.mediaType : null;
  const header = contentType?.split(";")[0]?.trim() || null;
  if (declared && header && manifestMediaTypes.includes(header) && declared !== header) {
    throw new RegistryError("MANIFEST_INVALID", `mediaType ${declared} does not match Content-Type ${header}`);
  }

  const candidate = declared ?? (header && manifestMediaTypes.includes(header) ? header : null) ?? inferMediaType(json);
  if (!manifestMediaTypes.includes(candidate)) {
    throw new RegistryError("MANIFEST_INVALID", `unsupported manifest media type ${candidate}; Docker schema 1 is not supported`, {
      mediaType: candidate,
    });
  }
  return candidate as ManifestMediaType;
}

/** Infers the media type of an OCI manifest that omits mediaType from its shape. */
function inferMediaType(json: Record<string, unknown>): string {
  if (Array.isArray(json.manifests)) return mediaTypes.ociIndex;
  if (json.config !== undefined) return mediaTypes.ociManifest;
  return "unknown";
}

function validate<T>(schema: z.ZodType<T>, json: unknown): T {
  const result = schema.safeParse(json);
  if (!result.success) {
    const issues = result.error.issues.map((issue) => ({ path: issue.path.join("."), message: issue.message }));
    throw new RegistryError("MANIFEST_INVALID", "manifest does not match its media type's schema", { issues });
  }
  return result.data;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}
