// A V8 CPU profile of the Worker's isolate during one blob upload, taken
// through wrangler's DevTools proxy. It covers the JavaScript of the Worker
// and its Durable Objects. Miniflare's R2 and D1 simulators run as other
// services in workerd, so they are not in it, and neither is workerd's own
// C++ work outside JavaScript. Both show only in the process CPU time.

import { createHash, randomFillSync } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { SourceMap } from "node:module";
import { join } from "node:path";
import { RegistryToken } from "./registry-token.mjs";

/** A DevTools protocol session over a WebSocket, with replies matched to requests by id. */
class DevToolsSession {
  #socket;
  #nextId = 1;
  #pending = new Map();

  static async open(url) {
    // wrangler's proxy rejects an upgrade without a local Origin, as a browser page on another site would send.
    const socket = new WebSocket(url, { headers: { Origin: "http://127.0.0.1" } });
    await new Promise((resolve, reject) => {
      socket.addEventListener("open", resolve, { once: true });
      socket.addEventListener("error", () => reject(new Error(`DevTools WebSocket ${url} failed to open`)), { once: true });
    });
    return new DevToolsSession(socket);
  }

  constructor(socket) {
    this.#socket = socket;
    socket.addEventListener("message", (event) => {
      const message = JSON.parse(String(event.data));
      const waiter = message.id === undefined ? undefined : this.#pending.get(message.id);
      if (!waiter) return; // An event, or a reply to wrangler's own requests.
      this.#pending.delete(message.id);
      // workerd replies to a method that returns nothing, such as Profiler.start, with a copy of the request and no result.
      if (message.error) waiter.reject(new Error(`${waiter.method} failed: ${message.error.message}`));
      else waiter.resolve(message.result ?? {});
    });
  }

  /** Sends one request and waits for its reply, at most `timeoutMs`. */
  send(method, params = {}, timeoutMs = 60_000) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${method} got no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      const settle = (callback) => (value) => {
        clearTimeout(timer);
        callback(value);
      };
      this.#pending.set(id, { method, resolve: settle(resolve), reject: settle(reject) });
      this.#socket.send(JSON.stringify({ id, method, params }));
    });
  }

  close() {
    this.#socket.close();
  }
}

/** Loads the source map of the newest bundle that wrangler dev built in `projectDir`. */
async function loadBundleSourceMap(projectDir) {
  const tmp = join(projectDir, ".wrangler", "tmp");
  const builds = await Promise.all((await readdir(tmp)).map(async (name) => ({ name, modified: (await stat(join(tmp, name))).mtimeMs })));
  const newest = builds.filter((build) => build.name.startsWith("dev-")).sort((a, b) => b.modified - a.modified)[0];
  if (!newest) throw new Error(`no wrangler dev build in ${tmp}`);
  return new SourceMap(JSON.parse(await readFile(join(tmp, newest.name, "index.js.map"), "utf8")));
}

/**
 * Names the module a profiled function comes from: its path in the project,
 * or its path inside node_modules for a dependency. Frames without a
 * location, such as "(garbage collector)", keep their V8 name.
 */
function moduleOf(callFrame, sourceMap) {
  if (callFrame.url !== "index.js") return callFrame.url || callFrame.functionName || "(unknown)";
  const { originalSource } = sourceMap.findEntry(callFrame.lineNumber, callFrame.columnNumber);
  if (!originalSource) return "index.js (unmapped)";
  const path = originalSource.replace(/^file:\/\//, "");
  const dependency = path.lastIndexOf("node_modules/");
  if (dependency !== -1) return path.slice(dependency + "node_modules/".length);
  return path.replace(/^(\.\.\/)+/, "").replace(/^.*\/project\//, "");
}

/** Sums a V8 CPU profile's samples by source module. Idle time is kept apart from busy time. */
function summariseProfile(profile, sourceMap) {
  const labelOf = new Map(profile.nodes.map((node) => [node.id, moduleOf(node.callFrame, sourceMap)]));
  const micros = new Map();
  profile.samples.forEach((nodeId, i) => {
    const label = labelOf.get(nodeId);
    micros.set(label, (micros.get(label) ?? 0) + profile.timeDeltas[i]);
  });
  const idleSeconds = (micros.get("(idle)") ?? 0) / 1e6;
  micros.delete("(idle)");
  const busySeconds = [...micros.values()].reduce((sum, value) => sum + value, 0) / 1e6;
  const byFile = [...micros.entries()]
    .map(([file, value]) => ({ file, seconds: value / 1e6, shareOfBusy: value / 1e6 / busySeconds }))
    .sort((a, b) => b.seconds - a.seconds)
    .filter((entry) => entry.shareOfBusy >= 0.005);
  return { busySeconds, idleSeconds, byFile };
}

/**
 * Uploads `bytes` as one blob: POST to open a session, one PATCH with the
 * whole body, PUT with the digest. Each request sends `token`.
 */
async function uploadBlob(baseUrl, name, bytes, token) {
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  const opened = await fetch(`${baseUrl}/v2/${name}/blobs/uploads/`, { method: "POST", headers: await token.headers() });
  if (opened.status !== 202) throw new Error(`POST upload returned ${opened.status}`);
  const patched = await fetch(new URL(opened.headers.get("Location"), baseUrl), {
    method: "PATCH",
    headers: { "Content-Type": "application/octet-stream", ...(await token.headers()) },
    body: bytes,
  });
  if (patched.status !== 202) throw new Error(`PATCH upload returned ${patched.status}: ${await patched.text()}`);
  const commitUrl = new URL(patched.headers.get("Location"), baseUrl);
  commitUrl.searchParams.set("digest", digest);
  const committed = await fetch(commitUrl, { method: "PUT", headers: await token.headers() });
  if (committed.status !== 201) throw new Error(`PUT upload returned ${committed.status}: ${await committed.text()}`);
}

/**
 * Profiles the Worker's isolate while one blob of `mib` MiB is uploaded
 * with a push token. The first token is fetched before the profiler starts,
 * so the profile leaves out the password check of the token request.
 * `measureCpu` runs a function and returns the process CPU seconds it took,
 * so the profile's busy time can be set against the processes' time.
 */
export async function profileUpload(server, { mib, measureCpu }) {
  const name = "docker-local/bench/profiled-upload";
  const bytes = randomFillSync(Buffer.alloc(mib * 1024 * 1024));
  const token = new RegistryToken(server.url, server.adminCredentials, name, ["pull", "push"]);
  await token.headers();
  const session = await DevToolsSession.open(`ws://127.0.0.1:${server.inspectorPort}/ws`);
  try {
    await session.send("Profiler.enable");
    await session.send("Profiler.start");
    const { wallSeconds, cpuSeconds } = await measureCpu(() => uploadBlob(server.url, name, bytes, token));
    const { profile } = await session.send("Profiler.stop");
    return { mib, wallSeconds, cpuSeconds, profile: summariseProfile(profile, await loadBundleSourceMap(server.projectDir)) };
  } finally {
    session.close();
  }
}
