// Benchmarks Edge Registry under `wrangler dev` against Debian's
// docker-registry (distribution 2.8) on the same machine: docker and skopeo
// push and pull times, docker pulls through a remote repository whose
// upstream is docker-registry, the Worker's CPU seconds per GiB pushed, the
// CPU cost of hashing alone, and manifest HEAD requests per second. The clients log in
// to Edge Registry as its administrator, whose random password this run
// creates. docker-registry runs without authentication. Writes the raw
// results to bench/results/<time>.json and prints Markdown tables.
//
//   npm run bench -- [--images 4x64,1x1024] [--pull-through-repetitions 3] [--head-seconds 20]
//                    [--head-connections 16] [--hash-mib 1024] [--profile-mib 256] [--keep-work-dir]

import { spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { DockerEngine, ReferenceRegistry, Skopeo } from "../test/e2e/harness.ts";
import {
  busiestOtherProcesses,
  cpuSecondsBetween,
  describeGroup,
  exitedChildrenCpuSeconds,
  findRootProcess,
  machineBusySeconds,
  sampleAllProcesses,
  sampleCpu,
} from "./lib/cpu.mjs";
import { headStatus, loadHead } from "./lib/head-load.mjs";
import { writeBuildContext, writeOciLayout } from "./lib/images.mjs";
import { collectVersions, describeMachine, freeBytes } from "./lib/machine.mjs";
import { benchmarkPullThrough } from "./lib/pull-through.mjs";
import { formatReport, summarise } from "./lib/report.mjs";
import { RegistryToken } from "./lib/registry-token.mjs";
import { profileUpload } from "./lib/worker-profile.mjs";
import { SnapshotWrangler, takeSnapshot } from "./lib/wrangler-snapshot.mjs";

const benchDir = new URL(".", import.meta.url).pathname;
const MiB = 1024 * 1024;
const tag = "1";
/** Limit for one push, pull or build. A slower step is killed and recorded as failed. */
const stepTimeoutMs = 20 * 60_000;

const { values: options } = parseArgs({
  options: {
    images: { type: "string", default: "4x64,1x1024" },
    "pull-through-repetitions": { type: "string", default: "3" },
    "head-seconds": { type: "string", default: "20" },
    "head-connections": { type: "string", default: "16" },
    "hash-mib": { type: "string", default: "1024" },
    "profile-mib": { type: "string", default: "256" },
    "keep-work-dir": { type: "boolean", default: false },
  },
});

/** Parses `--images` as comma-separated `<layer count>x<layer MiB>` specs. */
function parseImageSpecs(text) {
  return text.split(",").map((spec) => {
    const match = /^(\d+)x(\d+)$/.exec(spec.trim());
    if (!match) throw new Error(`invalid image spec '${spec}'; expected <layer count>x<layer MiB>, such as 4x64`);
    const layerCount = Number(match[1]);
    const layerMiB = Number(match[2]);
    return { id: `${layerCount}x${layerMiB}mib`, label: `${layerCount} × ${layerMiB} MiB`, layerCount, layerMiB };
  });
}

/** Harness servers started by this run, each with a `dispose` that stops it and deletes its temp folder. */
const services = [];
/** This run's folder for images, the project snapshot and wrangler's state, or null before it exists. */
let workDir = null;
/** The running hash-cost.mjs process, which leads its own process group, or null. */
let hashingChild = null;

async function removeWorkDir() {
  if (!workDir) return;
  if (options["keep-work-dir"]) console.log(`kept the work folder ${workDir}`);
  else await rm(workDir, { recursive: true, force: true });
}

function signalGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch (error) {
    if (error.code !== "ESRCH") throw error; // The group has already exited.
  }
}

async function stopServices() {
  // Stop in reverse start order. A failure to stop one must not leave the others running.
  for (const { name, server } of services.splice(0).reverse()) {
    await server.dispose().catch((error) => console.error(`stopping ${name} failed: ${error.message}`));
  }
}

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    console.error(`received ${signal}; stopping the processes this run started`);
    if (hashingChild) signalGroup(hashingChild.pid, "SIGKILL");
    stopServices()
      .then(removeWorkDir)
      .finally(() => process.exit(130));
  });
}

