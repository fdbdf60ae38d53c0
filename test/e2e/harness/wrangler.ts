import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { answersWithStatus, freePort, makeTempDir, removeTempDir, runOk, Service, waitUntil } from "./process.ts";
import { requireTools } from "./tools.ts";

/** The repository root, which contains wrangler.toml. */
export const projectDir = fileURLToPath(new URL("../../../", import.meta.url));

export interface WranglerDevOptions {
  /** Folder for D1, R2 and Durable Object state; a new temp folder when unset. */
  persistDir?: string;
  /** Port of the registry on 127.0.0.1; a free port when unset. */
  port?: number;
  /** Values for `--var`, overriding wrangler.toml's [vars], such as { UPLOAD_PART_SIZE_MIB: "5" }. */
  vars?: Record<string, string>;
  /** Milliseconds to wait for `GET /v2/` to return 200; 120 s when unset. */
  startTimeoutMs?: number;
}

/**
 * `wrangler dev` of this project on 127.0.0.1. `start` applies the D1
 * migrations to the persist folder, then starts wrangler and waits until
 * `GET /v2/` returns 200. `stop` and a later `start` reuse the same port and
 * persist folder, so everything stored survives a restart.
 */
export class WranglerDev {
  readonly port: number;
  readonly persistDir: string;
  readonly #vars: Record<string, string>;
  readonly #startTimeoutMs: number;
  /** Whether `dispose` deletes the persist folder, because this object created it. */
  readonly #ownsPersistDir: boolean;
  #service: Service | null = null;
  #starts = 0;

  private constructor(port: number, persistDir: string, ownsPersistDir: boolean, options: WranglerDevOptions) {
    this.port = port;
    this.persistDir = persistDir;
    this.#ownsPersistDir = ownsPersistDir;
    this.#vars = options.vars ?? {};
    this.#startTimeoutMs = options.startTimeoutMs ?? 120_000;
  }

  /** Creates the server and starts it. */
  static async start(options: WranglerDevOptions = {}): Promise<WranglerDev> {
    requireTools("npx");
    const port = options.port ?? (await freePort());
    const persistDir = options.persistDir ?? (await makeTempDir("wrangler"));
    const server = new WranglerDev(port, persistDir, options.persistDir === undefined, options);
    await server.start();
    return server;
  }

  /** `host:port` as image references spell the registry, such as 127.0.0.1:24817. */
  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `http://${this.host}`;
  }

  get running(): boolean {
    return this.#service?.running ?? false;
  }

  /** Log file of the current or last run; each start writes a new one in the persist folder. */
  get logFile(): string | null {
    return this.#service?.logFile ?? null;
  }

  async start(): Promise<void> {
    if (this.running) throw new Error(`wrangler dev is already running on ${this.host}`);
    this.#starts += 1;
    const env = wranglerEnv();

    await runOk("npx", ["wrangler", "d1", "migrations", "apply", "DB", "--local", "--persist-to", this.persistDir], {
      cwd: projectDir,
      env,
      timeoutMs: 120_000,
    });

    const inspectorPort = await freePort();
    const args = ["wrangler", "dev", "--port", String(this.port), "--ip", "127.0.0.1", "--persist-to", this.persistDir];
    args.push("--inspector-port", String(inspectorPort), "--show-interactive-dev-session=false");
    for (const [name, value] of Object.entries(this.#vars)) args.push("--var", `${name}:${value}`);

    const logFile = join(this.persistDir, `wrangler-dev.${this.#starts}.log`);
    this.#service = new Service(`wrangler dev on ${this.host}`, "npx", args, { cwd: projectDir, env, logFile });
    try {
      const service = this.#service;
      await waitUntil(`GET ${this.url}/v2/ returns 200`, () => answersWithStatus(`${this.url}/v2/`, 200), {
        timeoutMs: this.#startTimeoutMs,
        service,
        // On a build error wrangler dev keeps running and waits for a file change.
        failure: () => (service.logTail(200).includes("Build failed") ? "wrangler dev failed to build the Worker" : null),
      });
    } catch (error) {
      await this.#service.stop();
      throw error;
    }
  }

  async stop(): Promise<void> {
    await this.#service?.stop();
    await waitUntil(`port ${this.port} is closed`, async () => !(await answersWithStatus(`${this.url}/v2/`, 200).catch(() => false)), {
      timeoutMs: 10_000,
    });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Stops the server and deletes the persist folder when this object created it. */
  async dispose(): Promise<void> {
    await this.stop();
    if (this.#ownsPersistDir) await removeTempDir(this.persistDir);
  }

  /** Returns the last lines of the current or last run's log. */
  logTail(lines = 80): string {
    return this.#service?.logTail(lines) ?? "(wrangler dev was never started)";
  }
}

function wranglerEnv(): NodeJS.ProcessEnv {
  return { ...process.env, WRANGLER_SEND_METRICS: "false", NO_COLOR: "1", FORCE_COLOR: "0" };
}
