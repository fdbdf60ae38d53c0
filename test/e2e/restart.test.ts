import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  allContent,
  authorizationHeaders,
  DockerEngine,
  fetchManifest,
  generateIndex,
  layoutDigestOfTag,
  listCatalog,
  listTags,
  makeTempDir,
  readLayoutBlobs,
  removeTempDir,
  requireTools,
  sha256Digest,
  Skopeo,
  WranglerDev,
  writeOciLayout,
  type GeneratedIndex,
} from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

const dockerImage = "docker-local/e2e/restart/docker";
const indexImage = "docker-local/e2e/restart/index";
const MiB = 1024 * 1024;

let registry: WranglerDev | undefined;
let engine: DockerEngine | undefined;
let skopeo: Skopeo;
let workDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker", "skopeo");
  registry = await WranglerDev.start();
  skopeo = new Skopeo({ [registry.host]: registry.adminCredentials });
  engine = await DockerEngine.start();
  await engine.login(registry.host, registry.adminCredentials);
  workDir = await makeTempDir("restart");
});

afterAll(async () => {
  await engine?.dispose();
  await registry?.dispose();
  if (workDir) await removeTempDir(workDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, dockerd: engine }));

describe("wrangler dev restart on the same persist folder", () => {
  const dockerReference = (tag: string) => `${registry!.host}/${dockerImage}:${tag}`;
  let imageId = "";
  let dockerDigest = "";
  let generated: GeneratedIndex;
  let catalogBefore: string[] = [];

  it("stores images before the restart", async () => {
    const context = join(workDir!, "build");
    await mkdir(context);
    await writeFile(join(context, "one.bin"), randomBytes(32 * 1024));
    await writeFile(join(context, "two.bin"), randomBytes(11 * MiB));
    await writeFile(join(context, "three.bin"), randomBytes(128 * 1024));
    await writeFile(join(context, "Dockerfile"), "FROM scratch\nCOPY one.bin /one.bin\nCOPY two.bin /two.bin\nCOPY three.bin /three.bin\n");
    await engine!.docker(["build", "--tag", dockerReference("v1"), context]);
    await engine!.docker(["tag", dockerReference("v1"), dockerReference("stable")]);
    imageId = await engine!.imageId(dockerReference("v1"));
    await engine!.docker(["push", dockerReference("v1")]);
    await engine!.docker(["push", dockerReference("stable")]);
    dockerDigest = (await fetchManifest(registry!.url, dockerImage, "v1", registry!.adminCredentials)).digestHeader!;

    generated = generateIndex({ format: "oci" });
    const layout = join(workDir!, "layout");
    await writeOciLayout(layout, allContent(generated), { v1: generated.index });
    await skopeo.copy(`oci:${layout}:v1`, `docker://${registry!.host}/${indexImage}:v1`);

    catalogBefore = await listCatalog(registry!.url, registry!.adminCredentials);
    expect(catalogBefore).toEqual(expect.arrayContaining([dockerImage, indexImage]));
    expect(dockerDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
  });

  it("restarts on the same port", async () => {
    const port = registry!.port;

    await registry!.restart();

    expect(registry!.port).toBe(port);
    const base = await fetch(`${registry!.url}/v2/`, { headers: authorizationHeaders(registry!.adminCredentials) });
    expect(base.status).toBe(200);
  });

  it("keeps tags and the catalog", async () => {
    expect(await listCatalog(registry!.url, registry!.adminCredentials)).toEqual(catalogBefore);
    expect(await listTags(registry!.url, dockerImage, registry!.adminCredentials)).toEqual(["stable", "v1"]);
    expect(await listTags(registry!.url, indexImage, registry!.adminCredentials)).toEqual(["v1"]);
  });

  it("keeps manifests", async () => {
    for (const tag of ["v1", "stable"]) {
      const manifest = await fetchManifest(registry!.url, dockerImage, tag, registry!.adminCredentials);
      expect(manifest.status, `${dockerImage}:${tag}`).toBe(200);
      expect(sha256Digest(manifest.bytes), `${dockerImage}:${tag}`).toBe(dockerDigest);
    }

    expect(await skopeo.manifestDigest(`docker://${registry!.host}/${indexImage}:v1`)).toBe(generated.index.digest);
    for (const image of generated.images) {
      expect(await skopeo.manifestDigest(`docker://${registry!.host}/${indexImage}@${image.manifest.digest}`)).toBe(image.manifest.digest);
    }
  });

  it("keeps blobs that docker pulls back", async () => {
    await engine!.docker(["rmi", dockerReference("v1"), dockerReference("stable")]);
    const removed = await engine!.tryDocker(["image", "inspect", imageId]);
    expect(removed.code, "docker rmi left the image in the engine").not.toBe(0);

    await engine!.docker(["pull", dockerReference("stable")]);

    expect(await engine!.imageId(dockerReference("stable"))).toBe(imageId);
  });

  it("keeps blobs that skopeo copies back out", async () => {
    const copy = join(workDir!, "copied-layout");

    await skopeo.copy(`docker://${registry!.host}/${indexImage}:v1`, `oci:${copy}:v1`);

    expect(await layoutDigestOfTag(copy, "v1")).toBe(generated.index.digest);
    const copiedBlobs = await readLayoutBlobs(copy);
    for (const item of allContent(generated)) {
      expect(copiedBlobs.get(item.digest)?.equals(item.bytes), `${item.mediaType} ${item.digest}`).toBe(true);
    }
  });

  it("accepts new pushes after the restart", async () => {
    await engine!.docker(["tag", dockerReference("stable"), dockerReference("after-restart")]);
    await engine!.docker(["push", dockerReference("after-restart")]);

    expect(await listTags(registry!.url, dockerImage, registry!.adminCredentials)).toEqual(["after-restart", "stable", "v1"]);
  });
});
