import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  allContent,
  fetchManifest,
  generateIndex,
  generateImage,
  imageContent,
  layoutDigestOfTag,
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

let registry: WranglerDev | undefined;
let skopeo: Skopeo;
let workDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "skopeo");
  registry = await WranglerDev.start();
  skopeo = new Skopeo({ [registry.host]: registry.adminCredentials });
  workDir = await makeTempDir("skopeo");
});

afterAll(async () => {
  await registry?.dispose();
  if (workDir) await removeTempDir(workDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry }));

describe("skopeo copy --all of a multi-architecture OCI index", () => {
  const imageName = "docker-local/e2e/skopeo/multi-arch";
  let generated: GeneratedIndex;
  const remote = (suffix: string) => `docker://${registry!.host}/${imageName}${suffix}`;

  it("copies the layout into the registry unchanged", async () => {
    generated = generateIndex({ format: "oci" });
    const source = join(workDir!, "source-layout");
    await writeOciLayout(source, allContent(generated), { v1: generated.index });

    await skopeo.copy(`oci:${source}:v1`, remote(":v1"));

    expect(await skopeo.manifestDigest(remote(":v1"))).toBe(generated.index.digest);
    for (const image of generated.images) {
      expect(await skopeo.manifestDigest(remote(`@${image.manifest.digest}`))).toBe(image.manifest.digest);
    }
    const index = await fetchManifest(registry!.url, imageName, "v1", registry!.adminCredentials);
    expect(index.contentType).toBe(generated.index.mediaType);
    expect(index.digestHeader).toBe(generated.index.digest);
  });

  it("copies the index back out to a new layout unchanged", async () => {
    const copy = join(workDir!, "copied-layout");

    await skopeo.copy(remote(":v1"), `oci:${copy}:v1`);

    expect(await layoutDigestOfTag(copy, "v1")).toBe(generated.index.digest);
    expect(await skopeo.manifestDigest(`oci:${copy}:v1`)).toBe(generated.index.digest);
    const copiedBlobs = await readLayoutBlobs(copy);
    for (const item of allContent(generated)) {
      const copied = copiedBlobs.get(item.digest);
      expect(copied, `${item.mediaType} ${item.digest} is missing from the copied layout`).toBeDefined();
      expect(sha256Digest(copied!)).toBe(item.digest);
    }
    expect(copiedBlobs.size).toBe(allContent(generated).length);
  });

  it("copies each platform's image by itself", async () => {
    for (const image of generated.images) {
      const platform = `${image.platform.os}/${image.platform.architecture}`;
      const copy = join(workDir!, `single-${image.platform.architecture}`);

      await skopeo.copy(remote(":v1"), `oci:${copy}:single`, {
        all: false,
        extraArgs: ["--override-os", image.platform.os, "--override-arch", image.platform.architecture],
      });

      expect(await layoutDigestOfTag(copy, "single"), platform).toBe(image.manifest.digest);
    }
  });
});

describe("skopeo delete", () => {
  const imageName = "docker-local/e2e/skopeo/delete";
  const remote = (suffix: string) => `docker://${registry!.host}/${imageName}${suffix}`;

  it("deletes a manifest by digest", async () => {
    const keptImage = generateImage({ os: "linux", architecture: "amd64" });
    const deletedImage = generateImage({ os: "linux", architecture: "amd64" });
    const source = join(workDir!, "delete-layout");
    const tags = { kept: keptImage.manifest, deleted: deletedImage.manifest };
    await writeOciLayout(source, [...imageContent(keptImage), ...imageContent(deletedImage)], tags);
    await skopeo.copy(`oci:${source}:kept`, remote(":kept"));
    await skopeo.copy(`oci:${source}:deleted`, remote(":deleted"));
    expect(await skopeo.manifestDigest(remote(`@${deletedImage.manifest.digest}`))).toBe(deletedImage.manifest.digest);

    await skopeo.delete(remote(`@${deletedImage.manifest.digest}`));

    const byDigest = await skopeo.tryRawManifest(remote(`@${deletedImage.manifest.digest}`));
    expect(byDigest.code).not.toBe(0);
    expect(byDigest.stderr).toMatch(/manifest unknown/i);
    const byTag = await skopeo.tryRawManifest(remote(":deleted"));
    expect(byTag.code).not.toBe(0);
    expect(byTag.stderr).toMatch(/manifest unknown/i);
    expect(await listTags(registry!.url, imageName, registry!.adminCredentials)).toEqual(["kept"]);
    expect(await skopeo.manifestDigest(remote(":kept"))).toBe(keptImage.manifest.digest);
  });
});
