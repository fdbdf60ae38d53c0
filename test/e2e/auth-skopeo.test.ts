import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  generateImage,
  imageContent,
  layoutDigestOfTag,
  makeTempDir,
  removeTempDir,
  requireTools,
  Skopeo,
  WranglerDev,
  writeOciLayout,
  type GeneratedImage,
} from "./harness.ts";
import { createAuthFixtures, deployerPath, publicRepository, reader, type AuthFixtures } from "./auth-fixtures.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

const privateImage = "docker-local/e2e/auth/skopeo";
const publicImage = `${publicRepository}/e2e/skopeo`;
const deployerImage = `${deployerPath}/skopeo`;

let registry: WranglerDev | undefined;
let fixtures: AuthFixtures;
let workDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "skopeo");
  registry = await WranglerDev.start();
  fixtures = await createAuthFixtures(registry);
  workDir = await makeTempDir("auth-skopeo");
});

afterAll(async () => {
  await registry?.dispose();
  if (workDir) await removeTempDir(workDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry }));

describe("skopeo credentials and permissions", () => {
  const image: GeneratedImage = generateImage({ os: "linux", architecture: "amd64" });
  let layout = "";
  const remote = (name: string, tag: string) => `docker://${registry!.host}/${name}:${tag}`;
  /** Returns skopeo with `credentials` for wrangler dev, or one that sends `--no-creds` when they are undefined. */
  const skopeoAs = (credentials?: { username: string; password: string }) =>
    new Skopeo(credentials ? { [registry!.host]: credentials } : {});

  beforeAll(async () => {
    layout = join(workDir!, "layout");
    await writeOciLayout(layout, imageContent(image), { v1: image.manifest });
  });

  it("copies with --dest-creds and --src-creds", async () => {
    const admin = skopeoAs(registry!.adminCredentials);

    await admin.copy(`oci:${layout}:v1`, remote(privateImage, "v1"));

    expect(await admin.manifestDigest(remote(privateImage, "v1"))).toBe(image.manifest.digest);
    const copy = join(workDir!, "copied");
    await admin.copy(remote(privateImage, "v1"), `oci:${copy}:v1`);
    expect(await layoutDigestOfTag(copy, "v1")).toBe(image.manifest.digest);
  });

  it("rejects a wrong password", async () => {
    const wrong = skopeoAs({ username: "admin", password: "not-the-password" });

    const inspect = await wrong.tryRawManifest(remote(privateImage, "v1"));

    expect(inspect.code).not.toBe(0);
    expect(inspect.stderr).toContain("unauthorized: invalid user name or password");
  });

  it("rejects anonymous access to a private image", async () => {
    const anonymous = skopeoAs();

    const inspect = await anonymous.tryRawManifest(remote(privateImage, "v1"));
    const copy = await anonymous.tryCopy(`oci:${layout}:v1`, remote(privateImage, "anonymous"));

    expect(inspect.code).not.toBe(0);
    expect(inspect.stderr).toContain("unauthorized: authentication required");
    expect(copy.code).not.toBe(0);
    expect(copy.stderr).toContain("unauthorized: authentication required");
  });

  it("denies a copy by a read-only user", async () => {
    const readOnly = skopeoAs(reader);

    const copy = await readOnly.tryCopy(`oci:${layout}:v1`, remote(privateImage, "reader"));

    expect(copy.code).not.toBe(0);
    expect(copy.stderr).toContain("denied: requested access to the resource is denied");
    expect(await readOnly.manifestDigest(remote(privateImage, "v1"))).toBe(image.manifest.digest);
  });

  it("reads a public image without credentials", async () => {
    await skopeoAs(registry!.adminCredentials).copy(`oci:${layout}:v1`, remote(publicImage, "v1"));
    const anonymous = skopeoAs();

    expect(await anonymous.manifestDigest(remote(publicImage, "v1"))).toBe(image.manifest.digest);
    const copy = join(workDir!, "public-copy");
    await anonymous.copy(remote(publicImage, "v1"), `oci:${copy}:v1`);
    expect(await layoutDigestOfTag(copy, "v1")).toBe(image.manifest.digest);
    const write = await anonymous.tryCopy(`oci:${layout}:v1`, remote(publicImage, "anonymous"));
    expect(write.code).not.toBe(0);
    expect(write.stderr).toContain("unauthorized: authentication required");
  });

  it("uses an access token as the password", async () => {
    const withToken = skopeoAs(fixtures.deployerToken);

    await withToken.copy(`oci:${layout}:v1`, remote(deployerImage, "v1"));

    expect(await withToken.manifestDigest(remote(deployerImage, "v1"))).toBe(image.manifest.digest);
    const outside = await withToken.tryCopy(`oci:${layout}:v1`, remote(privateImage, "token"));
    const read = await withToken.tryRawManifest(remote(privateImage, "v1"));
    // skopeo first checks with HEAD whether the blobs exist, and a HEAD response has no error body to print.
    expect(outside.code).not.toBe(0);
    expect(outside.stderr).toContain("403 (Forbidden)");
    expect(read.code).not.toBe(0);
    expect(read.stderr).toContain("denied: requested access to the resource is denied");
  });
});
