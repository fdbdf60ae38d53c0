import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { findExecutable, makeTempDir, MissingToolError, removeTempDir, requireTools, run, Service, tools, waitUntil } from "./harness.ts";

describe("tool checks", () => {
  it("finds every tool the suite needs", () => {
    // Fails with one message that lists every missing package.
    expect(() => requireTools(...(Object.keys(tools) as (keyof typeof tools)[]))).not.toThrow();
  });

  it("names the package of a missing tool", () => {
    const error = new MissingToolError([tools.skopeo, tools.dockerd, tools.docker]);

    expect(error.message).toContain("skopeo, dockerd, docker");
    expect(error.message).toContain("apt-get install -y skopeo docker.io");
  });

  it("returns null for an unknown program", () => {
    expect(findExecutable("edge-registry-no-such-program")).toBeNull();
  });
});

describe("run", () => {
  it("writes input to stdin", async () => {
    const result = await run("cat", [], { input: "line one\nline two" });

    expect(result.code).toBe(0);
    expect(result.stdout).toBe("line one\nline two");
  });

  it("closes stdin without input", async () => {
    const result = await run("cat", [], { timeoutMs: 5_000 });

    expect(result.timedOut).toBe(false);
    expect(result.stdout).toBe("");
  });
});

describe("Service", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await makeTempDir("service");
  });

  afterAll(async () => {
    await removeTempDir(dir);
  });

  it("stops the children of its process", async () => {
    const pidFile = join(dir, "child.pid");
    const service = new Service("sleeper", "sh", ["-c", `sleep 300 & echo $! > ${pidFile}; wait`], { logFile: join(dir, "sleeper.log") });
    await waitUntil("the child pid is written", async () => (await readFile(pidFile, "utf8")).trim() !== "", { timeoutMs: 5_000, service });
    const childPid = Number((await readFile(pidFile, "utf8")).trim());

    await service.stop(5_000);

    expect(service.running).toBe(false);
    await waitUntil(`child ${childPid} has exited`, async () => !(await isAlive(childPid)), { timeoutMs: 5_000 });
  });
});

/** Returns whether a process exists and is not a zombie waiting to be reaped. */
async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // The state letter follows the parenthesised command name.
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
