import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeTempDir, Podman, removeTempDir, requireTools, WranglerDev } from "./harness.ts";
import { createAuthFixtures, deployerPath, publicRepository, reader, type AuthFixtures } from "./auth-fixtures.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

const privateImage = "docker-local/e2e/auth/podman";
const publicImage = `${publicRepository}/e2e/podman`;
const deployerImage = `${deployerPath}/podman`;

let registry: WranglerDev | undefined;
let podman: Podman | undefined;
let fixtures: AuthFixtures;
let contextDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "podman");
  registry = await WranglerDev.start();
  fixtures = await createAuthFixtures(registry);
  podman = await Podman.create();
  contextDir = await makeTempDir("auth-podman");
});

afterAll(async () => {
  await podman?.dispose();
  await registry?.dispose();
  if (contextDir) await removeTempDir(contextDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry }));

describe("podman login and permissions", () => {
  let imageId = "";
  const reference = (image: string, tag: string) => `${registry!.host}/${image}:${tag}`;

  /** Pushes the built image to `image:tag` and returns the result whatever the exit status. */
  function tryPush(image: string, tag: string) {
    return podman!.tryPodman(["push", "--tls-verify=false", reference("built", "latest"), reference(image, tag)]);
  }

  /**
   * Deletes every local image and pulls `image:tag`, which must give the
   * built image. Tags it as the built image again for the next push.
   */
  async function expectPullOf(image: string, tag: string): Promise<void> {
    await podman!.podman(["rmi", "--all", "--force"]);
    await podman!.podman(["pull", "--tls-verify=false", reference(image, tag)]);
    const inspected = await podman!.podman(["image", "inspect", "--format", "{{.Id}}", reference(image, tag)]);
    expect(inspected.stdout.trim()).toBe(imageId);
    await podman!.podman(["tag", reference(image, tag), reference("built", "latest")]);
  }

  it("pushes and pulls after login", async () => {
    await writeFile(join(contextDir!, "data.bin"), randomBytes(64 * 1024));
    await writeFile(join(contextDir!, "Containerfile"), "FROM scratch\nCOPY data.bin /data.bin\n");
    await podman!.podman(["build", "--file", join(contextDir!, "Containerfile"), "--tag", reference("built", "latest"), contextDir!]);
    imageId = (await podman!.podman(["image", "inspect", "--format", "{{.Id}}", reference("built", "latest")])).stdout.trim();

    const login = await podman!.login(registry!.host, registry!.adminCredentials);
    expect(login.stdout).toContain("Login Succeeded!");

    const push = await tryPush(privateImage, "v1");
    expect(push.code, push.stderr).toBe(0);
    await expectPullOf(privateImage, "v1");
  });

  it("denies a push by a read-only user", async () => {
    await podman!.login(registry!.host, reader);

    const push = await tryPush(privateImage, "reader");

    expect(push.code).not.toBe(0);
    expect(push.stderr).toContain("denied: requested access to the resource is denied");
    await expectPullOf(privateImage, "v1");
  });

  it("rejects a push after logout", async () => {
    await podman!.logout(registry!.host);

    const push = await tryPush(privateImage, "v2");
    const pull = await podman!.tryPodman(["pull", "--tls-verify=false", reference(privateImage, "v1")]);

    expect(push.code).not.toBe(0);
    expect(push.stderr).toContain("unauthorized: authentication required");
    expect(pull.code).not.toBe(0);
    expect(pull.stderr).toContain("unauthorized: authentication required");
  });

  it("pulls a public image without login", async () => {
    await podman!.login(registry!.host, registry!.adminCredentials);
    const push = await tryPush(publicImage, "v1");
    expect(push.code, push.stderr).toBe(0);
    await podman!.logout(registry!.host);

    await expectPullOf(publicImage, "v1");
  });

  it("logs in with an access token", async () => {
    const login = await podman!.login(registry!.host, fixtures.deployerToken);
    expect(login.stdout).toContain("Login Succeeded!");

    const push = await tryPush(deployerImage, "v1");

    expect(push.code, push.stderr).toBe(0);
    await expectPullOf(deployerImage, "v1");
  });
});
