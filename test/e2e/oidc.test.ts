import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { importJWK, SignJWT, type JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TestIssuer } from "../oidc-issuer/server.ts";
import {
  authorizationHeaders,
  createPermissionTarget,
  createUser,
  DockerEngine,
  makeTempDir,
  removeTempDir,
  requireTools,
  WranglerDev,
  type Credentials,
} from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

/** The user that CI jobs of acme/app on main log in as. */
const ciUser: Credentials = { username: "ci-release", password: "ci-release-e2e-password" };
const audience = "edge-registry-e2e";
const image = "docker-local/e2e/oidc/app";

let issuer: TestIssuer | undefined;
let registry: WranglerDev | undefined;
let engine: DockerEngine | undefined;
let contextDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker");
  issuer = await TestIssuer.start();
  registry = await WranglerDev.start();
  engine = await DockerEngine.start();
  contextDir = await makeTempDir("oidc-docker");

  await createUser(registry, ciUser);
  await createPermissionTarget(registry, {
    name: "e2e-ci",
    repositories: ["docker-local"],
    includePatterns: ["e2e/oidc/**"],
    users: { [ciUser.username]: ["read", "deploy"] },
  });
  const response = await fetch(`${registry.url}/api/v1/oidc/issuers`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authorizationHeaders(registry.adminCredentials) },
    body: JSON.stringify({
      name: "e2e",
      issuer: issuer.info.issuer,
      audience,
      jwksUrl: issuer.info.jwksUrl,
      rules: [{ claims: { repository: "acme/app", ref: "refs/heads/main" }, user: ciUser.username }],
    }),
  });
  if (response.status !== 201) throw new Error(`configuring the OIDC issuer returned ${response.status}: ${await response.text()}`);
});

afterAll(async () => {
  await engine?.dispose();
  await registry?.dispose();
  await issuer?.stop();
  if (contextDir) await removeTempDir(contextDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, dockerd: engine }));

/** Signs an ID token of a push to acme/app main with the test issuer's RS256 key; `claims` overrides. */
async function mintIdToken(claims: JWTPayload = {}): Promise<string> {
  const jwk = issuer!.info.keys.rs256;
  const now = Math.floor(Date.now() / 1000);
  const payload = { aud: audience, sub: "repo:acme/app:ref:refs/heads/main", repository: "acme/app", ref: "refs/heads/main", ...claims };
  return new SignJWT(payload)
    .setProtectedHeader({ alg: "RS256", kid: jwk.kid!, typ: "JWT" })
    .setIssuer(issuer!.info.issuer)
    .setIssuedAt(now)
    .setNotBefore(now)
    .setExpirationTime(now + 600)
    .sign(await importJWK(jwk, "RS256"));
}

describe("docker login with an OIDC ID token", () => {
  const reference = (tag: string) => `${registry!.host}/${image}:${tag}`;

  it("pushes and pulls after login", async () => {
    await writeFile(join(contextDir!, "data.bin"), randomBytes(32 * 1024));
    await writeFile(join(contextDir!, "Dockerfile"), "FROM scratch\nCOPY data.bin /data.bin\n");
    await engine!.docker(["build", "--tag", reference("v1"), contextDir!]);
    const imageId = await engine!.imageId(reference("v1"));

    const login = await engine!.login(registry!.host, { username: "oidc", password: await mintIdToken() });
    expect(login.stdout).toContain("Login Succeeded");

    const push = await engine!.docker(["push", reference("v1")]);
    expect(push.stdout).toMatch(/v1: digest: sha256:[0-9a-f]{64}/);
    await engine!.docker(["rmi", reference("v1")]);
    await engine!.docker(["pull", reference("v1")]);
    expect(await engine!.imageId(reference("v1"))).toBe(imageId);
  });

  it("rejects a wrong audience", async () => {
    const login = await engine!.tryLogin(registry!.host, { username: "oidc", password: await mintIdToken({ aud: "someone-else" }) });

    expect(login.code).not.toBe(0);
    expect(login.stderr).toContain("unauthorized: the ID token was rejected");
  });

  it("rejects a token of another branch", async () => {
    const login = await engine!.tryLogin(registry!.host, { username: "oidc", password: await mintIdToken({ ref: "refs/heads/feature" }) });

    expect(login.code).not.toBe(0);
    expect(login.stderr).toContain("no rule of issuer 'e2e' matches");
  });
});
