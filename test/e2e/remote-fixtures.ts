/**
 * Upstream images and client checks that the tests of remote and virtual
 * repositories share.
 */
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { expect } from "vitest";
import {
  generateImage,
  imageContent,
  layoutDigestOfTag,
  readLayoutBlobs,
  sha256Digest,
  writeOciLayout,
  type AccessLogEntry,
  type DockerEngine,
  type GeneratedImage,
  type Podman,
  type ReferenceRegistry,
  type Skopeo,
} from "./harness.ts";

/** The cron expression of the registry's Cron Trigger, for `WranglerDev.runScheduled`. */
export const cronSchedule = "*/5 * * * *";

/** The Warning header of a cached manifest served after its cache period while the upstream is unreachable. */
export const staleWarning = '110 - "Response is stale"';

export interface SeedOptions {
  /** Layers of the image; 3 when unset. */
  layers?: number;
  /** Bytes of random file content in each layer; 1 MiB when unset. */
  layerSize?: number;
}

/**
 * Builds a linux/amd64 OCI image with random layers and pushes it with
 * skopeo to `host/name:tag` from an OCI layout in `workDir`. The push keeps
 * the manifest digest (`--preserve-digests`) and moves the tag when it
 * exists. `skopeo` must have the credentials of `host` when it needs any.
 */
export async function seedImage(
  skopeo: Skopeo,
  workDir: string,
  host: string,
  name: string,
  tag: string,
  options: SeedOptions = {},
): Promise<GeneratedImage> {
  const image = generateImage({ os: "linux", architecture: "amd64" }, "oci", options.layers ?? 3, options.layerSize ?? 1024 * 1024);
  const layout = join(workDir, `seed-${randomUUID()}`);
  await writeOciLayout(layout, imageContent(image), { [tag]: image.manifest });
  await skopeo.copy(`oci:${layout}:${tag}`, `docker://${host}/${name}:${tag}`, { all: false, extraArgs: ["--preserve-digests"] });
  return image;
}

/** Returns the digests of the config and the layers of an image. */
export function blobDigests(image: GeneratedImage): string[] {
  return [image.config.digest, ...image.layers.map((layer) => layer.digest)];
}

/**
 * Checks that Docker has `reference` (`host/name:tag`) as `image`: the
 * image id is the config digest and the repository digests list the
 * manifest digest.
 */
export async function expectDockerImage(engine: DockerEngine, reference: string, image: GeneratedImage): Promise<void> {
  expect(await engine.imageId(reference)).toBe(image.config.digest);
  const inspected = await engine.docker(["image", "inspect", "--format", "{{json .RepoDigests}}", reference]);
  const repository = reference.slice(0, reference.lastIndexOf(":"));
  expect(JSON.parse(inspected.stdout)).toContain(`${repository}@${image.manifest.digest}`);
}

/** Checks that podman has `reference` as `image`: the same config digest as image id, and the same manifest digest. */
export async function expectPodmanImage(podman: Podman, reference: string, image: GeneratedImage): Promise<void> {
  const inspected = await podman.podman(["image", "inspect", "--format", "{{.Id}} {{.Digest}}", reference]);
  const [id, digest] = inspected.stdout.trim().split(" ");
  expect(`sha256:${id}`).toBe(image.config.digest);
  expect(digest).toBe(image.manifest.digest);
}

/**
 * Checks that the OCI layout that `skopeo copy` wrote contains `image` under
 * `tag`: the tag's manifest digest, and every blob of the image with bytes
 * that match its digest.
 */
export async function expectLayoutImage(layout: string, tag: string, image: GeneratedImage): Promise<void> {
  expect(await layoutDigestOfTag(layout, tag)).toBe(image.manifest.digest);
  const blobs = await readLayoutBlobs(layout);
  for (const digest of [image.manifest.digest, ...blobDigests(image)]) {
    const bytes = blobs.get(digest);
    expect(bytes, `blob ${digest} in ${layout}`).toBeDefined();
    expect(sha256Digest(bytes!)).toBe(digest);
  }
}

/** Returns the number of access log lines so far, to pass to `accessLogSince` later. */
export async function accessLogMark(upstream: ReferenceRegistry): Promise<number> {
  return (await upstream.accessLog()).length;
}

/** Returns the access log lines written after `mark`, optionally only those under `/v2/<name>/`. */
export async function accessLogSince(upstream: ReferenceRegistry, mark: number, name?: string): Promise<AccessLogEntry[]> {
  const entries = (await upstream.accessLog()).slice(mark);
  return name === undefined ? entries : entries.filter((entry) => entry.path.startsWith(`/v2/${name}/`));
}

/** Counts the GET requests of each blob digest of `/v2/<name>/blobs/` among `entries`. */
export function blobGetCounts(entries: readonly AccessLogEntry[], name: string): Record<string, number> {
  const prefix = `/v2/${name}/blobs/`;
  const counts: Record<string, number> = {};
  for (const entry of entries) {
    if (entry.method !== "GET" || !entry.path.startsWith(prefix)) continue;
    const digest = entry.path.slice(prefix.length);
    counts[digest] = (counts[digest] ?? 0) + 1;
  }
  return counts;
}

/** Returns the requests of `/v2/<name>/manifests/…` among `entries`. */
export function manifestRequests(entries: readonly AccessLogEntry[], name: string): AccessLogEntry[] {
  return entries.filter((entry) => entry.path.startsWith(`/v2/${name}/manifests/`));
}
