// `wrangler dev` of a copy of the project taken when the run starts.
// The harness's WranglerDev runs in the working tree, where wrangler
// rebuilds and restarts the Worker on every source change and fails the
// requests in flight with 503. A benchmark needs one fixed build, so this
// module copies the sources and runs wrangler on the copy. Like WranglerDev,
// it passes the ADMIN_PASSWORD and TOKEN_SIGNING_KEY secrets as `--var`
// options, so the copy needs no .dev.vars and scripts/dev-vars.mjs is not run.

import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import { cp, readdir, readFile, symlink } from "node:fs/promises";
import { join, relative } from "node:path";
import { authorizationHeaders, freePort, projectDir, respondsToHttp, run, runOk, Service, waitUntil } from "../../test/e2e/harness.ts";

/** Paths that the Worker's build reads: its sources, configuration and migrations. */
const snapshotEntries = ["src", "durable-objects", "migrations", "wrangler.toml", "package.json", "tsconfig.json"];

/** Environment for wrangler: no usage metrics or error reports, which would try to reach outside the machine. */
function wranglerEnv() {
  return { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_SEND_ERROR_REPORTS: "false", NO_COLOR: "1", FORCE_COLOR: "0" };
}

async function listFiles(dir) {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => join(entry.parentPath, entry.name));
}

/** Returns the sha256 over the snapshot's file names and contents, to identify the code a run measured. */
async function hashSnapshot(dir) {
  const hash = createHash("sha256");
  const files = (await listFiles(dir)).filter((file) => !file.includes("/node_modules/")).sort();
  for (const file of files) {
    hash.update(relative(dir, file));
    hash.update("\0");
    hash.update(await readFile(file));
  }
  return `sha256:${hash.digest("hex")}`;
}

/** Returns the commit and whether the working tree differed from it, for the run's record. */
async function describeGit() {
  const head = await run("git", ["rev-parse", "HEAD"], { cwd: projectDir });
  const status = await run("git", ["status", "--porcelain", "--", ...snapshotEntries], { cwd: projectDir });
  return { commit: head.stdout.trim(), uncommittedChanges: status.stdout.trimEnd().split("\n").filter(Boolean) };
}

/**
 * Copies what the Worker's build reads into `workDir/project`, with a
 * symlink to the project's node_modules, and describes the copied code.
 */
export async function takeSnapshot(workDir) {
  const dir = join(workDir, "project");
  const git = await describeGit();
  for (const entry of snapshotEntries) await cp(join(projectDir, entry), join(dir, entry), { recursive: true });
  await symlink(join(projectDir, "node_modules"), join(dir, "node_modules"));
  return { dir, source: { ...git, sourceHash: await hashSnapshot(dir) } };
}

/** Returns a new PKCS#8 PEM of a P-256 private key, the form the TOKEN_SIGNING_KEY secret takes. */
function newSigningKey() {
  const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

/**
 * Raises unless `GET /v2/` with the administrator's credentials returns 200.
 * It sends one request rather than polling, because the registry rejects
 * every login of a user for 15 minutes after ten failed ones.
 */
async function checkAdministratorLogin(url, credentials, logFile) {
  const response = await fetch(`${url}/v2/`, { headers: authorizationHeaders(credentials) });
  const body = await response.text();
  if (response.status !== 200) {
    throw new Error(
      `GET ${url}/v2/ as ${credentials.username} returned ${response.status}, expected 200: ${body.slice(0, 500)}. ` +
        `Check in ${logFile} that wrangler dev received the ADMIN_PASSWORD and TOKEN_SIGNING_KEY secrets.`,
    );
  }
}

export class SnapshotWrangler {
  /**
   * Applies the D1 migrations to a persist folder in `workDir` and starts
   * `wrangler dev` of the snapshot from `takeSnapshot` on 127.0.0.1, with a
   * random administrator password and a new token signing key. Resolves
   * once the administrator's login returns 200. The first request creates
   * the administrator.
   */
  static async start(snapshot, workDir) {
    const snapshotDir = snapshot.dir;
    const persistDir = join(workDir, "wrangler-state");

    const wranglerBin = join(projectDir, "node_modules", "wrangler", "bin", "wrangler.js");
    const env = wranglerEnv();
    await runOk(process.execPath, [wranglerBin, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persistDir], {
      cwd: snapshotDir,
      env: { ...env, CI: "true" },
      timeoutMs: 120_000,
    });

    const adminCredentials = { username: "admin", password: randomBytes(24).toString("base64url") };
    const port = await freePort();
    const inspectorPort = await freePort();
    const args = [wranglerBin, "dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(inspectorPort)];
    args.push("--persist-to", persistDir, "--show-interactive-dev-session=false");
    // NOTE: The password and the key are on wrangler's command line, where other users of this machine can read them.
    args.push("--var", `ADMIN_PASSWORD:${adminCredentials.password}`, "--var", `TOKEN_SIGNING_KEY:${newSigningKey()}`);
    const service = new Service(`wrangler dev on 127.0.0.1:${port}`, process.execPath, args, { cwd: snapshotDir, env, logFile: join(workDir, "wrangler-dev.log") });
    const server = new SnapshotWrangler(service, port, inspectorPort, snapshotDir, adminCredentials);
    try {
      await waitUntil(`GET ${server.url}/v2/ gets a response`, () => respondsToHttp(`${server.url}/v2/`), { timeoutMs: 120_000, service });
      await checkAdministratorLogin(server.url, adminCredentials, service.logFile);
    } catch (error) {
      await service.stop();
      throw error;
    }
    return server;
  }

  constructor(service, port, inspectorPort, projectDir, adminCredentials) {
    this.service = service;
    this.port = port;
    /** Port of wrangler's DevTools proxy to the Worker's isolate. */
    this.inspectorPort = inspectorPort;
    /** The snapshot that wrangler builds from. Its .wrangler/tmp folder contains the bundle and its source map. */
    this.projectDir = projectDir;
    /** User name and password of the `admin` user, which the ADMIN_PASSWORD secret creates. */
    this.adminCredentials = adminCredentials;
  }

  get host() {
    return `127.0.0.1:${this.port}`;
  }

  get url() {
    return `http://${this.host}`;
  }

  get pid() {
    return this.service.pid;
  }

  get logFile() {
    return this.service.logFile;
  }

  /** Stops wrangler and the workerd processes it started. The caller deletes the work folder. */
  async dispose() {
    await this.service.stop();
  }
}
