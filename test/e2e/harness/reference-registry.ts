import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { answersWithStatus, freePort, makeTempDir, removeTempDir, Service, waitUntil } from "./process.ts";
import { requireTools } from "./tools.ts";

/**
 * Debian's build of the CNCF Distribution registry (`docker-registry`), as
 * a reference to compare against: filesystem storage in a temp folder,
 * deletes enabled, no authentication, plain http on 127.0.0.1.
 */
export class ReferenceRegistry {
  readonly port: number;
  readonly dir: string;
  readonly #service: Service;

  private constructor(port: number, dir: string, service: Service) {
    this.port = port;
    this.dir = dir;
    this.#service = service;
  }

  static async start(options: { startTimeoutMs?: number } = {}): Promise<ReferenceRegistry> {
    const { referenceRegistry } = requireTools("referenceRegistry");
    const dir = await makeTempDir("docker-registry");
    const port = await freePort();
    const configFile = join(dir, "config.yml");
    await writeFile(configFile, configYaml(join(dir, "storage"), port));

    const service = new Service(`docker-registry on 127.0.0.1:${port}`, referenceRegistry, ["serve", configFile], {
      logFile: join(dir, "registry.log"),
    });
    const registry = new ReferenceRegistry(port, dir, service);
    try {
      await waitUntil(`GET ${registry.url}/v2/ returns 200`, () => answersWithStatus(`${registry.url}/v2/`, 200), {
        timeoutMs: options.startTimeoutMs ?? 30_000,
        service,
      });
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

  /** The registry's output: its application log and, one line per request, its access log. */
  get logFile(): string {
    return this.#service.logFile;
  }

  logTail(lines = 60): string {
    return this.#service.logTail(lines);
  }

  async dispose(): Promise<void> {
    await this.#service.stop();
    await removeTempDir(this.dir);
  }
}

function configYaml(storageDir: string, port: number): string {
  return [
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
    "",
  ].join("\n");
}
