import { randomBytes } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fetchManifest, makeTempDir, mediaTypes, Podman, removeTempDir, requireTools, sha256Digest, WranglerDev } from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

const imageName = "docker-local/e2e/podman";

let registry: WranglerDev | undefined;
let podman: Podman | undefined;
let contextDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "podman");
  registry = await WranglerDev.start();
  podman = await Podman.create();
  await podman.login(registry.host, registry.adminCredentials);
  contextDir = await makeTempDir("podman-build");
});

afterAll(async () => {
  await podman?.dispose();
  await registry?.dispose();
  if (contextDir) await removeTempDir(contextDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry }));

describe("podman against wrangler dev", () => {
  let builtImageId = "";
  const reference = (tag: string) => `${registry!.host}/${imageName}:${tag}`;

  /** Pushes with `--digestfile` and returns the manifest digest that podman wrote. */
  async function push(tag: string, format: "oci" | "v2s2"): Promise<string> {
    const digestFile = join(contextDir!, `${tag}.digest`);
    await podman!.podman([
      "push",
      "--tls-verify=false",
      "--format",
      format,
      "--digestfile",
      digestFile,
      reference("built"),
      reference(tag),
    ]);
    return (await readFile(digestFile, "utf8")).trim();
  }

  /**
   * Deletes every local image, pulls `tag` back and returns the pulled
   * manifest digest. The pulled image id must be the digest of the config
   * that the registry's manifest names.
   */
  async function removeAllAndPull(tag: string): Promise<string> {
    await podman!.podman(["rmi", "--all", "--force"]);
    const left = await podman!.podman(["images", "--quiet"]);
    expect(left.stdout.trim(), "podman rmi --all left images in storage").toBe("");

    await podman!.podman(["pull", "--tls-verify=false", reference(tag)]);

    const manifest = await fetchManifest(registry!.url, imageName, tag, registry!.adminCredentials);
    const configDigest = (JSON.parse(manifest.bytes.toString("utf8")) as { config: { digest: string } }).config.digest;
    const inspected = await podman!.podman(["image", "inspect", "--format", "{{.Id}} {{.Digest}}", reference(tag)]);
    const [pulledId, pulledDigest] = inspected.stdout.trim().split(" ");
    expect(`sha256:${pulledId}`).toBe(configDigest);
    return pulledDigest!;
  }

  it("builds an image from scratch", async () => {
    await writeFile(join(contextDir!, "first.bin"), randomBytes(64 * 1024));
    // Larger than one 8 MiB upload part, so the upload goes through R2 multipart.
    await writeFile(join(contextDir!, "second.bin"), randomBytes(20 * 1024 * 1024));
    await writeFile(join(contextDir!, "Containerfile"), "FROM scratch\nCOPY first.bin /first.bin\nCOPY second.bin /second.bin\n");

    await podman!.podman(["build", "--file", join(contextDir!, "Containerfile"), "--tag", reference("built"), contextDir!]);

    const inspected = await podman!.podman(["image", "inspect", "--format", "{{.Id}}", reference("built")]);
    builtImageId = inspected.stdout.trim();
    expect(builtImageId).toMatch(/^[0-9a-f]{64}$/);
  });

  it("pushes and pulls an OCI image with the same digest", async () => {
    const pushedDigest = await push("oci", "oci");

    const manifest = await fetchManifest(registry!.url, imageName, "oci", registry!.adminCredentials);
    expect(manifest.contentType).toBe(mediaTypes.ociManifest);
    expect(sha256Digest(manifest.bytes)).toBe(pushedDigest);

    expect(await removeAllAndPull("oci")).toBe(pushedDigest);
    const pulledId = await podman!.podman(["image", "inspect", "--format", "{{.Id}}", reference("oci")]);
    expect(pulledId.stdout.trim()).toBe(builtImageId);
  });

  it("pushes and pulls a Docker schema 2 image with the same digest", async () => {
    // The OCI test deleted the built image; the pulled copy has the same id.
    await podman!.podman(["tag", reference("oci"), reference("built")]);
    const pushedDigest = await push("v2s2", "v2s2");

    const manifest = await fetchManifest(registry!.url, imageName, "v2s2", registry!.adminCredentials);
    expect(manifest.contentType).toBe(mediaTypes.dockerManifest);
    expect(sha256Digest(manifest.bytes)).toBe(pushedDigest);

    expect(await removeAllAndPull("v2s2")).toBe(pushedDigest);
  });

  it("pulls by digest", async () => {
    const byTag = await fetchManifest(registry!.url, imageName, "oci", registry!.adminCredentials);
    const digest = byTag.digestHeader!;
    await podman!.podman(["rmi", "--all", "--force"]);

    await podman!.podman(["pull", "--tls-verify=false", `${registry!.host}/${imageName}@${digest}`]);

    const inspected = await podman!.podman([
      "image",
      "inspect",
      "--format",
      "{{.Digest}} {{.Id}}",
      `${registry!.host}/${imageName}@${digest}`,
    ]);
    const [pulledDigest, pulledId] = inspected.stdout.trim().split(" ");
    expect(pulledDigest).toBe(digest);
    expect(pulledId).toBe(builtImageId);
  });
});
