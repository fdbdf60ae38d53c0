// `wrangler dev` of a copy of the project taken when the run starts.
// The harness's WranglerDev runs in the working tree, where wrangler
// rebuilds and restarts the Worker on every source change and fails the
// requests in flight with 503. A benchmark needs one fixed build, so this
// module copies the sources and runs wrangler on the copy.

import { createHash } from "node:crypto";
import { cp, readdir, readFile, symlink } from "node:fs/promises";
import { join, relative } from "node:path";
import { answersWithStatus, freePort, projectDir, run, runOk, Service, waitUntil } from "../../test/e2e/harness.ts";

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

export class SnapshotWrangler {
  /**
   * Applies the D1 migrations to a persist folder in `workDir` and starts
   * `wrangler dev` of the snapshot from `takeSnapshot` on 127.0.0.1.
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

    const port = await freePort();
    const inspectorPort = await freePort();
    const args = [wranglerBin, "dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(inspectorPort)];
    args.push("--persist-to", persistDir, "--show-interactive-dev-session=false");
    const service = new Service(`wrangler dev on 127.0.0.1:${port}`, process.execPath, args, { cwd: snapshotDir, env, logFile: join(workDir, "wrangler-dev.log") });
    const server = new SnapshotWrangler(service, port, inspectorPort, snapshotDir);
    try {
      await waitUntil(`GET ${server.url}/v2/ returns 200`, () => answersWithStatus(`${server.url}/v2/`, 200), { timeoutMs: 120_000, service });
    } catch (error) {
      await service.stop();
      throw error;
    }
    return server;
  }

  constructor(service, port, inspectorPort, projectDir) {
    this.service = service;
    this.port = port;
    /** Port of wrangler's DevTools proxy to the Worker's isolate. */
    this.inspectorPort = inspectorPort;
    /** The snapshot that wrangler builds from. Its .wrangler/tmp folder contains the bundle and its source map. */
    this.projectDir = projectDir;
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
