// Derived figures and Markdown tables from one benchmark run's raw results.

import { pullKinds } from "./pull-through.mjs";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** CPU groups measured as separate processes. workerdProxy is part of workerd, so sums leave it out. */
const separateGroups = ["workerd", "wranglerNode", "dockerRegistry", "dockerEngine", "client", "benchProcess"];

/** Returns the machine's busy CPU seconds that none of the measured processes used. */
function otherCpuSeconds(cpuSeconds) {
  if (cpuSeconds?.machine === undefined) return undefined;
  const measured = separateGroups.reduce((sum, group) => sum + (cpuSeconds[group] ?? 0), 0);
  return Math.max(0, cpuSeconds.machine - measured);
}

function findStep(steps, image, client, step, registry) {
  return steps.find((entry) => entry.image === image && entry.client === client && entry.step === step && entry.registry === registry);
}

/** Sums each CPU group over the steps that succeeded, with the GiB those steps moved. */
function cpuPerGiB(steps) {
  const usable = steps.filter((step) => !step.error && step.bytes);
  const gib = usable.reduce((sum, step) => sum + step.bytes, 0) / GiB;
  const seconds = {};
  for (const step of usable) {
    const withOther = { ...step.cpuSeconds, other: otherCpuSeconds(step.cpuSeconds) };
    for (const [group, value] of Object.entries(withOther)) seconds[group] = (seconds[group] ?? 0) + (value ?? 0);
  }
  const perGiB = Object.fromEntries(Object.entries(seconds).map(([group, value]) => [group, gib > 0 ? value / gib : null]));
  return { steps: usable.length, gib, cpuSeconds: seconds, cpuSecondsPerGiB: perGiB };
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * Returns, for each image and kind of pull of the pull-through step, the
 * median seconds of the repetitions that succeeded and its ratio to the
 * median of the direct pulls from docker-registry.
 */
function summarisePullThrough(results) {
  const steps = results.steps ?? [];
  const rows = [];
  for (const image of results.images ?? []) {
    const byKind = pullKinds.map((kind) => {
      const runs = steps.filter((step) => step.image === image.id && step.step === kind.step);
      const seconds = runs.filter((step) => !step.error).map((step) => step.seconds);
      return {
        image: image.id,
        imageLabel: image.label,
        step: kind.step,
        label: kind.label,
        bytes: runs.find((step) => step.bytes)?.bytes ?? null,
        runs: runs.length,
        succeeded: seconds.length,
        seconds,
        medianSeconds: seconds.length > 0 ? median(seconds) : null,
        registryRequests: runs.map((step) => step.registryRequests ?? null),
        errors: runs.map((step) => step.error).filter(Boolean),
      };
    });
    const direct = byKind.find((row) => row.step === "pull-direct").medianSeconds;
    for (const row of byKind) {
      if (row.runs === 0) continue;
      rows.push({ ...row, ratioToDirect: direct && row.medianSeconds ? row.medianSeconds / direct : null });
    }
  }
  return rows;
}

/**
 * Pairs every step of this registry with the same step of the reference and
 * adds the CPU seconds per GiB of pushes and pulls.
 */
export function summarise(results) {
  const steps = results.steps ?? [];
  const comparisons = [];
  for (const image of results.images ?? []) {
    for (const client of ["docker", "skopeo"]) {
      for (const step of ["push", "pull"]) {
        const ours = findStep(steps, image.id, client, step, "ours");
        const reference = findStep(steps, image.id, client, step, "reference");
        if (!ours || !reference) continue;
        const bytes = ours.bytes ?? reference.bytes ?? null;
        comparisons.push({
          image: image.id,
          imageLabel: image.label,
          client,
          step,
          bytes,
          oursSeconds: ours.seconds ?? null,
          referenceSeconds: reference.seconds ?? null,
          ratio: ours.seconds && reference.seconds ? ours.seconds / reference.seconds : null,
          oursMiBPerSecond: bytes && ours.seconds ? bytes / MiB / ours.seconds : null,
          referenceMiBPerSecond: bytes && reference.seconds ? bytes / MiB / reference.seconds : null,
          errors: [ours.error, reference.error].filter(Boolean),
          wranglerReloads: ours.wranglerReloads ?? 0,
        });
      }
    }
  }

  const select = (registry, step, client) =>
    steps.filter((entry) => entry.registry === registry && entry.step === step && (!client || entry.client === client));
  return {
    comparisons,
    pullThrough: summarisePullThrough(results),
    cpu: {
      oursPush: cpuPerGiB(select("ours", "push")),
      oursPushDocker: cpuPerGiB(select("ours", "push", "docker")),
      oursPushSkopeo: cpuPerGiB(select("ours", "push", "skopeo")),
      oursPull: cpuPerGiB(select("ours", "pull")),
      referencePush: cpuPerGiB(select("reference", "push")),
      referencePull: cpuPerGiB(select("reference", "pull")),
    },
  };
}

function fixed(value, digits = 1) {
  return value === null || value === undefined || Number.isNaN(value) ? "–" : value.toFixed(digits);
}

/** Returns the first line of an error message, cut to `length` characters, for a table cell. */
function shortError(message, length = 120) {
  const line = message.split("\n")[0].replaceAll("|", "/");
  return line.length > length ? `${line.slice(0, length)}…` : line;
}

function stepCell(row) {
  const notes = row.errors.map((error) => `failed: ${shortError(error)}`);
  if (row.wranglerReloads > 0) notes.push(`wrangler reloaded the Worker ${row.wranglerReloads}×`);
  return notes.length > 0 ? `${row.step} (${notes.join("; ")})` : row.step;
}

function table(header, rows) {
  return [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`, ...rows.map((row) => `| ${row.join(" | ")} |`)].join("\n");
}

function timesTable(comparisons) {
  return table(
    [
      "image",
      "client",
      "step",
      "MiB moved",
      "Edge Registry (s)",
      "docker-registry (s)",
      "ratio ours/reference",
      "Edge Registry MiB/s",
      "docker-registry MiB/s",
    ],
    comparisons.map((row) => [
      row.imageLabel,
      row.client,
      stepCell(row),
      fixed(row.bytes && row.bytes / MiB, 0),
      fixed(row.oursSeconds),
      fixed(row.referenceSeconds),
      fixed(row.ratio, 2),
      fixed(row.oursMiBPerSecond, 0),
      fixed(row.referenceMiBPerSecond, 0),
    ]),
  );
}

/** Formats the requests that docker-registry received in each repetition, such as "5 (5 blob GETs)". */
function requestsCell(registryRequests) {
  return registryRequests.map((requests) => (requests ? `${requests.total} (${requests.blobGets} blob GETs)` : "–")).join(", ");
}

function pullThroughTable(rows) {
  return table(
    [
      "image",
      "docker pull",
      "runs",
      "median s",
      "all runs s",
      "ratio to direct pull",
      "MiB/s",
      "requests docker-registry received, per run",
    ],
    rows.map((row) => {
      const notes = row.errors.map((error) => `failed: ${shortError(error)}`);
      return [
        row.imageLabel,
        notes.length > 0 ? `${row.label} (${notes.join("; ")})` : row.label,
        row.succeeded === row.runs ? row.runs : `${row.succeeded} of ${row.runs}`,
        fixed(row.medianSeconds),
        row.seconds.map((seconds) => fixed(seconds)).join(", ") || "–",
        fixed(row.ratioToDirect, 2),
        fixed(row.bytes && row.medianSeconds && row.bytes / MiB / row.medianSeconds, 0),
        requestsCell(row.registryRequests),
      ];
    }),
  );
}

function cpuTable(cpu) {
  const groups = [
    "workerd",
    "workerdProxy",
    "wranglerNode",
    "dockerRegistry",
    "dockerEngine",
    "client",
    "benchProcess",
    "other",
    "machine",
  ];
  const row = (label, entry) => [label, fixed(entry.gib, 2), ...groups.map((group) => fixed(entry.cpuSecondsPerGiB[group], 2))];
  return table(
    [
      "steps",
      "GiB",
      "workerd",
      "of which wrangler's proxy workerd",
      "wrangler node",
      "docker-registry",
      "dockerd+containerd",
      "docker CLI or skopeo",
      "bench process",
      "other processes",
      "whole machine",
    ],
    [
      row("pushes to Edge Registry, all", cpu.oursPush),
      row("pushes to Edge Registry, docker", cpu.oursPushDocker),
      row("pushes to Edge Registry, skopeo", cpu.oursPushSkopeo),
      row("pulls from Edge Registry", cpu.oursPull),
      row("pushes to docker-registry", cpu.referencePush),
      row("pulls from docker-registry", cpu.referencePull),
    ],
  );
}

function headTable(head) {
  return table(
    [
      "registry",
      "client",
      "authentication",
      "concurrency",
      "seconds",
      "requests/s",
      "p50 ms",
      "p99 ms",
      "errors",
      "server CPU ms per request",
      "other processes' CPU s",
    ],
    head.map((entry) => {
      // Runs recorded before authentication have no authentication field.
      const authentication = entry.authentication ?? "none";
      if (entry.error) return [entry.registry, "–", authentication, "–", "–", "–", "–", "–", shortError(entry.error), "–", "–"];
      const serverCpu =
        entry.registry === "ours" ? entry.cpuSeconds.workerd + entry.cpuSeconds.wranglerNode : entry.cpuSeconds.dockerRegistry;
      return [
        entry.registry,
        entry.tool,
        authentication,
        entry.connections,
        fixed(entry.seconds),
        fixed(entry.requestsPerSecond, 0),
        fixed(entry.latencyMs.p50, 2),
        fixed(entry.latencyMs.p99, 2),
        entry.errorStatuses + entry.failedRequests,
        entry.requests > 0 ? fixed((serverCpu / entry.requests) * 1000, 2) : "–",
        fixed(otherCpuSeconds(entry.cpuSeconds)),
      ];
    }),
  );
}

function hashingTables(hashing) {
  const cases = table(
    [`in-memory case (Node ${hashing.node}, ${hashing.chunkBytes / 1024} KiB chunks)`, "CPU s/GiB", "MiB/s"],
    hashing.results.map((entry) => [entry.label, fixed(entry.cpuSecondsPerGiB, 2), fixed(entry.mibPerSecond, 0)]),
  );
  const profile = table(
    ["BlobHasher self time by source file", "share"],
    hashing.blobHasherProfile.selfTimeByFile.map((entry) => [entry.file, `${(entry.share * 100).toFixed(1)} %`]),
  );
  return `${cases}\n\n${profile}`;
}

function workerProfileTable(workerProfile) {
  if (workerProfile.error) return `Worker profile: failed: ${shortError(workerProfile.error)}`;
  const { cpuSeconds, profile } = workerProfile;
  const workerProcess = cpuSeconds.workerd - cpuSeconds.workerdProxy;
  const lines = [
    `One ${workerProfile.mib} MiB blob upload (POST, one PATCH, PUT) in ${fixed(workerProfile.wallSeconds, 1)} s:`,
    `workerd CPU ${fixed(cpuSeconds.workerd, 2)} s, of which wrangler's proxy workerd ${fixed(cpuSeconds.workerdProxy, 2)} s and the Worker's workerd ${fixed(workerProcess, 2)} s;`,
    `the Worker isolate's JavaScript was busy ${fixed(profile.busySeconds, 2)} s in the V8 profile.`,
  ];
  const rows = profile.byFile.map((entry) => [entry.file, fixed(entry.seconds, 2), `${(entry.shareOfBusy * 100).toFixed(1)} %`]);
  return `${lines.join("\n")}\n\n${table(["Worker isolate self time by source file", "s", "share of busy"], rows)}`;
}

/** Lists the steps during which programs outside the benchmark used at least `minSeconds` of CPU. */
function interferenceTable(steps, minSeconds = 2) {
  const rows = steps
    .map((step) => ({ step, other: otherCpuSeconds(step.cpuSeconds) }))
    .filter(({ other }) => other !== undefined && other >= minSeconds)
    .map(({ step, other }) => {
      const busiest = (step.otherProcesses ?? []).map((entry) => `${entry.comm} ${entry.seconds.toFixed(1)} s`).join(", ");
      const repetition = step.repetition ? ` #${step.repetition}` : "";
      return [
        `${step.image} ${step.client} ${step.step}${repetition} ${step.registry}`,
        fixed(step.seconds),
        fixed(other),
        fixed(step.cpuSeconds.machine),
        busiest || "–",
      ];
    });
  if (rows.length === 0) return `No step saw more than ${minSeconds} CPU seconds used by other programs.`;
  return table(
    ["step", "wall s", "CPU s of other programs", "CPU s of the whole machine", "busiest other processes still running at the end"],
    rows,
  );
}

/** Formats the run as Markdown: times and ratios, pull-through times, CPU per GiB, HEAD rate and hashing cost. */
export function formatReport(results) {
  const { comparisons, pullThrough, cpu } = results.summary;
  const sections = [timesTable(comparisons)];
  // Runs recorded before the pull-through step have no pullThrough summary.
  if (pullThrough?.length > 0) sections.push(`docker pulls of the pull-through step:\n\n${pullThroughTable(pullThrough)}`);
  sections.push(`CPU seconds per GiB moved:\n\n${cpuTable(cpu)}`, interferenceTable(results.steps ?? []));
  if (results.head) sections.push(headTable(results.head));
  if (results.workerProfile) sections.push(workerProfileTable(results.workerProfile));
  if (results.hashing) sections.push(hashingTables(results.hashing));
  return sections.join("\n\n");
}
