import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** An external program the suite runs, with the Debian package that installs it. */
export interface Tool {
  command: string;
  debianPackage: string;
}

export const tools = {
  dockerd: { command: "dockerd", debianPackage: "docker.io" },
  docker: { command: "docker", debianPackage: "docker.io" },
  podman: { command: "podman", debianPackage: "podman" },
  skopeo: { command: "skopeo", debianPackage: "skopeo" },
  referenceRegistry: { command: "docker-registry", debianPackage: "docker-registry" },
  npx: { command: "npx", debianPackage: "npm" },
} as const satisfies Record<string, Tool>;

export type ToolName = keyof typeof tools;

/** Folders searched after PATH, because a non-root PATH often leaves out the sbin folders that hold dockerd. */
const extraSearchPath = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/** Returns the absolute path of an executable named `command`, or null when there is none. */
export function findExecutable(command: string, searchPath = process.env.PATH ?? ""): string | null {
  const folders = [...searchPath.split(delimiter).filter(Boolean), ...extraSearchPath];
  for (const folder of folders) {
    const candidate = join(folder, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this folder; try the next one.
    }
  }
  return null;
}

/** Raised when a program the suite needs is not installed; its message names the package to install. */
export class MissingToolError extends Error {
  constructor(missing: readonly Tool[]) {
    const commands = missing.map((tool) => tool.command).join(", ");
    const packages = [...new Set(missing.map((tool) => tool.debianPackage))].join(" ");
    super(`required program not found: ${commands}. Install it with: apt-get install -y ${packages}`);
    this.name = "MissingToolError";
  }
}

/**
 * Returns the path of each named tool, or raises MissingToolError that lists
 * every missing one at once. The suite fails rather than skips without them.
 */
export function requireTools<Name extends ToolName>(...names: Name[]): Record<Name, string> {
  const found = {} as Record<Name, string>;
  const missing: Tool[] = [];
  for (const name of names) {
    const path = findExecutable(tools[name].command);
    if (path) found[name] = path;
    else missing.push(tools[name]);
  }
  if (missing.length > 0) throw new MissingToolError(missing);
  return found;
}

/**
 * Returns the docker client to run: E2E_DOCKER_CLI when set, else Debian's
 * /usr/bin/docker from docker.io, whose version matches the dockerd of the
 * same package, else the first docker on PATH.
 */
export function dockerClientPath(): string {
  const override = process.env.E2E_DOCKER_CLI;
  if (override) return override;
  const debian = "/usr/bin/docker";
  try {
    accessSync(debian, constants.X_OK);
    return debian;
  } catch {
    return requireTools("docker").docker;
  }
}

/** Raises unless the process runs as root, which dockerd needs. */
export function requireRoot(purpose: string): void {
  if (process.getuid?.() !== 0) {
    throw new Error(`${purpose} needs root; run the suite as root (CI does) or under sudo`);
  }
}
