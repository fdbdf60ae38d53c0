import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerEngine, makeTempDir, removeTempDir, requireTools, WranglerDev, type RunResult } from "./harness.ts";
import { createAuthFixtures, deployerPath, publicRepository, reader, type AuthFixtures } from "./auth-fixtures.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

const privateImage = "docker-local/e2e/auth/docker";
const publicImage = `${publicRepository}/e2e/docker`;
const deployerImage = `${deployerPath}/docker`;

let registry: WranglerDev | undefined;
let engine: DockerEngine | undefined;
let fixtures: AuthFixtures;
let contextDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker");
  registry = await WranglerDev.start();
  fixtures = await createAuthFixtures(registry);
  engine = await DockerEngine.start();
  contextDir = await makeTempDir("auth-docker");
});

afterAll(async () => {
  await engine?.dispose();
  await registry?.dispose();
  if (contextDir) await removeTempDir(contextDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, dockerd: engine }));

/** Returns stdout and stderr of a docker command together, so a check finds an error message on either stream. */
function output(result: RunResult): string {
  return `${result.stdout}\n${result.stderr}`;
}

describe("docker login and permissions", () => {
  let imageId = "";
  const reference = (image: string, tag: string) => `${registry!.host}/${image}:${tag}`;

  /** Deletes the local image and pulls it back, which must give the built image. */
  async function expectPullOf(image: string, tag: string): Promise<void> {
    await engine!.docker(["rmi", reference(image, tag)]);
    await engine!.docker(["pull", reference(image, tag)]);
    expect(await engine!.imageId(reference(image, tag))).toBe(imageId);
  }

  it("pushes and pulls after login", async () => {
    await writeFile(join(contextDir!, "data.bin"), randomBytes(64 * 1024));
    await writeFile(join(contextDir!, "Dockerfile"), "FROM scratch\nCOPY data.bin /data.bin\n");
    await engine!.docker(["build", "--tag", reference(privateImage, "v1"), contextDir!]);
    imageId = await engine!.imageId(reference(privateImage, "v1"));

    const login = await engine!.login(registry!.host, registry!.adminCredentials);
    expect(login.stdout).toContain("Login Succeeded");

    const push = await engine!.docker(["push", reference(privateImage, "v1")]);
    expect(push.stdout).toMatch(/v1: digest: sha256:[0-9a-f]{64}/);
    await expectPullOf(privateImage, "v1");
  });

  it("rejects a wrong password", async () => {
    const login = await engine!.tryLogin(registry!.host, { username: "admin", password: "not-the-password" });

    expect(login.code).not.toBe(0);
    expect(login.stderr).toContain("unauthorized: invalid user name or password");
  });

  it("denies a push by a read-only user", async () => {
    await engine!.login(registry!.host, reader);
    await engine!.docker(["tag", reference(privateImage, "v1"), reference(privateImage, "reader")]);

    const push = await engine!.tryDocker(["push", reference(privateImage, "reader")]);

    expect(push.code).not.toBe(0);
    expect(output(push)).toContain("denied: requested access to the resource is denied");
    await expectPullOf(privateImage, "v1");
  });

  it("rejects a push after logout", async () => {
    await engine!.logout(registry!.host);

    const push = await engine!.tryDocker(["push", reference(privateImage, "v1")]);
    await engine!.docker(["rmi", reference(privateImage, "v1")]);
    const pull = await engine!.tryDocker(["pull", reference(privateImage, "v1")]);

    expect(push.code).not.toBe(0);
    expect(output(push)).toContain("unauthorized: authentication required");
    // Docker 20.10 retries an upload for 50 seconds after an error that it does not decode as unauthorized.
    expect(push.stdout).not.toContain("Retrying");
    expect(pull.code).not.toBe(0);
    expect(output(pull)).toContain("unauthorized: authentication required");
  });

  it("pulls a public image without login", async () => {
    await engine!.login(registry!.host, registry!.adminCredentials);
    await engine!.docker(["tag", reference(privateImage, "reader"), reference(publicImage, "v1")]);
    await engine!.docker(["push", reference(publicImage, "v1")]);
    await engine!.logout(registry!.host);

    await expectPullOf(publicImage, "v1");
    const push = await engine!.tryDocker(["push", reference(publicImage, "v1")]);
    expect(push.code).not.toBe(0);
    expect(output(push)).toContain("unauthorized: authentication required");
    expect(push.stdout).not.toContain("Retrying");
  });

  it("logs in with an access token", async () => {
    const login = await engine!.login(registry!.host, fixtures.deployerToken);
    expect(login.stdout).toContain("Login Succeeded");
    await engine!.docker(["tag", reference(publicImage, "v1"), reference(deployerImage, "v1")]);

    await engine!.docker(["push", reference(deployerImage, "v1")]);

    await expectPullOf(deployerImage, "v1");
    await engine!.docker(["tag", reference(publicImage, "v1"), reference(privateImage, "token")]);
    const outside = await engine!.tryDocker(["push", reference(privateImage, "token")]);
    expect(outside.code).not.toBe(0);
    expect(output(outside)).toContain("denied: requested access to the resource is denied");
  });
});
