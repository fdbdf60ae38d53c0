import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createRemoteRepository,
  delay,
  DockerEngine,
  makeTempDir,
  ReferenceRegistry,
  removeTempDir,
  requireTools,
  Skopeo,
  updateRemoteRepository,
  waitUntil,
  WranglerDev,
} from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";
import { accessLogMark, accessLogSince, cronSchedule, expectDockerImage, manifestRequests, seedImage } from "./remote-fixtures.ts";

let registry: WranglerDev | undefined;
let upstream: ReferenceRegistry | undefined;
let engine: DockerEngine | undefined;
let skopeo: Skopeo;
let workDir: string | undefined;

beforeAll(async () => {
  requireTools("npx", "dockerd", "docker", "skopeo", "referenceRegistry");
  [registry, upstream, engine, workDir] = await Promise.all([
    WranglerDev.start({ testScheduled: true }),
    ReferenceRegistry.start(),
    DockerEngine.start(),
    makeTempDir("remote-refresh"),
  ]);
  skopeo = new Skopeo({ [registry.host]: registry.adminCredentials });
  await engine.login(registry.host, registry.adminCredentials);
});

afterAll(async () => {
  await engine?.dispose();
  await upstream?.dispose();
  await registry?.dispose();
  if (workDir) await removeTempDir(workDir);
});

printLogsOnFailure(() => ({ "wrangler dev": registry, "docker-registry": upstream, dockerd: engine }));

/** Deletes the local copy of `reference`, if any, and pulls it again through wrangler dev. */
async function pullAgain(reference: string): Promise<void> {
  await engine!.tryDocker(["rmi", reference]);
  await engine!.docker(["pull", reference]);
}

describe("remote repository tag refresh", () => {
  it("picks up a moved tag after the cache period", async () => {
    const upstreamName = "origin/moving";
    await createRemoteRepository(registry!, "moving-cache", { url: upstream!.url, tagCacheSeconds: 3600 });
    const reference = `${registry!.host}/moving-cache/${upstreamName}:v1`;
    const first = await seedImage(skopeo, workDir!, upstream!.host, upstreamName, "v1");
    await pullAgain(reference);
    await expectDockerImage(engine!, reference, first);

    const second = await seedImage(skopeo, workDir!, upstream!.host, upstreamName, "v1");
    await pullAgain(reference);
    // Within the cache period of an hour the cached tag is served without asking upstream.
    await expectDockerImage(engine!, reference, first);

    await updateRemoteRepository(registry!, "moving-cache", { tagCacheSeconds: 1 });
    // Cache ages are whole seconds, so after two seconds the tag is past a cache period of one second.
    await delay(2_100);
    const mark = await accessLogMark(upstream!);
    await pullAgain(reference);

    await expectDockerImage(engine!, reference, second);
    const requests = manifestRequests(await accessLogSince(upstream!, mark), upstreamName);
    expect(requests.some((entry) => entry.method === "HEAD" && entry.path.endsWith("/manifests/v1"))).toBe(true);
  });

  it("refreshes a recently pulled tag in the Cron run", async () => {
    const upstreamName = "origin/cron";
    // The Cron run refreshes a tag whose cache period ends within its next 300 seconds. A period of
    // 240 seconds puts a just-pulled tag in that window while it stays unexpired for the whole test.
    await createRemoteRepository(registry!, "cron-cache", { url: upstream!.url, tagCacheSeconds: 240 });
    const reference = `${registry!.host}/cron-cache/${upstreamName}:v1`;
    const first = await seedImage(skopeo, workDir!, upstream!.host, upstreamName, "v1");
    await pullAgain(reference);
    await expectDockerImage(engine!, reference, first);
    const second = await seedImage(skopeo, workDir!, upstream!.host, upstreamName, "v1");

    const beforeCron = await accessLogMark(upstream!);
    const run = await registry!.runScheduled(cronSchedule);

    expect(run.status, run.body).toBe(200);
    // The scheduled handler may finish its upstream requests after /__scheduled has returned.
    await waitUntil(
      `the Cron run sends a request for ${upstreamName}:v1 to the upstream`,
      async () =>
        manifestRequests(await accessLogSince(upstream!, beforeCron), upstreamName).some((entry) => entry.path.endsWith("/manifests/v1")),
      { timeoutMs: 15_000 },
    );

    const beforePull = await accessLogMark(upstream!);
    await pullAgain(reference);

    await expectDockerImage(engine!, reference, second);
    expect(manifestRequests(await accessLogSince(upstream!, beforePull), upstreamName)).toEqual([]);
  });
});
