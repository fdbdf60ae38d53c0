// The machine and tool versions a benchmark run used, for its record.

import { readFileSync, statfsSync } from "node:fs";
import { availableParallelism, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { run } from "../../test/e2e/harness.ts";

const projectRoot = new URL("../..", import.meta.url).pathname;

export function describeMachine() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  return {
    nproc: availableParallelism(),
    memoryGiB: Number((totalmem() / 1024 ** 3).toFixed(1)),
    cpuModel: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown",
    kernel: readFileSync("/proc/sys/kernel/osrelease", "utf8").trim(),
    loadAverage: loadavg(),
  };
}

/** Returns the first line of a command's output, whatever its exit code, or the error when the command is missing. */
async function firstLine(command, args, env) {
  try {
    const { stdout, stderr } = await run(command, args, { env, timeoutMs: 60_000 });
    return (stdout.trim() || stderr.trim()).split("\n")[0];
  } catch (error) {
    return `unavailable: ${error.message.split("\n")[0]}`;
  }
}

/**
 * Collects the versions of every program the benchmark drives. `docker` is
 * the harness's DockerEngine, whose client and engine are asked.
 */
export async function collectVersions(docker) {
  return {
    node: process.version,
    wrangler: await firstLine(process.execPath, [join(projectRoot, "node_modules/wrangler/bin/wrangler.js"), "--version"]),
    workerd: await firstLine(join(projectRoot, "node_modules/.bin/workerd"), ["--version"]),
    dockerRegistry: await firstLine("docker-registry", ["--version"]),
    dockerClient: await firstLine(docker.cli, ["version", "--format", "{{.Client.Version}}"], docker.env),
    dockerEngine: await firstLine(docker.cli, ["version", "--format", "{{.Server.Version}}"], docker.env),
    skopeo: await firstLine("skopeo", ["--version"]),
  };
}

/** Returns the free bytes of the file system that contains `dir`. */
export function freeBytes(dir) {
  const stats = statfsSync(dir);
  return stats.bavail * stats.bsize;
}
