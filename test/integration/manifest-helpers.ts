import { env } from "cloudflare:workers";
import { expect } from "vitest";
import { digestOf, randomBytes, registryFetch, uploadBlob } from "./helpers";

/** Media types the manifest tests push and negotiate. */
export const mediaTypes = {
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociEmpty: "application/vnd.oci.empty.v1+json",
  helmConfig: "application/vnd.cncf.helm.config.v1+json",
  helmChart: "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
  platform?: Record<string, string>;
}

export function utf8(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** Uploads `bytes` to the image and returns the descriptor of the stored blob. */
export async function pushBlob(name: string, bytes: Uint8Array, mediaType: string): Promise<Descriptor> {
  const digest = await uploadBlob(name, bytes);
  return { mediaType, digest, size: bytes.byteLength };
}

/** Uploads a config and one layer with random content, as every image manifest needs. */
export async function pushImageBlobs(
  name: string,
  configMediaType: string = mediaTypes.ociConfig,
  layerMediaType: string = mediaTypes.ociLayer,
): Promise<{ config: Descriptor; layer: Descriptor }> {
  const config = await pushBlob(
    name,
    utf8(JSON.stringify({ architecture: "amd64", os: "linux", nonce: crypto.randomUUID() })),
    configMediaType,
  );
  const layer = await pushBlob(name, randomBytes(256), layerMediaType);
  return { config, layer };
}

/** The two bytes `{}` that OCI artifacts use as their empty config, pushed as a blob. */
export function pushEmptyConfig(name: string): Promise<Descriptor> {
  return pushBlob(name, utf8("{}"), mediaTypes.ociEmpty);
}

/**
 * Serialises a manifest the way no JSON encoder would by default: tabs,
 * spaces before colons, CRLF line ends and a trailing newline. A registry
 * that re-serialises the manifest changes these bytes and therefore its digest.
 */
export function oddlyFormatted(manifest: Record<string, unknown>): Uint8Array {
  const text = JSON.stringify(manifest, null, "\t").replaceAll('":', '" :').replaceAll("\n", "\r\n");
  return utf8(`  ${text}\r\n\n`);
}

export function imageManifest(
  config: Descriptor,
  layers: Descriptor[],
  extra: Record<string, unknown> = {},
  mediaType: string = mediaTypes.ociManifest,
) {
  // Keys in an unusual order: layers and extras before mediaType and config.
  return { layers, ...extra, schemaVersion: 2, mediaType, config };
}

export function indexManifest(manifests: Descriptor[], extra: Record<string, unknown> = {}, mediaType: string = mediaTypes.ociIndex) {
  return { manifests, schemaVersion: 2, mediaType, ...extra };
}

export interface PutResult {
  response: Response;
  digest: string;
  bytes: Uint8Array;
}

/** PUTs manifest bytes under a tag or digest reference with the given Content-Type. */
export async function putManifest(name: string, reference: string, bytes: Uint8Array, contentType: string): Promise<PutResult> {
  const response = await registryFetch(`/v2/${name}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": contentType },
    body: bytes,
  });
  return { response, digest: await digestOf(bytes), bytes };
}

/** PUTs a manifest and fails the test unless the registry responds with 201. */
export async function putManifestOk(name: string, reference: string, bytes: Uint8Array, contentType: string): Promise<PutResult> {
  const result = await putManifest(name, reference, bytes, contentType);
  expect(result.response.status, `PUT ${name}:${reference}: ${await result.response.clone().text()}`).toBe(201);
  return result;
}

/** Pushes an OCI image manifest with fresh blobs; returns its descriptor and bytes. */
export async function pushImage(
  name: string,
  reference: string,
  extra: Record<string, unknown> = {},
): Promise<Descriptor & { bytes: Uint8Array }> {
  const { config, layer } = await pushImageBlobs(name);
  const bytes = oddlyFormatted(imageManifest(config, [layer], extra));
  const { digest } = await putManifestOk(name, reference, bytes, mediaTypes.ociManifest);
  return { mediaType: mediaTypes.ociManifest, digest, size: bytes.byteLength, bytes };
}

/** Counts the D1 rows that belong to an image: the image row, its manifests and its tags. */
export async function imageRowCounts(name: string): Promise<{ images: number; manifests: number; tags: number }> {
  const images = await env.DB.prepare("SELECT COUNT(*) AS count FROM images WHERE name = ?").bind(name).first<{ count: number }>();
  const manifests = await env.DB.prepare("SELECT COUNT(*) AS count FROM manifests m JOIN images i ON i.id = m.image_id WHERE i.name = ?")
    .bind(name)
    .first<{ count: number }>();
  const tags = await env.DB.prepare("SELECT COUNT(*) AS count FROM tags t JOIN images i ON i.id = t.image_id WHERE i.name = ?")
    .bind(name)
    .first<{ count: number }>();
  return { images: images?.count ?? 0, manifests: manifests?.count ?? 0, tags: tags?.count ?? 0 };
}

/** Returns whether a manifest digest has a row in D1 under any image. */
export async function manifestRowExists(digest: string): Promise<boolean> {
  const row = await env.DB.prepare("SELECT 1 AS found FROM manifests WHERE digest = ?").bind(digest).first();
  return row !== null;
}

/** Returns every tag, in any image, whose manifest row is missing. */
export async function danglingTags(): Promise<{ name: string; digest: string }[]> {
  const { results } = await env.DB.prepare(
    `SELECT t.name, t.digest FROM tags t
       LEFT JOIN manifests m ON m.image_id = t.image_id AND m.digest = t.digest
      WHERE m.digest IS NULL`,
  ).all<{ name: string; digest: string }>();
  return results;
}

/** D1's maximum size of a string, BLOB or table row, from Cloudflare's D1 limits page. */
export const d1MaxRowBytes = 2_000_000;

/**
 * Returns the bytes of text the manifest's D1 row holds. Local D1 accepts
 * larger rows than D1 in production does, so the tests check the size.
 */
export async function manifestRowBytes(digest: string): Promise<number> {
  const row = await env.DB.prepare(
    `SELECT length(CAST(digest AS BLOB)) + length(CAST(media_type AS BLOB)) + coalesce(length(CAST(artifact_type AS BLOB)), 0)
          + coalesce(length(CAST(subject_digest AS BLOB)), 0) + coalesce(length(CAST(annotations AS BLOB)), 0) AS bytes
       FROM manifests WHERE digest = ?`,
  )
    .bind(digest)
    .first<{ bytes: number }>();
  if (!row) throw new Error(`manifest ${digest} has no row in D1`);
  return row.bytes;
}
