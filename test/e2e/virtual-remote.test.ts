import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRemoteRepository,
  createVirtualRepository,
  DockerEngine,
  fetchManifest,
  makeTempDir,
  ReferenceRegistry,
  removeTempDir,
  requireTools,
  Skopeo,
  WranglerDev,
  type GeneratedImage,
} from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";
import { expectDockerImage, seedImage } from "./remote-fixtures.ts";

const virtualKey = "all";
const localKey = "docker-local";
const remoteKey = "upstream-cache";
/** The image path below each repository key, and the image's name upstream. */
const imagePath = "team/app";

let registry: WranglerDev | undefined;
let upstream: ReferenceRegistry | undefined;
let engine: DockerEngine | undefined;
let workDir: string | undefined;
/** Images by tag: `upstream-only` and `shared` upstream, `local-only` and `shared` in docker-local. */
const upstreamImages: Record<string, GeneratedImage> = {};
const localImages: Record<string, GeneratedImage> = {};

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker", "skopeo", "referenceRegistry");
  [registry, upstream, engine, workDir] = await Promise.all([
    WranglerDev.start(),
    ReferenceRegistry.start(),
    DockerEngine.start(),
    makeTempDir("virtual-remote"),
  ]);
  const skopeo = new Skopeo({ [registry.host]: registry.adminCredentials });

  for (const tag of ["upstream-only", "shared"]) {
    upstreamImages[tag] = await seedImage(skopeo, workDir, upstream.host, imagePath, tag, { layers: 2, layerSize: 256 * 1024 });
  }
  for (const tag of ["local-only", "shared"]) {
    localImages[tag] = await seedImage(skopeo, workDir, registry.host, `${localKey}/${imagePath}`, tag, {
      layers: 2,
      layerSize: 256 * 1024,
    });
  }
  await createRemoteRepository(registry, remoteKey, { url: upstream.url, tagCacheSeconds: 3600 });
  await engine.login(registry.host, registry.adminCredentials);
});

afterAll(async () => {
  await engine?.dispose();
  await upstream?.dispose();
  await registry?.dispose();
  if (workDir) await removeTempDir(workDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, "docker-registry": upstream, dockerd: engine }));

/** `host/all/team/app:<tag>` on wrangler dev. */
function virtualReference(tag: string): string {
  return `${registry!.host}/${virtualKey}/${imagePath}:${tag}`;
}

describe("virtual repository of a local and a remote member", () => {
  it("creates the virtual repository", async () => {
    const created = await createVirtualRepository(registry!, {
      key: virtualKey,
      members: [localKey, remoteKey],
      defaultDeploymentRepository: localKey,
    });

    expect(created.type).toBe("virtual");
    expect(created.members).toEqual([localKey, remoteKey]);
    expect(created.defaultDeploymentRepository).toBe(localKey);
  });

  it("pushes through the virtual key into the local member", async () => {
    await writeFile(join(workDir!, "data.bin"), randomBytes(128 * 1024));
    await writeFile(join(workDir!, "Dockerfile"), "FROM scratch\nCOPY data.bin /data.bin\n");
    await engine!.docker(["build", "--tag", virtualReference("pushed"), workDir!]);
    const builtId = await engine!.imageId(virtualReference("pushed"));

    const push = await engine!.docker(["push", virtualReference("pushed")]);

    const pushed = /pushed: digest: (sha256:[0-9a-f]{64}) size: \d+/.exec(push.stdout);
    expect(pushed, push.stdout).not.toBeNull();
    const local = await fetchManifest(registry!.url, `${localKey}/${imagePath}`, "pushed", registry!.adminCredentials);
    expect(local.status).toBe(200);
    expect(local.digestHeader).toBe(pushed![1]);
    const remote = await fetchManifest(registry!.url, `${remoteKey}/${imagePath}`, "pushed", registry!.adminCredentials);
    expect(remote.status, "the remote member has the pushed tag").toBe(404);
    await engine!.docker(["rmi", virtualReference("pushed")]);
    await engine!.docker(["pull", virtualReference("pushed")]);
    expect(await engine!.imageId(virtualReference("pushed"))).toBe(builtId);
  });

  it("pulls a tag that only the upstream has", async () => {
    await engine!.docker(["pull", virtualReference("upstream-only")]);

    await expectDockerImage(engine!, virtualReference("upstream-only"), upstreamImages["upstream-only"]!);
  });

  it("pulls a tag that only the local member has", async () => {
    await engine!.docker(["pull", virtualReference("local-only")]);

    await expectDockerImage(engine!, virtualReference("local-only"), localImages["local-only"]!);
  });

  it("prefers the local member for a tag in both", async () => {
    await engine!.docker(["pull", virtualReference("shared")]);

    await expectDockerImage(engine!, virtualReference("shared"), localImages["shared"]!);
  });
});
