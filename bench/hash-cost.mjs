// Measures the per-byte CPU cost of the upload path's own code in Node: the
// BlobHasher of src/storage/hashing.ts (sha256, sha1 and md5 in JavaScript)
// and the PartAssembler of src/storage/part-assembler.ts, over bytes held in
// memory. Each case runs in a fresh Node process, so JIT feedback from one
// case cannot change the next. A profiled run of BlobHasher splits its CPU
// time by source file. Prints one JSON object on stdout. Run with Node 22,
// which strips the TypeScript types:
//   node bench/hash-cost.mjs [--mib 1024] [--chunk-kib 64] [--part-mib 8] [--project DIR]

import { execFile } from "node:child_process";
import { createHash, randomFillSync } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { registerHooks } from "node:module";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { parseArgs, promisify } from "node:util";

const execFileAsync = promisify(execFile);
const MiB = 1024 * 1024;
const { values } = parseArgs({
  options: {
    mib: { type: "string", default: "1024" },
    "chunk-kib": { type: "string", default: "64" },
    "part-mib": { type: "string", default: "8" },
    "profile-mib": { type: "string", default: "256" },
    project: { type: "string", default: fileURLToPath(new URL("..", import.meta.url)) },
    case: { type: "string" },
  },
});
// The project's sources import each other without a file extension, as the Worker's bundler allows.
// Node's ESM loader requires one, so a relative import that is not found is retried with ".ts".
registerHooks({
  resolve(specifier, context, nextResolve) {
    try {
      return nextResolve(specifier, context);
    } catch (error) {
      const retry = error.code === "ERR_MODULE_NOT_FOUND" && specifier.startsWith(".") && context.parentURL?.endsWith(".ts");
      if (!retry) throw error;
      return nextResolve(`${specifier}.ts`, context);
    }
  },
});

// The benchmark passes its snapshot of the project, so that this measures the same code that wrangler serves.
const { BlobHasher } = await import(join(values.project, "src/storage/hashing.ts"));
const { PartAssembler } = await import(join(values.project, "src/storage/part-assembler.ts"));
const totalBytes = Number(values.mib) * MiB;
const chunkBytes = Number(values["chunk-kib"]) * 1024;
const partBytes = Number(values["part-mib"]) * MiB;

/** Random bytes that every case walks again and again, made before any clock starts. */
const source = randomFillSync(new Uint8Array(Math.min(64 * MiB, totalBytes)));

/** Yields `totalBytes` in request-body-sized views of `source`. */
function* chunks() {
  for (let fed = 0; fed < totalBytes; fed += chunkBytes) {
    const offset = fed % source.byteLength;
    yield source.subarray(offset, Math.min(offset + chunkBytes, source.byteLength, offset + totalBytes - fed));
  }
}

const cases = {
  "blob-hasher": {
    label: "BlobHasher: sha256+sha1+md5 in JavaScript",
    work: () => {
      const hasher = new BlobHasher();
      for (const chunk of chunks()) hasher.update(chunk);
      hasher.finish();
    },
  },
  "node-crypto": {
    label: "sha256+sha1+md5 through node:crypto (OpenSSL), for comparison",
    work: () => {
      const hashes = ["sha256", "sha1", "md5"].map((algorithm) => createHash(algorithm));
      for (const chunk of chunks()) for (const hash of hashes) hash.update(chunk);
      for (const hash of hashes) hash.digest();
    },
  },
  "part-assembler": {
    label: `PartAssembler: ${partBytes / MiB} MiB parts, each upload a no-op`,
    work: async () => {
      const assembler = new PartAssembler(partBytes, async () => {});
      for (const chunk of chunks()) await assembler.push(chunk);
      await assembler.takeRemainder();
    },
  },
};

/** Runs one case in this process and returns its wall and CPU time. */
async function measure(name) {
  const selected = cases[name];
  if (!selected) throw new Error(`unknown case ${name}; valid cases: ${Object.keys(cases).join(", ")}`);
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  await selected.work();
  const wallSeconds = (performance.now() - wallBefore) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  return {
    case: name,
    label: selected.label,
    wallSeconds,
    cpuSeconds,
    cpuSecondsPerGiB: cpuSeconds / (totalBytes / (1024 * MiB)),
    mibPerSecond: totalBytes / MiB / wallSeconds,
  };
}

function runCase(name, mib, extraNodeArgs = []) {
  const args = [
    ...process.execArgv,
    ...extraNodeArgs,
    fileURLToPath(import.meta.url),
    ...["--case", name, "--mib", String(mib), "--chunk-kib", values["chunk-kib"], "--part-mib", values["part-mib"], "--project", values.project],
  ];
  return execFileAsync(process.execPath, args, { maxBuffer: 1024 * 1024 });
}

/** Sums a V8 CPU profile's self time by source file, largest share first. */
function selfTimeByFile(profile) {
  const fileOf = new Map(profile.nodes.map((node) => [node.id, basename(node.callFrame.url) || node.callFrame.functionName || "(unknown)"]));
  const micros = new Map();
  profile.samples.forEach((nodeId, i) => {
    const file = fileOf.get(nodeId);
    micros.set(file, (micros.get(file) ?? 0) + profile.timeDeltas[i]);
  });
  const total = [...micros.values()].reduce((sum, value) => sum + value, 0);
  return [...micros.entries()]
    .map(([file, value]) => ({ file, share: value / total }))
    .sort((a, b) => b.share - a.share)
    .filter((entry) => entry.share >= 0.005);
}

async function profileBlobHasher(mib) {
  const dir = await mkdtemp(join(tmpdir(), "hash-profile-"));
  try {
    await runCase("blob-hasher", mib, ["--cpu-prof", `--cpu-prof-dir=${dir}`]);
    const [file] = (await readdir(dir)).filter((name) => name.endsWith(".cpuprofile"));
    return selfTimeByFile(JSON.parse(await readFile(join(dir, file), "utf8")));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (values.case) {
  console.log(JSON.stringify(await measure(values.case)));
} else {
  const results = [];
  for (const name of Object.keys(cases)) {
    const { stdout } = await runCase(name, values.mib);
    results.push(JSON.parse(stdout));
  }
  const blobHasherProfile = { mib: Number(values["profile-mib"]), selfTimeByFile: await profileBlobHasher(values["profile-mib"]) };
  console.log(JSON.stringify({ node: process.version, totalBytes, chunkBytes, partBytes, results, blobHasherProfile }));
}