/**
 * Runs one timed step: the wall clock around `work`, the CPU seconds of
 * every server process group and of the client commands it ran, and the
 * times wrangler reloaded the Worker meanwhile.
 */
async function timeStep(context, record, work) {
  const { cpuGroups } = context;
  const reloadsBefore = context.countReloads();
  const cpuBefore = sampleCpu(cpuGroups);
  const clientBefore = exitedChildrenCpuSeconds();
  const selfBefore = process.cpuUsage();
  const machineBefore = machineBusySeconds();
  const processesBefore = sampleAllProcesses();
  const started = performance.now();
  try {
    await work();
    record.seconds = (performance.now() - started) / 1000;
  } catch (error) {
    record.error = error.message;
    console.error(`  failed: ${error.message.split("\n")[0]}`);
  }
  const self = process.cpuUsage(selfBefore);
  record.cpuSeconds = {
    ...cpuSecondsBetween(cpuBefore, sampleCpu(cpuGroups)),
    client: exitedChildrenCpuSeconds() - clientBefore,
    benchProcess: (self.user + self.system) / 1e6,
    machine: machineBusySeconds() - machineBefore,
  };
  // Other programs on the machine compete for the same cores, so the record names the busiest of them.
  record.otherProcesses = busiestOtherProcesses(processesBefore, sampleAllProcesses(), cpuGroups);
  record.wranglerReloads = context.countReloads() - reloadsBefore;
  if (record.wranglerReloads > 0)
    console.error(`  wrangler reloaded the Worker ${record.wranglerReloads} time(s) during this step because a source file changed`);
  return record;
}

