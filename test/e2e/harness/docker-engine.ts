import { request } from "node:http";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { makeTempDir, removeTempDir, run, runOk, Service, waitUntil, type RunOptions, type RunResult } from "./process.ts";
import type { Credentials } from "./registry-client.ts";
import { dockerClientPath, requireRoot, requireTools } from "./tools.ts";

/**
 * A private Docker Engine: dockerd with vfs storage, no iptables and no
 * bridge, listening on a unix socket in its own temp folder. Docker treats
 * registries on 127.0.0.0/8 as insecure, so it pushes to and pulls from
 * `wrangler dev` over plain http without any daemon configuration.
 */
export class DockerEngine {
  readonly dir: string;
  readonly socket: string;
  /** The docker client binary that `docker` runs. */
  readonly cli: string;
  readonly #service: Service;

  private constructor(dir: string, cli: string, service: Service) {
    this.dir = dir;
    this.socket = join(dir, "docker.sock");
    this.cli = cli;
    this.#service = service;
  }

  /** Starts dockerd and waits until `GET /_ping` on its socket returns OK. */
  static async start(options: { startTimeoutMs?: number } = {}): Promise<DockerEngine> {
    const { dockerd } = requireTools("dockerd", "docker");
    requireRoot("dockerd");
    const cli = dockerClientPath();

    const dir = await makeTempDir("dockerd");
    await mkdir(join(dir, "client"));
    const socket = join(dir, "docker.sock");
    const args = [
      "--storage-driver=vfs",
      "--iptables=false",
      "--bridge=none",
      "--data-root",
      join(dir, "data"),
      "--exec-root",
      join(dir, "exec"),
      "-H",
      `unix://${socket}`,
      "--pidfile",
      join(dir, "pid"),
    ];
    const service = new Service(`dockerd in ${dir}`, dockerd, args, { logFile: join(dir, "dockerd.log") });
    const engine = new DockerEngine(dir, cli, service);
    try {
      await waitUntil(`dockerd answers on ${socket}`, () => pingDocker(socket), { timeoutMs: options.startTimeoutMs ?? 60_000, service });
    } catch (error) {
      await engine.dispose();
      throw error;
    }
    return engine;
  }

  /**
   * Environment for a docker client of this engine. DOCKER_CONFIG points at
   * an empty folder so that the user's credential helpers stay out, and
   * DOCKER_BUILDKIT=0 selects the classic builder, which dockerd runs
   * without buildkit's extra setup.
   */
  get env(): NodeJS.ProcessEnv {
    return { ...process.env, DOCKER_HOST: `unix://${this.socket}`, DOCKER_CONFIG: join(this.dir, "client"), DOCKER_BUILDKIT: "0" };
  }

  /** Runs `docker <args>` against this engine and raises CommandError on a non-zero exit. */
  docker(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return runOk(this.cli, args, { ...options, env: { ...this.env, ...options.env } });
  }

  /** Like `docker` but returns the result whatever the exit status. */
  tryDocker(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return run(this.cli, args, { ...options, env: { ...this.env, ...options.env } });
  }

  /**
   * `docker login` to a registry with the password on stdin. The client
   * stores the credentials in its config folder in this engine's temp folder.
   */
  login(registryHost: string, credentials: Credentials): Promise<RunResult> {
    return this.docker(["login", "--username", credentials.username, "--password-stdin", registryHost], { input: credentials.password });
  }

  /** Like `login` but returns the result whatever the exit status, to check a failed login. */
  tryLogin(registryHost: string, credentials: Credentials): Promise<RunResult> {
    return this.tryDocker(["login", "--username", credentials.username, "--password-stdin", registryHost], { input: credentials.password });
  }

  /** `docker logout`, which removes the stored credentials of a registry. */
  logout(registryHost: string): Promise<RunResult> {
    return this.docker(["logout", registryHost]);
  }

  /** Returns the image id (`sha256:…`) of a local image. */
  async imageId(reference: string): Promise<string> {
    const result = await this.docker(["image", "inspect", "--format", "{{.Id}}", reference]);
    return result.stdout.trim();
  }

  logTail(lines = 60): string {
    return this.#service.logTail(lines);
  }

  /** Stops dockerd, which also stops the containerd it started, and deletes the temp folder. */
  async dispose(): Promise<void> {
    await this.#service.stop(30_000);
    await unmountUnder(this.dir);
    await removeTempDir(this.dir);
  }
}

/**
 * Unmounts every mount point inside `dir`, deepest first. dockerd bind-mounts
 * its data root onto itself and removes that mount when it stops cleanly.
 * After a SIGKILL the mount stays, and the folder cannot be deleted.
 */
async function unmountUnder(dir: string): Promise<void> {
  const mountInfo = await readFile("/proc/self/mountinfo", "utf8");
  // Field 5 of each line is the mount point, with spaces and other bytes escaped as octal (\040).
  const mountPoints = mountInfo
    .split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .map((escaped) => escaped.replace(/\\([0-7]{3})/g, (_, code: string) => String.fromCharCode(parseInt(code, 8))))
    .filter((mountPoint) => mountPoint === dir || mountPoint.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);

  for (const mountPoint of mountPoints) {
    const result = await run("umount", [mountPoint]);
    if (result.code === 0) continue;
    console.warn(`umount ${mountPoint} failed (${result.stderr.trim()}); detaching it with umount -l`);
    await run("umount", ["-l", mountPoint]);
  }
}

function pingDocker(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const ping = request({ socketPath, path: "/_ping", method: "GET", timeout: 2_000 }, (response) => {
      response.resume();
      resolve(response.statusCode === 200);
    });
    ping.on("timeout", () => ping.destroy());
    ping.on("error", () => resolve(false));
    ping.end();
  });
}
