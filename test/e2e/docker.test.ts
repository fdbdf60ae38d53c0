import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  authorizationHeaders,
  DockerEngine,
  fetchManifest,
  listTags,
  makeTempDir,
  removeTempDir,
  requireTools,
  sha256Digest,
  WranglerDev,
} from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

const imageName = "docker-local/e2e/docker-three-layers";
const MiB = 1024 * 1024;

let registry: WranglerDev | undefined;
let engine: DockerEngine | undefined;
let contextDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker");
  registry = await WranglerDev.start();
  engine = await DockerEngine.start();
  await engine.login(registry.host, registry.adminCredentials);
  contextDir = await makeTempDir("docker-build");
});

afterAll(async () => {
  await engine?.dispose();
  await registry?.dispose();
  if (contextDir) await removeTempDir(contextDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, dockerd: engine }));

describe("Docker Engine against wrangler dev", () => {
  let imageId = "";
  let manifestDigest = "";
  const reference = (tag: string) => `${registry!.host}/${imageName}:${tag}`;

  it("builds a three-layer image from scratch", async () => {
    // The 12 MiB file stays above 10 MiB after gzip because random bytes do
    // not compress, so its layer is larger than one 8 MiB upload part.
    await writeFile(join(contextDir!, "small.bin"), randomBytes(4 * 1024));
    await writeFile(join(contextDir!, "large.bin"), randomBytes(12 * MiB));
    await writeFile(join(contextDir!, "medium.bin"), randomBytes(256 * 1024));
    await writeFile(
      join(contextDir!, "Dockerfile"),
      "FROM scratch\nCOPY small.bin /small.bin\nCOPY large.bin /large.bin\nCOPY medium.bin /medium.bin\n",
    );

    await engine!.docker(["build", "--tag", reference("v1"), contextDir!]);

    imageId = await engine!.imageId(reference("v1"));
    const layers = await engine!.docker(["image", "inspect", "--format", "{{json .RootFS.Layers}}", reference("v1")]);
    expect(JSON.parse(layers.stdout)).toHaveLength(3);
  });

  it("pushes the image", async () => {
    const push = await engine!.docker(["push", reference("v1")]);

    const pushed = /v1: digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(push.stdout);
    expect(pushed, push.stdout).not.toBeNull();
    manifestDigest = pushed![1]!;

    const manifest = await fetchManifest(registry!.url, imageName, "v1", registry!.adminCredentials);
    expect(manifest.status).toBe(200);
    expect(manifest.digestHeader).toBe(manifestDigest);
    expect(sha256Digest(manifest.bytes)).toBe(manifestDigest);

    const body = JSON.parse(manifest.bytes.toString("utf8")) as { layers: { digest: string; size: number }[] };
    expect(body.layers).toHaveLength(3);
    const largest = body.layers.reduce((a, b) => (a.size >= b.size ? a : b));
    expect(largest.size).toBeGreaterThan(10 * MiB);

    // The registry must return exactly the bytes of the multipart-uploaded layer.
    const blob = await fetch(`${registry!.url}/v2/${imageName}/blobs/${largest.digest}`, {
      headers: authorizationHeaders(registry!.adminCredentials),
    });
    expect(blob.status).toBe(200);
    expect(sha256Digest(Buffer.from(await blob.arrayBuffer()))).toBe(largest.digest);
  });

  it("pulls the same image id after rmi", async () => {
    await engine!.docker(["rmi", reference("v1")]);
    const removed = await engine!.tryDocker(["image", "inspect", imageId]);
    expect(removed.code, "docker rmi left the image in the engine").not.toBe(0);

    await engine!.docker(["pull", reference("v1")]);

    expect(await engine!.imageId(reference("v1"))).toBe(imageId);
    const repoDigests = await engine!.docker(["image", "inspect", "--format", "{{json .RepoDigests}}", reference("v1")]);
    expect(JSON.parse(repoDigests.stdout)).toContain(`${registry!.host}/${imageName}@${manifestDigest}`);
  });

  it("pushes a second tag of the image", async () => {
    await engine!.docker(["tag", reference("v1"), reference("v2")]);
    const push = await engine!.docker(["push", reference("v2")]);

    expect(push.stdout).toContain(`v2: digest: ${manifestDigest}`);
    expect(await listTags(registry!.url, imageName, registry!.adminCredentials)).toEqual(["v1", "v2"]);
    const second = await fetchManifest(registry!.url, imageName, "v2", registry!.adminCredentials);
    expect(second.digestHeader).toBe(manifestDigest);
  });

  it("mounts the layers into another image name", async () => {
    const otherName = "docker-local/e2e/docker-mounted";
    const otherReference = `${registry!.host}/${otherName}:v1`;
    await engine!.docker(["tag", reference("v1"), otherReference]);

    const push = await engine!.docker(["push", otherReference]);

    // Docker 20.10 prints this for each layer that a cross-repository mount linked instead of uploading.
    expect(push.stdout.match(new RegExp(`Mounted from ${imageName}`, "g"))).toHaveLength(3);
    expect(push.stdout).toContain(`v1: digest: ${manifestDigest}`);
    await engine!.docker(["rmi", reference("v1"), reference("v2"), otherReference]);
    await engine!.docker(["pull", otherReference]);
    expect(await engine!.imageId(otherReference)).toBe(imageId);
  });
});
