// Bounded load of manifest HEAD requests from Node's fetch (undici, keep-alive).
// NOTE: Debian's wrk 4.1.0 is not used because it counts no HEAD request
// whose response has a non-zero Content-Length. Its HTTP parser waits for a
// body that never comes, and a registry sends the manifest's length on HEAD.
// A 3 s run of wrk counted 0 requests against both registries.

import { performance } from "node:perf_hooks";

/**
 * The Accept values that Docker Engine 20.10.24 sent on its manifest HEAD
 * when it pulled a tag, captured from the request. Docker sent them as six
 * header lines, which HTTP treats the same as one comma-separated line.
 */
export const dockerManifestAccept = [
  "application/json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.v1+prettyjws",
].join(", ");

/** Returns no headers, for a registry that needs no authentication. */
const anonymous = async () => ({});

/**
 * Sends one HEAD and returns its status, to check the target before loading
 * it. `authorization` returns the headers that authenticate the request.
 */
export async function headStatus(url, authorization = anonymous) {
  const response = await fetch(url, { method: "HEAD", headers: { Accept: dockerManifestAccept, ...(await authorization()) } });
  return response.status;
}

/**
 * Runs `connections` concurrent loops of `HEAD url` for `seconds`, each loop
 * sending its next request when the previous response has arrived.
 * `authorization` returns the headers that authenticate each request, such
 * as `RegistryToken.headers`. Returns the request rate, the count of error
 * statuses (400 and above) and of failed requests, and latency percentiles
 * in milliseconds.
 */
export async function loadHead(url, { seconds, connections, authorization = anonymous }) {
  const deadline = performance.now() + seconds * 1000;
  const latencies = [];
  let errorStatuses = 0;
  let failedRequests = 0;
  const loop = async () => {
    while (performance.now() < deadline) {
      const started = performance.now();
      try {
        const response = await fetch(url, { method: "HEAD", headers: { Accept: dockerManifestAccept, ...(await authorization()) } });
        await response.body?.cancel();
        if (response.status >= 400) errorStatuses++;
      } catch {
        failedRequests++;
      }
      latencies.push(performance.now() - started);
    }
  };

  const started = performance.now();
  await Promise.all(Array.from({ length: connections }, loop));
  const elapsedSeconds = (performance.now() - started) / 1000;

  latencies.sort((a, b) => a - b);
  const percentile = (p) => (latencies.length === 0 ? null : latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]);
  return {
    tool: `node fetch (undici), Node ${process.version}`,
    connections,
    seconds: elapsedSeconds,
    requests: latencies.length,
    requestsPerSecond: latencies.length / elapsedSeconds,
    errorStatuses,
    failedRequests,
    latencyMs: { p50: percentile(50), p90: percentile(90), p99: percentile(99) },
  };
}
