import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeTempDir, removeTempDir, run, runOk, type RunOptions, type RunResult } from "./process.ts";
import type { Credentials } from "./registry-client.ts";
import { requireTools } from "./tools.ts";

/**
 * A podman client with its own vfs image store, run root and temp folder,
 * so that it neither reads nor changes the machine's containers storage.
 * Registry commands need `--tls-verify=false` to use plain http.
 */
export class Podman {
  readonly dir: string;
  readonly #binary: string;

  private constructor(binary: string, dir: string) {
    this.#binary = binary;
    this.dir = dir;
  }

  static async create(): Promise<Podman> {
    const { podman } = requireTools("podman");
    const dir = await makeTempDir("podman");
    await mkdir(join(dir, "tmp"));
    await writeFile(join(dir, "auth.json"), JSON.stringify({ auths: {} }));
    return new Podman(podman, dir);
  }

  /** Options that every podman command gets, ahead of the subcommand. */
  get globalArgs(): string[] {
    return [
      "--root",
      join(this.dir, "root"),
      "--runroot",
      join(this.dir, "run"),
      "--storage-driver",
      "vfs",
      "--tmpdir",
      join(this.dir, "libpod-tmp"),
      "--cgroup-manager",
      "cgroupfs",
      "--events-backend",
      "none",
    ];
  }

  /** TMPDIR keeps build and copy scratch files in the temp folder, and an empty REGISTRY_AUTH_FILE keeps the user's logins out. */
  get env(): NodeJS.ProcessEnv {
    return { ...process.env, TMPDIR: join(this.dir, "tmp"), REGISTRY_AUTH_FILE: join(this.dir, "auth.json") };
  }

  /** Runs `podman <global options> <args>` and raises CommandError on a non-zero exit. */
  podman(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return runOk(this.#binary, [...this.globalArgs, ...args], { ...options, env: { ...this.env, ...options.env } });
  }

  /** Like `podman` but returns the result whatever the exit status. */
  tryPodman(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    return run(this.#binary, [...this.globalArgs, ...args], { ...options, env: { ...this.env, ...options.env } });
  }

  /** `podman login` over plain http with the password on stdin; the credentials go to this client's auth.json. */
  login(registryHost: string, credentials: Credentials): Promise<RunResult> {
    return this.podman(["login", "--tls-verify=false", "--username", credentials.username, "--password-stdin", registryHost], {
      input: credentials.password,
    });
  }

  /** `podman logout`, which removes the stored credentials of a registry. */
  logout(registryHost: string): Promise<RunResult> {
    return this.podman(["logout", registryHost]);
  }

  async dispose(): Promise<void> {
    await removeTempDir(this.dir);
  }
}
