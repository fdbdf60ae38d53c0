import { generateKeyPairSync, randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { freePort, makeTempDir, removeTempDir, respondsToHttp, runOk, Service, waitUntil } from "./process.ts";
import { authorizationHeaders, type Credentials } from "./registry-client.ts";
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
  /** Password of the `admin` user that the first request creates; `e2eAdminPassword` when unset. */
  adminPassword?: string;
  /** Milliseconds to wait for `GET /v2/` to get a response; 120 s when unset. */
  startTimeoutMs?: number;
  /** Whether to pass `--test-scheduled`, which makes `GET /__scheduled?cron=…` run the Worker's scheduled handler. */
  testScheduled?: boolean;
}

/** The status and body of a `GET /__scheduled` request. */
export interface ScheduledRun {
  status: number;
  body: string;
}

/** The administrator password that `WranglerDev` gives the registry when `adminPassword` is unset. */
export const e2eAdminPassword = "e2e-admin-password";

/**
 * `wrangler dev` of this project on 127.0.0.1. `start` applies the D1
 * migrations to the persist folder, then starts wrangler with the
 * ADMIN_PASSWORD and TOKEN_SIGNING_KEY secrets, waits until it responds and
 * checks that `GET /v2/` with the administrator's credentials returns 200.
 * The first request creates the administrator. `stop` and a later
 * `start` reuse the same port, persist folder and secrets, so everything
 * stored survives a restart.
 *
 * CREDENTIALS_KEY, the AES-GCM key that encrypts upstream passwords, is 32
 * random bytes in base64.
 *
 * The secrets go to wrangler as `--var` options, which take precedence over
 * the project's .dev.vars in wrangler 4.157 and keep the newlines of the PEM
 * key. So a fresh clone needs no .dev.vars, and a developer's own one does
 * not change the secrets that the tests use.
 */
export class WranglerDev {
  readonly port: number;
  readonly persistDir: string;
  readonly adminCredentials: Credentials;
  readonly #vars: Record<string, string>;
  /** PKCS#8 PEM of a P-256 key made for this server, the TOKEN_SIGNING_KEY secret. */
  readonly #signingKey: string;
  /** Base64 of 32 random bytes, the CREDENTIALS_KEY secret. */
  readonly #credentialsKey: string;
  readonly #testScheduled: boolean;
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
    this.adminCredentials = { username: "admin", password: options.adminPassword ?? e2eAdminPassword };
    this.#signingKey = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    this.#credentialsKey = randomBytes(32).toString("base64");
    this.#startTimeoutMs = options.startTimeoutMs ?? 120_000;
    this.#testScheduled = options.testScheduled ?? false;
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
    if (this.#testScheduled) args.push("--test-scheduled");
    const vars = {
      ADMIN_PASSWORD: this.adminCredentials.password,
      TOKEN_SIGNING_KEY: this.#signingKey,
      CREDENTIALS_KEY: this.#credentialsKey,
      ...this.#vars,
    };
    for (const [name, value] of Object.entries(vars)) args.push("--var", `${name}:${value}`);

    const logFile = join(this.persistDir, `wrangler-dev.${this.#starts}.log`);
    this.#service = new Service(`wrangler dev on ${this.host}`, "npx", args, { cwd: projectDir, env, logFile });
    try {
      const service = this.#service;
      await waitUntil(`GET ${this.url}/v2/ gets a response`, () => respondsToHttp(`${this.url}/v2/`), {
        timeoutMs: this.#startTimeoutMs,
        service,
        // On a build error wrangler dev keeps running and waits for a file change.
        failure: () => (service.logTail(200).includes("Build failed") ? "wrangler dev failed to build the Worker" : null),
      });
      await this.#checkAdministratorLogin();
    } catch (error) {
      await this.#service.stop();
      throw error;
    }
  }

  /**
   * Raises unless `GET /v2/` with the administrator's credentials returns
   * 200. It sends one request rather than polling, because the registry
   * rejects every login of a user for 15 minutes after ten failed ones.
   */
  async #checkAdministratorLogin(): Promise<void> {
    const response = await fetch(`${this.url}/v2/`, { headers: authorizationHeaders(this.adminCredentials) });
    const body = await response.text();
    if (response.status !== 200) {
      throw new Error(
        `GET ${this.url}/v2/ as ${this.adminCredentials.username} returned ${response.status}, expected 200: ${body.slice(0, 500)}. ` +
          `Check that wrangler dev gets the ADMIN_PASSWORD secret and that ${this.persistDir} holds no administrator with another password.`,
      );
    }
  }

  /**
   * Runs the Worker's scheduled handler once for `cron` through
   * `GET /__scheduled?cron=…`, and returns the response. Raises unless the
   * server was started with `testScheduled`, because wrangler dev serves
   * that path only then.
   */
  async runScheduled(cron: string): Promise<ScheduledRun> {
    if (!this.#testScheduled) throw new Error(`wrangler dev on ${this.host} was started without testScheduled, so it has no /__scheduled`);
    const response = await fetch(`${this.url}/__scheduled?${new URLSearchParams({ cron }).toString()}`);
    return { status: response.status, body: await response.text() };
  }

  async stop(): Promise<void> {
    await this.#service?.stop();
    await waitUntil(`port ${this.port} is closed`, async () => !(await respondsToHttp(`${this.url}/v2/`)), { timeoutMs: 10_000 });
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
