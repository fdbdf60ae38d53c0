import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRemoteRepository,
  delay,
  DockerEngine,
  fetchManifest,
  makeTempDir,
  Podman,
  ReferenceRegistry,
  removeTempDir,
  requireTools,
  Skopeo,
  updateRemoteRepository,
  WranglerDev,
  type GeneratedImage,
} from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";
import {
  accessLogMark,
  accessLogSince,
  blobDigests,
  blobGetCounts,
  expectDockerImage,
  expectLayoutImage,
  expectPodmanImage,
  manifestRequests,
  seedImage,
  staleWarning,
} from "./remote-fixtures.ts";

/** The remote repository whose upstream is the anonymous docker-registry. */
const remoteKey = "upstream-cache";
/** The image's name upstream, and below the remote repository's key. */
const upstreamName = "origin/app";
const tag = "v1";

// Ten clients pull at once: two Docker Engines, four podman stores and four skopeo copies.
const dockerEngineCount = 2;
const podmanCount = 4;
const skopeoCount = 4;
const clientCount = dockerEngineCount + podmanCount + skopeoCount;

let registry: WranglerDev | undefined;
let upstream: ReferenceRegistry | undefined;
let engines: DockerEngine[] = [];
let podmans: Podman[] = [];
let skopeo: Skopeo;
let workDir: string | undefined;
let image: GeneratedImage;

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker", "podman", "skopeo", "referenceRegistry");
  [registry, upstream, engines, podmans, workDir] = await Promise.all([
    WranglerDev.start(),
    ReferenceRegistry.start(),
    Promise.all(Array.from({ length: dockerEngineCount }, () => DockerEngine.start())),
    Promise.all(Array.from({ length: podmanCount }, () => Podman.create())),
    makeTempDir("remote-pull"),
  ]);
  skopeo = new Skopeo({ [registry.host]: registry.adminCredentials });

  // Layers of 2 MiB take long enough to hash and store that the ten pulls overlap on each blob.
  image = await seedImage(skopeo, workDir, upstream.host, upstreamName, tag, { layers: 3, layerSize: 2 * 1024 * 1024 });
  await createRemoteRepository(registry, remoteKey, { url: upstream.url, tagCacheSeconds: 3600 });
  for (const engine of engines) await engine.login(registry.host, registry.adminCredentials);
  for (const podman of podmans) await podman.login(registry.host, registry.adminCredentials);
});

afterAll(async () => {
  await Promise.all([...engines.map((engine) => engine.dispose()), ...podmans.map((podman) => podman.dispose())]);
  await upstream?.dispose();
  await registry?.dispose();
  if (workDir) await removeTempDir(workDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, "docker-registry": upstream, dockerd: engines[0] }));

/** `host/upstream-cache/origin/app:v1` on wrangler dev. */
function remoteReference(): string {
  return `${registry!.host}/${remoteKey}/${upstreamName}:${tag}`;
}

/**
 * Starts every client's pull of the remote reference at once and waits for
 * all of them: `docker pull` in each engine, `podman pull` in each store and
 * `skopeo copy` to a new OCI layout per copy. Returns the layout folders.
 */
async function pullWithTenClients(round: string): Promise<string[]> {
  const layouts = Array.from({ length: skopeoCount }, (_, i) => join(workDir!, `${round}-skopeo-${i}`));
  await Promise.all([
    ...engines.map((engine) => engine.docker(["pull", remoteReference()])),
    ...podmans.map((podman) => podman.podman(["pull", "--tls-verify=false", remoteReference()])),
    ...layouts.map((layout) => skopeo.copy(`docker://${remoteReference()}`, `oci:${layout}:${tag}`, { all: false })),
  ]);
  return layouts;
}

/** Checks that every client of `pullWithTenClients` has the upstream image. */
async function expectEveryClientHasImage(layouts: string[]): Promise<void> {
  for (const engine of engines) await expectDockerImage(engine, remoteReference(), image);
  for (const podman of podmans) await expectPodmanImage(podman, remoteReference(), image);
  for (const layout of layouts) await expectLayoutImage(layout, tag, image);
}

/** Deletes the pulled image from every engine and podman store, so that the next pull downloads it again. */
async function removeLocalCopies(): Promise<void> {
  for (const engine of engines) await engine.docker(["rmi", remoteReference()]);
  for (const podman of podmans) await podman.podman(["rmi", remoteReference()]);
}

describe("remote repository with docker-registry upstream", () => {
  it("fetches each blob once for ten concurrent pulls", async () => {
    const mark = await accessLogMark(upstream!);

    const layouts = await pullWithTenClients("first");

    await expectEveryClientHasImage(layouts);
    const requests = await accessLogSince(upstream!, mark, upstreamName);
    expect(requests.filter((entry) => entry.status !== 200)).toEqual([]);
    const expectedCounts = Object.fromEntries(blobDigests(image).map((digest) => [digest, 1]));
    expect(blobGetCounts(requests, upstreamName)).toEqual(expectedCounts);
    // Each client asks for the manifest once or twice, so one upstream request per client is a loose upper bound.
    expect(manifestRequests(requests, upstreamName).length).toBeGreaterThanOrEqual(1);
    expect(manifestRequests(requests, upstreamName).length).toBeLessThanOrEqual(clientCount);
  });

  it("pulls from the cache with the upstream stopped", async () => {
    await removeLocalCopies();
    await upstream!.stop();

    const layouts = await pullWithTenClients("offline");

    await expectEveryClientHasImage(layouts);
  });

  it("serves an expired tag stale with a Warning", async () => {
    await updateRemoteRepository(registry!, remoteKey, { tagCacheSeconds: 1 });
    // Cache ages are whole seconds, so after two seconds the tag is past a cache period of one second.
    await delay(2_100);

    const manifest = await fetchManifest(registry!.url, `${remoteKey}/${upstreamName}`, tag, registry!.adminCredentials);

    expect(manifest.status).toBe(200);
    expect(manifest.warning).toBe(staleWarning);
    expect(manifest.digestHeader).toBe(image.manifest.digest);
    await engines[0]!.docker(["rmi", remoteReference()]);
    await engines[0]!.docker(["pull", remoteReference()]);
    await expectDockerImage(engines[0]!, remoteReference(), image);
  });

  it("keeps the upstream's storage across its restart", async () => {
    await upstream!.start();

    const manifest = await fetchManifest(upstream!.url, upstreamName, tag);

    expect(manifest.status).toBe(200);
    expect(manifest.digestHeader).toBe(image.manifest.digest);
  });
});
