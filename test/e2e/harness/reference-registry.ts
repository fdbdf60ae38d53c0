import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { hashSync } from "bcryptjs";
import { freePort, makeTempDir, removeTempDir, respondsToHttp, Service, waitUntil } from "./process.ts";
import { authorizationHeaders, type Credentials } from "./registry-client.ts";
import { requireTools } from "./tools.ts";

export interface ReferenceRegistryOptions {
  /** Milliseconds to wait for `GET /v2/` to return 200; 30 s when unset. */
  startTimeoutMs?: number;
  /** Users of htpasswd Basic authentication; anonymous access when unset or empty. */
  users?: Credentials[];
}

/** One request line of the registry's access log. */
export interface AccessLogEntry {
  method: string;
  /** The request path without its query string, such as `/v2/origin/app/blobs/sha256:…`. */
  path: string;
  status: number;
  userAgent: string;
}

/**
 * bcrypt cost of the htpasswd entries. 5 is the default of Apache's
 * `htpasswd -B`, and a low cost keeps each authenticated request cheap,
 * because distribution checks the hash on every request.
 */
const htpasswdBcryptCost = 5;

/**
 * Debian's build of the CNCF Distribution registry (`docker-registry`
 * 2.8), as a reference to compare against and as an upstream of remote
 * repositories: filesystem storage in a temp folder, deletes enabled, plain
 * http on 127.0.0.1, and optionally htpasswd Basic authentication.
 *
 * What distribution 2.8.2 (Debian 2.8.2+ds1) does with htpasswd, as run
 * here: it serves Basic authentication over plain http on 127.0.0.1 without
 * TLS and without a warning at startup. Every request without valid
 * credentials, wrong password included, gets 401 UNAUTHORIZED with
 * `WWW-Authenticate: Basic realm="<realm>"`, and `GET /v2/` needs
 * credentials too. It accepts the `$2b$` bcrypt hashes that bcryptjs writes.
 * The access log shows `-` as the user even for authenticated requests.
 *
 * `stop` and a later `start` keep the port, the storage and the log file,
 * to simulate an upstream that goes down and comes back.
 */
export class ReferenceRegistry {
  readonly port: number;
  readonly dir: string;
  readonly #users: readonly Credentials[];
  readonly #startTimeoutMs: number;
  #service: Service | null = null;

  private constructor(port: number, dir: string, options: ReferenceRegistryOptions) {
    this.port = port;
    this.dir = dir;
    this.#users = options.users ?? [];
    this.#startTimeoutMs = options.startTimeoutMs ?? 30_000;
  }

  /** Creates the registry's folder, its config and htpasswd file, and starts it. */
  static async start(options: ReferenceRegistryOptions = {}): Promise<ReferenceRegistry> {
    requireTools("referenceRegistry");
    const dir = await makeTempDir("docker-registry");
    const port = await freePort();
    const registry = new ReferenceRegistry(port, dir, options);

    const htpasswdFile = registry.#users.length > 0 ? join(dir, "htpasswd") : null;
    if (htpasswdFile) await writeFile(htpasswdFile, htpasswdLines(registry.#users));
    await writeFile(registry.#configFile, configYaml(join(dir, "storage"), port, htpasswdFile));

    try {
      await registry.start();
    } catch (error) {
      await registry.dispose();
      throw error;
    }
    return registry;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  get url(): string {
    return `http://${this.host}`;
  }

  get running(): boolean {
    return this.#service?.running ?? false;
  }

  /** The htpasswd users, so that a test can log in as the first one. */
  get users(): readonly Credentials[] {
    return this.#users;
  }

  get #configFile(): string {
    return join(this.dir, "config.yml");
  }

  /** The registry's output: its application log and, one line per request, its access log. */
  get logFile(): string {
    return join(this.dir, "registry.log");
  }

  /**
   * Starts the registry and waits until `GET /v2/` returns 200, sent with
   * the first user's credentials when there are users. Every start appends
   * to the same log file.
   */
  async start(): Promise<void> {
    if (this.running) throw new Error(`docker-registry is already running on ${this.host}`);
    const { referenceRegistry } = requireTools("referenceRegistry");
    const service = new Service(`docker-registry on ${this.host}`, referenceRegistry, ["serve", this.#configFile], {
      logFile: this.logFile,
    });
    this.#service = service;
    const headers = authorizationHeaders(this.#users[0]);
    await waitUntil(`GET ${this.url}/v2/ returns 200`, () => returnsOk(`${this.url}/v2/`, headers), {
      timeoutMs: this.#startTimeoutMs,
      service,
    });
  }

  /** Stops the registry and waits until its port no longer accepts requests. The storage stays. */
  async stop(): Promise<void> {
    await this.#service?.stop();
    await waitUntil(`port ${this.port} is closed`, async () => !(await respondsToHttp(`${this.url}/v2/`)), { timeoutMs: 10_000 });
  }

  /** Returns every request line of the access log since the first start, oldest first. */
  async accessLog(): Promise<AccessLogEntry[]> {
    const log = await readFile(this.logFile, "utf8");
    const entries: AccessLogEntry[] = [];
    for (const line of log.split("\n")) {
      const entry = parseAccessLogLine(line);
      if (entry) entries.push(entry);
    }
    return entries;
  }

  logTail(lines = 60): string {
    return this.#service?.logTail(lines) ?? "(docker-registry was never started)";
  }

  async dispose(): Promise<void> {
    await this.#service?.stop();
    await removeTempDir(this.dir);
  }
}

/**
 * Parses one line of the Apache combined log format that distribution writes
 * for each request, such as
 * `127.0.0.1 - - [04/Dec/2026:22:17:38 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`.
 * Returns null for any other line, such as the structured log lines.
 */
export function parseAccessLogLine(line: string): AccessLogEntry | null {
  const match = /^\S+ \S+ \S+ \[[^\]]*\] "([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3}) \S+ "[^"]*" "([^"]*)"$/.exec(line.trim());
  if (!match) return null;
  const [, method, uri, status, userAgent] = match;
  return { method: method!, path: uri!.split("?")[0]!, status: Number(status), userAgent: userAgent! };
}

/** Returns whether `GET url` returns 200 within two seconds. */
async function returnsOk(url: string, headers: Record<string, string>): Promise<boolean> {
  const response = await fetch(url, { headers, signal: AbortSignal.timeout(2_000) });
  await response.body?.cancel();
  return response.status === 200;
}

/** Returns an htpasswd file with a bcrypt hash per user, the only hash format that distribution accepts. */
function htpasswdLines(users: readonly Credentials[]): string {
  return users.map((user) => `${user.username}:${hashSync(user.password, htpasswdBcryptCost)}\n`).join("");
}

function configYaml(storageDir: string, port: number, htpasswdFile: string | null): string {
  const lines = [
    "version: 0.1",
    "log:",
    "  level: info",
    "  accesslog:",
    "    disabled: false",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${storageDir}`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: 127.0.0.1:${port}`,
  ];
  if (htpasswdFile) lines.push("auth:", "  htpasswd:", "    realm: edge-registry-e2e", `    path: ${htpasswdFile}`);
  return [...lines, ""].join("\n");
}
