import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { authorizationHeaders, DockerEngine, makeTempDir, ReferenceRegistry, removeTempDir, requireTools, WranglerDev } from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

const MiB = 1024 * 1024;
const remoteKey = "upstream-e2e";
const upstreamName = "origin/app";

let registry: WranglerDev | undefined;
let upstream: ReferenceRegistry | undefined;
let engine: DockerEngine | undefined;
let contextDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker", "referenceRegistry");
  registry = await WranglerDev.start();
  upstream = await ReferenceRegistry.start();
  engine = await DockerEngine.start();
  await engine.login(registry.host, registry.adminCredentials);
  contextDir = await makeTempDir("remote-docker");
});

afterAll(async () => {
  await engine?.dispose();
  await upstream?.dispose();
  await registry?.dispose();
  if (contextDir) await removeTempDir(contextDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, "docker-registry": upstream, dockerd: engine }));

/** Counts the upstream's access log lines for GET requests whose path starts with `pathPrefix`. */
async function upstreamGets(pathPrefix: string): Promise<number> {
  const log = await readFile(join(upstream!.dir, "registry.log"), "utf8");
  return log.split("\n").filter((line) => line.includes(`"GET ${pathPrefix}`)).length;
}

describe("Docker Engine through a remote repository", () => {
  let imageId = "";
  const upstreamReference = () => `${upstream!.host}/${upstreamName}:v1`;
  const cachedReference = () => `${registry!.host}/${remoteKey}/${upstreamName}:v1`;

  it("pushes an image to the upstream", async () => {
    // Random bytes do not compress, so the larger layer stays above one 8 MiB R2 part.
    await writeFile(join(contextDir!, "small.bin"), randomBytes(64 * 1024));
    await writeFile(join(contextDir!, "large.bin"), randomBytes(12 * MiB));
    await writeFile(join(contextDir!, "Dockerfile"), "FROM scratch\nCOPY small.bin /small.bin\nCOPY large.bin /large.bin\n");
    await engine!.docker(["build", "--tag", upstreamReference(), contextDir!]);
    imageId = await engine!.imageId(upstreamReference());

    await engine!.docker(["push", upstreamReference()]);

    expect(await upstreamGets(`/v2/${upstreamName}/blobs/`)).toBe(0);
  });

  it("creates the remote repository", async () => {
    const response = await fetch(`${registry!.url}/api/v1/repositories`, {
      method: "POST",
      headers: { ...authorizationHeaders(registry!.adminCredentials), "Content-Type": "application/json" },
      body: JSON.stringify({ key: remoteKey, type: "remote", url: upstream!.url }),
    });

    expect(response.status, await response.text()).toBe(201);
  });

  it("pulls a miss from the upstream", async () => {
    await engine!.docker(["rmi", upstreamReference()]);

    await engine!.docker(["pull", cachedReference()]);

    expect(await engine!.imageId(cachedReference())).toBe(imageId);
    // Two layers and the config, each fetched once.
    expect(await upstreamGets(`/v2/${upstreamName}/blobs/`)).toBe(3);
  });

  it("pulls again without upstream requests", async () => {
    const manifestGets = await upstreamGets(`/v2/${upstreamName}/manifests/`);
    await engine!.docker(["rmi", cachedReference()]);

    await engine!.docker(["pull", cachedReference()]);

    expect(await engine!.imageId(cachedReference())).toBe(imageId);
    expect(await upstreamGets(`/v2/${upstreamName}/blobs/`)).toBe(3);
    expect(await upstreamGets(`/v2/${upstreamName}/manifests/`)).toBe(manifestGets);
  });
});