/** Sums the config and layer sizes of a manifest as the registry serves it: the bytes a push uploads. */
async function imageBytes(baseUrl, name) {
  const response = await fetch(`${baseUrl}/v2/${name}/manifests/${tag}`, {
    headers: { Accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json" },
  });
  if (!response.ok) throw new Error(`GET manifest ${name}:${tag} from ${baseUrl} returned ${response.status}`);
  const manifest = await response.json();
  return manifest.config.size + manifest.layers.reduce((sum, layer) => sum + layer.size, 0);
}

async function benchmarkDocker(context, image, localTag) {
  const { docker, registries, steps } = context;
  const name = `docker-local/bench/${image.id}-docker`;
  const timed = (args) => () => docker.docker(args, { timeoutMs: stepTimeoutMs });

  for (const registry of registries) {
    const remote = `${registry.host}/${name}:${tag}`;
    await docker.docker(["tag", localTag, remote]);
    console.log(`docker push ${image.label} to ${registry.label}`);
    steps.push(
      await timeStep(context, { image: image.id, client: "docker", step: "push", registry: registry.id }, timed(["push", remote])),
    );
  }

  // Removing the image by id drops every tag and the layers, so each pull downloads and extracts all of them.
  await docker.docker(["rmi", "-f", await docker.imageId(localTag)]);
  for (const registry of registries) {
    const remote = `${registry.host}/${name}:${tag}`;
    console.log(`docker pull ${image.label} from ${registry.label}`);
    steps.push(
      await timeStep(context, { image: image.id, client: "docker", step: "pull", registry: registry.id }, timed(["pull", remote])),
    );
    await docker.tryDocker(["rmi", "-f", remote]);
  }
  return name;
}

/**
 * Returns skopeo's credential option for a registry, such as
 * `--dest-creds admin:<password>` for `prefix` "--dest-". A registry without
 * credentials gets `--dest-no-creds`, so that no login stored on the
 * machine is sent to it.
 */
function skopeoCredentialArgs(registry, prefix) {
  const { credentials } = registry;
  return credentials ? [`${prefix}creds`, `${credentials.username}:${credentials.password}`] : [`${prefix}no-creds`];
}

async function benchmarkSkopeo(context, image, layoutDir) {
  const { registries, steps, workDir } = context;
  const name = `docker-local/bench/${image.id}-skopeo`;
  const harnessSkopeo = new Skopeo();
  const skopeo = (args) => harnessSkopeo.skopeo(args, { timeoutMs: stepTimeoutMs });

  for (const registry of registries) {
    const remote = `docker://${registry.host}/${name}:${tag}`;
    console.log(`skopeo push ${image.label} to ${registry.label}`);
    steps.push(
      await timeStep(context, { image: image.id, client: "skopeo", step: "push", registry: registry.id }, () =>
        skopeo(["copy", "--dest-tls-verify=false", ...skopeoCredentialArgs(registry, "--dest-"), `oci:${layoutDir}:${tag}`, remote]),
      ),
    );

    const pulledDir = join(workDir, `pulled-${registry.id}`);
    console.log(`skopeo pull ${image.label} from ${registry.label}`);
    steps.push(
      await timeStep(context, { image: image.id, client: "skopeo", step: "pull", registry: registry.id }, () =>
        skopeo(["copy", "--src-tls-verify=false", ...skopeoCredentialArgs(registry, "--src-"), remote, `oci:${pulledDir}:${tag}`]),
      ),
    );
    await rm(pulledDir, { recursive: true, force: true });
  }
  return name;
}

/** Records the bytes each step moved, read from the reference registry's copy of the manifest. */
async function recordBytes(context, image, client, name) {
  const reference = context.registries.find((registry) => registry.id === "reference");
  let bytes = null;
  try {
    bytes = await imageBytes(reference.baseUrl, name);
  } catch (error) {
    console.error(`  could not size ${name}: ${error.message}`);
  }
  for (const step of context.steps) {
    if (step.image === image.id && step.client === client) step.bytes = bytes;
  }
}

async function benchmarkImage(context, image) {
  const { docker, workDir } = context;
  const localTag = `bench-local/${image.id}:${tag}`;
  const contextDir = join(workDir, `context-${image.id}`);
  console.log(`building ${image.label} from random files`);
  await writeBuildContext(contextDir, image);
  await docker.docker(["build", "-t", localTag, contextDir], { timeoutMs: stepTimeoutMs });
  await rm(contextDir, { recursive: true, force: true });

  const dockerName = await benchmarkDocker(context, image, localTag);
  await recordBytes(context, image, "docker", dockerName);

  const layoutDir = join(workDir, `layout-${image.id}`);
  console.log(`writing an OCI layout of ${image.label} with gzip layers`);
  await writeOciLayout(layoutDir, image, tag);
  const skopeoName = await benchmarkSkopeo(context, image, layoutDir);
  await recordBytes(context, image, "skopeo", skopeoName);
  await rm(layoutDir, { recursive: true, force: true });
  return dockerName;
}

/**
 * Returns how the HEAD load authenticates to a registry. A registry with
 * credentials gets a Bearer pull token from its token endpoint, as docker
 * gets one before it pulls. A registry without credentials gets no header.
 */
function headAuthentication(registry, name) {
  if (!registry.credentials) return { method: "none", authorization: undefined };
  const token = new RegistryToken(registry.baseUrl, registry.credentials, name, ["pull"]);
  return { method: `Bearer token from /v2/token as ${registry.credentials.username}`, authorization: () => token.headers() };
}

async function benchmarkHead(context, name) {
  const { registries, cpuGroups } = context;
  const seconds = Number(options["head-seconds"]);
  const connections = Number(options["head-connections"]);

  const results = [];
  for (const registry of registries) {
    const url = `${registry.baseUrl}/v2/${name}/manifests/${tag}`;
    const { method, authorization } = headAuthentication(registry, name);
    let status;
    try {
      status = await headStatus(url, authorization);
    } catch (error) {
      results.push({
        registry: registry.id,
        url,
        authentication: method,
        error: `HEAD before the load failed, so the load was skipped: ${error.message}`,
      });
      continue;
    }
    if (status !== 200) {
      results.push({
        registry: registry.id,
        url,
        authentication: method,
        error: `HEAD returned ${status} before the load, so the load was skipped`,
      });
      continue;
    }
    console.log(`HEAD load on ${registry.label}: ${connections} concurrent requests for ${seconds} s, authentication: ${method}`);
    await loadHead(url, { seconds: 2, connections, authorization }); // Warm-up of connections, JIT and caches; not recorded.
    const cpuBefore = sampleCpu(cpuGroups);
    const reloadsBefore = context.countReloads();
    const selfBefore = process.cpuUsage();
    const machineBefore = machineBusySeconds();
    const processesBefore = sampleAllProcesses();
    const result = await loadHead(url, { seconds, connections, authorization });
    const self = process.cpuUsage(selfBefore);
    const cpuSeconds = {
      ...cpuSecondsBetween(cpuBefore, sampleCpu(cpuGroups)),
      benchProcess: (self.user + self.system) / 1e6,
      machine: machineBusySeconds() - machineBefore,
    };
    const otherProcesses = busiestOtherProcesses(processesBefore, sampleAllProcesses(), cpuGroups);
    results.push({
      registry: registry.id,
      url,
      authentication: method,
      ...result,
      cpuSeconds,
      otherProcesses,
      wranglerReloads: context.countReloads() - reloadsBefore,
    });
  }
  return results;
}

function countMatches(file, pattern) {
  try {
    return readFileSync(file, "utf8").match(pattern)?.length ?? 0;
  } catch {
    return 0;
  }
}

async function measureHashing(projectCopy) {
  console.log(`measuring BlobHasher and PartAssembler over ${options["hash-mib"]} MiB in memory`);
  const script = join(benchDir, "hash-cost.mjs");
  const args = ["--disable-warning=ExperimentalWarning", script, "--mib", options["hash-mib"], "--project", projectCopy];
  // detached makes the child lead a process group, so an interrupt can stop it with the cases it started.
  hashingChild = spawn(process.execPath, args, { detached: true, stdio: ["ignore", "pipe", "inherit"] });
  try {
    let stdout = "";
    hashingChild.stdout.on("data", (chunk) => (stdout += chunk));
    const [code, signal] = await once(hashingChild, "close");
    if (code !== 0) throw new Error(`bench/hash-cost.mjs failed with ${signal ?? `exit code ${code}`}; its error output is above`);
    return JSON.parse(stdout);
  } finally {
    hashingChild = null;
  }
}

/** Uploads one blob with the Worker's isolate under the V8 profiler, after the timed steps so that it slows none of them. */
async function profileWorker(context, wrangler) {
  const mib = Number(options["profile-mib"]);
  console.log(`profiling the Worker's isolate during one ${mib} MiB upload`);
  const measureCpu = async (work) => {
    const before = sampleCpu(context.cpuGroups);
    const started = performance.now();
    await work();
    return { wallSeconds: (performance.now() - started) / 1000, cpuSeconds: cpuSecondsBetween(before, sampleCpu(context.cpuGroups)) };
  };
  try {
    return await profileUpload(wrangler, { mib, measureCpu });
  } catch (error) {
    console.error(`  profiling failed: ${error.message}`);
    return { mib, error: error.message };
  }
}

/** Parses `--pull-through-repetitions`, the number of times each kind of pull in the pull-through step runs. */
function parseRepetitions(text) {
  const repetitions = Number(text);
  if (!Number.isInteger(repetitions) || repetitions < 1 || repetitions > 20) {
    throw new Error(`invalid --pull-through-repetitions '${text}'; expected a whole number from 1 to 20`);
  }
  return repetitions;
}

async function main() {
  const images = parseImageSpecs(options.images);
  const repetitions = parseRepetitions(options["pull-through-repetitions"]);
  const imageBytesTotal = images.reduce((sum, image) => sum + image.layerCount * image.layerMiB * MiB, 0);
  // Build context, Docker's vfs copies, the OCI layout, two registries' copies of each image and one copy in each
  // remote repository of the pull-through step, with room to spare.
  const neededBytes = (10 + repetitions) * imageBytesTotal + 2 * 1024 * MiB;
  if (freeBytes(tmpdir()) < neededBytes) {
    throw new Error(
      `${tmpdir()} has ${(freeBytes(tmpdir()) / 1024 ** 3).toFixed(1)} GiB free; this run needs about ${(neededBytes / 1024 ** 3).toFixed(1)} GiB`,
    );
  }

  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`;
  const results = { startedAt: new Date().toISOString(), command, options, machine: describeMachine() };
  workDir = await mkdtemp(join(tmpdir(), "edge-registry-bench-"));
  console.log(`work folder ${workDir}`);
  try {
    const snapshot = await takeSnapshot(workDir);
    results.source = snapshot.source;
    // Hashing runs before the servers start, so that none of them competes for the CPU.
    results.hashing = await measureHashing(snapshot.dir);

    console.log("starting dockerd, docker-registry and wrangler dev");
    const docker = await DockerEngine.start();
    services.push({ name: "dockerd", server: docker });
    const reference = await ReferenceRegistry.start();
    services.push({ name: "docker-registry", server: reference });
    const wrangler = await SnapshotWrangler.start(snapshot, workDir);
    services.push({ name: "wrangler dev", server: wrangler });
    results.versions = await collectVersions(docker);
    // Logging in once, outside the timed steps, is what a docker user does before pushing.
    await docker.login(wrangler.host, wrangler.adminCredentials);

    const cpuGroups = {
      workerd: { rootPid: wrangler.pid, comm: ["workerd"] },
      // wrangler's entry worker, which only forwards each request to the Worker's own workerd process.
      workerdProxy: { rootPid: wrangler.pid, comm: ["workerd"], argument: `--socket-addr=entry=${wrangler.host}` },
      // wrangler's two node processes: everything in the tree but workerd.
      wranglerNode: { rootPid: wrangler.pid, exclude: ["workerd"] },
      // The harness does not expose pids, so these trees are found by the temp folder on their command lines.
      dockerRegistry: { rootPid: findRootProcess(reference.dir) },
      dockerEngine: { rootPid: findRootProcess(docker.dir) },
    };
    results.cpuGroups = Object.fromEntries(Object.entries(cpuGroups).map(([name, group]) => [name, describeGroup(group)]));

    const registries = [
      {
        id: "ours",
        label: "Edge Registry (wrangler dev)",
        host: wrangler.host,
        baseUrl: wrangler.url,
        credentials: wrangler.adminCredentials,
      },
      { id: "reference", label: "docker-registry", host: reference.host, baseUrl: reference.url, credentials: null },
    ];
    // wrangler dev restarts the Worker when a file of its build changes, failing requests in flight. The snapshot
    // should never change, and each step records the count to show that.
    const countReloads = () => countMatches(wrangler.logFile, /Reloading local server/g);
    const context = { docker, reference, registries, cpuGroups, steps: [], workDir, countReloads, tag, timeoutMs: stepTimeoutMs };
    context.timeStep = (record, work) => timeStep(context, record, work);
    results.steps = context.steps;
    results.images = images;

    let headTarget = null;
    for (const image of images) {
      const name = await benchmarkImage(context, image);
      await benchmarkPullThrough(context, image, name, repetitions).catch((error) => {
        // A failure outside a timed pull, such as creating the remote repository, ends this image's step but not the run.
        console.error(`  pull-through step of ${image.label} failed: ${error.message}`);
        context.steps.push({ image: image.id, client: "docker", step: "pull-through", registry: "ours", error: error.message });
      });
      headTarget ??= name;
    }
    results.head = await benchmarkHead(context, headTarget);
    results.workerProfile = await profileWorker(context, wrangler);
    results.machine.loadAverageAfter = describeMachine().loadAverage;
  } finally {
    await stopServices();
    await removeWorkDir();
  }

  results.finishedAt = new Date().toISOString();
  results.summary = summarise(results);
  const resultsDir = join(benchDir, "results");
  await mkdir(resultsDir, { recursive: true });
  const resultsFile = join(resultsDir, `${results.startedAt.replace(/[:.]/g, "-")}.json`);
  await writeFile(resultsFile, `${JSON.stringify(results, null, 2)}\n`);

  console.log(`\n${formatReport(results)}`);
  console.log(`raw results: ${resultsFile}`);
  const failed = results.steps.filter((step) => step.error);
  if (failed.length > 0) {
    console.error(`${failed.length} step(s) failed; see the error fields in ${resultsFile}`);
    process.exitCode = 1;
  }
}

await main().catch(async (error) => {
  console.error(error.stack ?? String(error));
  await stopServices();
  process.exitCode = 1;
});
