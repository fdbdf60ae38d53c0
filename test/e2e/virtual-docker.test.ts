import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  authorizationHeaders,
  createRepository,
  DockerEngine,
  fetchManifest,
  makeTempDir,
  removeTempDir,
  requireTools,
  WranglerDev,
} from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

const first = "e2e-first";
const second = "e2e-second";
const virtual = "e2e-all";

let registry: WranglerDev | undefined;
let engine: DockerEngine | undefined;
let contextDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker");
  registry = await WranglerDev.start();
  engine = await DockerEngine.start();
  contextDir = await makeTempDir("virtual-docker");

  await createRepository(registry, first);
  await createRepository(registry, second);
  const response = await fetch(`${registry.url}/api/v1/repositories`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authorizationHeaders(registry.adminCredentials) },
    body: JSON.stringify({ key: virtual, type: "virtual", members: [first, second], defaultDeploymentRepository: first }),
  });
  if (response.status !== 201) throw new Error(`creating ${virtual} returned ${response.status}: ${await response.text()}`);
  await engine.login(registry.host, registry.adminCredentials);
});

afterAll(async () => {
  await engine?.dispose();
  await registry?.dispose();
  if (contextDir) await removeTempDir(contextDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, dockerd: engine }));

/** Returns the image reference `<registry>/<repository>/team/app:<tag>`. */
function reference(repository: string, tag: string): string {
  return `${registry!.host}/${repository}/team/app:${tag}`;
}

/** Builds an image with one random layer under `tag` and returns its image id. */
async function buildImage(tag: string): Promise<string> {
  await writeFile(join(contextDir!, "data.bin"), randomBytes(32 * 1024));
  await writeFile(join(contextDir!, "Dockerfile"), "FROM scratch\nCOPY data.bin /data.bin\n");
  await engine!.docker(["build", "--tag", tag, contextDir!]);
  return engine!.imageId(tag);
}

/** Removes the local tag and pulls it again, returning the pulled image id. */
async function pullAgain(tag: string): Promise<string> {
  await engine!.docker(["rmi", tag]);
  await engine!.docker(["pull", tag]);
  return engine!.imageId(tag);
}

describe("docker through a virtual repository", () => {
  it("pushes into the deployment repository", async () => {
    const imageId = await buildImage(reference(virtual, "pushed"));

    const push = await engine!.docker(["push", reference(virtual, "pushed")]);

    expect(push.stdout).toMatch(/pushed: digest: sha256:[0-9a-f]{64}/);
    const stored = await fetchManifest(registry!.url, `${first}/team/app`, "pushed", registry!.adminCredentials);
    expect(stored.status).toBe(200);
    const notInSecond = await fetchManifest(registry!.url, `${second}/team/app`, "pushed", registry!.adminCredentials);
    expect(notInSecond.status).toBe(404);
    expect(await pullAgain(reference(virtual, "pushed"))).toBe(imageId);
  });

  it("pulls a tag that only the second member has", async () => {
    const imageId = await buildImage(reference(second, "only-second"));
    await engine!.docker(["push", reference(second, "only-second")]);
    await engine!.docker(["tag", reference(second, "only-second"), reference(virtual, "only-second")]);

    expect(await pullAgain(reference(virtual, "only-second"))).toBe(imageId);
  });

  it("pulls the first member's copy of a shared tag", async () => {
    const firstId = await buildImage(reference(first, "shared"));
    await engine!.docker(["push", reference(first, "shared")]);
    const secondId = await buildImage(reference(second, "shared"));
    await engine!.docker(["push", reference(second, "shared")]);
    await engine!.docker(["tag", reference(first, "shared"), reference(virtual, "shared")]);

    const pulled = await pullAgain(reference(virtual, "shared"));

    expect(secondId).not.toBe(firstId);
    expect(pulled).toBe(firstId);
  });

  it("pushes a layer that another member stores", async () => {
    const imageId = await buildImage(reference(second, "reused"));
    await engine!.docker(["push", reference(second, "reused")]);
    await engine!.docker(["tag", reference(second, "reused"), reference(virtual, "reused")]);

    const push = await engine!.docker(["push", reference(virtual, "reused")]);

    expect(push.stdout).toContain("Layer already exists");
    const stored = await fetchManifest(registry!.url, `${first}/team/app`, "reused", registry!.adminCredentials);
    expect(stored.status).toBe(200);
    await engine!.docker(["pull", reference(first, "reused")]);
    expect(await engine!.imageId(reference(first, "reused"))).toBe(imageId);
  });
});
