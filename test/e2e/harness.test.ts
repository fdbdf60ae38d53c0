import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  basicAuthorization,
  findExecutable,
  makeTempDir,
  MissingToolError,
  parseAccessLogLine,
  ReferenceRegistry,
  removeTempDir,
  requireTools,
  respondsToHttp,
  run,
  Service,
  tools,
  waitUntil,
} from "./harness.ts";

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

describe("parseAccessLogLine", () => {
  it("parses a request line", () => {
    const line = '127.0.0.1 - - [04/Dec/2026:22:17:38 +0000] "HEAD /v2/origin/app/manifests/v1 HTTP/1.1" 401 87 "" "skopeo/1.9.3"';

    expect(parseAccessLogLine(line)).toEqual({
      method: "HEAD",
      path: "/v2/origin/app/manifests/v1",
      status: 401,
      userAgent: "skopeo/1.9.3",
    });
  });

  it("drops the query string", () => {
    const line =
      '127.0.0.1 - - [04/Dec/2026:22:22:31 +0000] "PUT /v2/origin/app/blobs/uploads/1?_state=x&digest=sha256%3Aab HTTP/1.1" 201 0 "" ""';

    expect(parseAccessLogLine(line)?.path).toBe("/v2/origin/app/blobs/uploads/1");
  });

  it("ignores structured log lines", () => {
    expect(parseAccessLogLine('time="2026-12-04T22:17:36Z" level=info msg="listening on 127.0.0.1:29871"')).toBeNull();
  });
});

describe("ReferenceRegistry with htpasswd", () => {
  const user = { username: "harness", password: "harness-e2e-password" };
  let registry: ReferenceRegistry | undefined;

  beforeAll(async () => {
    registry = await ReferenceRegistry.start({ users: [user] });
  });

  afterAll(async () => {
    await registry?.dispose();
  });

  it("requires the htpasswd password", async () => {
    const anonymous = await fetch(`${registry!.url}/v2/`);
    const wrong = await fetch(`${registry!.url}/v2/`, { headers: { Authorization: basicAuthorization({ ...user, password: "wrong" }) } });
    const valid = await fetch(`${registry!.url}/v2/`, { headers: { Authorization: basicAuthorization(user) } });

    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("WWW-Authenticate")).toBe('Basic realm="edge-registry-e2e"');
    expect(wrong.status).toBe(401);
    expect(valid.status).toBe(200);
  });

  it("keeps its access log across a restart", async () => {
    await registry!.stop();
    expect(await respondsToHttp(`${registry!.url}/v2/`)).toBe(false);
    await registry!.start();

    const statuses = (await registry!.accessLog()).filter((entry) => entry.path === "/v2/").map((entry) => entry.status);

    // Each start's readiness check adds one 200, before and after the three requests of the test above.
    expect(statuses).toEqual([200, 401, 401, 200, 200]);
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
