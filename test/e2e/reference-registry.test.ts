import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  allContent,
  fetchManifest,
  generateIndex,
  makeTempDir,
  pushIndex,
  ReferenceRegistry,
  removeTempDir,
  requireTools,
  Skopeo,
  WranglerDev,
  writeOciLayout,
  type Credentials,
  type GeneratedIndex,
} from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

let registry: WranglerDev | undefined;
let reference: ReferenceRegistry | undefined;
let skopeo: Skopeo;
let workDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "skopeo", "referenceRegistry");
  registry = await WranglerDev.start();
  reference = await ReferenceRegistry.start();
  // The reference registry has no authentication, so skopeo gets no credentials for it.
  skopeo = new Skopeo({ [registry.host]: registry.adminCredentials });
  workDir = await makeTempDir("reference");
});

afterAll(async () => {
  await reference?.dispose();
  await registry?.dispose();
  if (workDir) await removeTempDir(workDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, "docker-registry": reference }));

/**
 * Checks through skopeo that `name:tag` on the registry at `host` is the
 * generated index, with its original digest. Each image manifest of the
 * index must be there by digest, and the registry must return the index
 * with its original media type. `credentials` are needed for wrangler dev.
 */
async function expectIndexAt(
  registryUrl: string,
  host: string,
  name: string,
  tag: string,
  generated: GeneratedIndex,
  credentials?: Credentials,
): Promise<void> {
  expect(await skopeo.manifestDigest(`docker://${host}/${name}:${tag}`)).toBe(generated.index.digest);
  for (const image of generated.images) {
    expect(await skopeo.manifestDigest(`docker://${host}/${name}@${image.manifest.digest}`)).toBe(image.manifest.digest);
  }
  const fetched = await fetchManifest(registryUrl, name, tag, credentials);
  expect(fetched.contentType).toBe(generated.index.mediaType);
}

describe("skopeo between wrangler dev and docker-registry", () => {
  it("copies an OCI index both ways unchanged", async () => {
    const generated = generateIndex({ format: "oci" });
    const layout = join(workDir!, "oci-layout");
    await writeOciLayout(layout, allContent(generated), { v1: generated.index });
    await skopeo.copy(`oci:${layout}:v1`, `docker://${registry!.host}/docker-local/e2e/oci-index:v1`);

    await skopeo.copy(`docker://${registry!.host}/docker-local/e2e/oci-index:v1`, `docker://${reference!.host}/mirror/oci-index:v1`);
    await expectIndexAt(reference!.url, reference!.host, "mirror/oci-index", "v1", generated);

    await skopeo.copy(`docker://${reference!.host}/mirror/oci-index:v1`, `docker://${registry!.host}/docker-local/e2e/oci-index-back:v1`);
    await expectIndexAt(registry!.url, registry!.host, "docker-local/e2e/oci-index-back", "v1", generated, registry!.adminCredentials);
  });

  it("copies a Docker manifest list both ways unchanged", async () => {
    const generated = generateIndex({ format: "docker" });
    await pushIndex(reference!.url, "origin/manifest-list", "v1", generated);
    await expectIndexAt(reference!.url, reference!.host, "origin/manifest-list", "v1", generated);

    await skopeo.copy(
      `docker://${reference!.host}/origin/manifest-list:v1`,
      `docker://${registry!.host}/docker-local/e2e/manifest-list:v1`,
    );
    await expectIndexAt(registry!.url, registry!.host, "docker-local/e2e/manifest-list", "v1", generated, registry!.adminCredentials);

    await skopeo.copy(
      `docker://${registry!.host}/docker-local/e2e/manifest-list:v1`,
      `docker://${reference!.host}/mirror/manifest-list:v1`,
    );
    await expectIndexAt(reference!.url, reference!.host, "mirror/manifest-list", "v1", generated);
  });

  it("copies a single-platform image both ways unchanged", async () => {
    const generated = generateIndex({ format: "docker" });
    const image = generated.images[0]!;
    await pushIndex(reference!.url, "origin/single", "index", generated);
    await skopeo.copy(
      `docker://${reference!.host}/origin/single@${image.manifest.digest}`,
      `docker://${reference!.host}/origin/single:v1`,
      { all: false },
    );

    await skopeo.copy(`docker://${reference!.host}/origin/single:v1`, `docker://${registry!.host}/docker-local/e2e/single:v1`, {
      all: false,
    });
    expect(await skopeo.manifestDigest(`docker://${registry!.host}/docker-local/e2e/single:v1`)).toBe(image.manifest.digest);

    await skopeo.copy(`docker://${registry!.host}/docker-local/e2e/single:v1`, `docker://${reference!.host}/mirror/single:v1`, {
      all: false,
    });
    expect(await skopeo.manifestDigest(`docker://${reference!.host}/mirror/single:v1`)).toBe(image.manifest.digest);
  });
});
