// The pull-through cache step times docker pulls of one image from four
// sources: directly from docker-registry, through a remote repository of Edge
// Registry whose upstream is that docker-registry (first with an empty cache,
// then with a filled one), and from the local repository of Edge Registry that
// the image was pushed to. docker-registry's access log lists the requests
// that reached it during each pull, which shows whether the cache was cold or
// warm.

import { readFile, stat } from "node:fs/promises";
import { authorizationHeaders, delay } from "../../test/e2e/harness.ts";

/**
 * Seconds a cached tag counts as fresh in the benchmark's remote
 * repositories. A run takes far less, so a warm pull sends no HEAD upstream
 * to revalidate the tag.
 */
const tagCacheSeconds = 3600;

/** The kinds of pull, in the order that each repetition runs them. */
export const pullKinds = [
  { step: "pull-direct", registry: "reference", label: "direct from docker-registry" },
  { step: "pull-remote-cold", registry: "ours", label: "remote repository, cold cache" },
  { step: "pull-remote-warm", registry: "ours", label: "remote repository, warm cache" },
  { step: "pull-local", registry: "ours", label: "local repository of Edge Registry" },
];

/** An access log line of docker-registry: client, identity, user, [time], "method path protocol", status, size, "referer", "user agent". */
const accessLogLine = /^\S+ \S+ \S+ \[[^\]]+\] "([A-Z]+) (\S+) HTTP\/[\d.]+" (\d{3}) \S+ "[^"]*" "([^"]*)"$/;

/** Creates a remote repository whose upstream is `upstreamUrl`, as the administrator. Raises unless the API returns 201. */
async function createRemoteRepository(registry, key, upstreamUrl) {
  const response = await fetch(`${registry.baseUrl}/api/v1/repositories`, {
    method: "POST",
    headers: { ...authorizationHeaders(registry.credentials), "Content-Type": "application/json" },
    body: JSON.stringify({ key, type: "remote", url: upstreamUrl, tagCacheSeconds }),
  });
  const body = await response.text();
  if (response.status !== 201)
    throw new Error(`POST /api/v1/repositories for remote repository ${key} returned ${response.status}, expected 201: ${body}`);
}

/**
 * Returns the digests of the config and the layers of a manifest that
 * docker-registry serves, which are the blobs a pull downloads, and their
 * total size in bytes.
 */
async function describeBlobs(baseUrl, name, tag) {
  const response = await fetch(`${baseUrl}/v2/${name}/manifests/${tag}`, {
    headers: { Accept: "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json" },
  });
  if (!response.ok) throw new Error(`GET manifest ${name}:${tag} from ${baseUrl} returned ${response.status}`);
  const manifest = await response.json();
  const blobs = [manifest.config, ...manifest.layers];
  return { digests: blobs.map((blob) => blob.digest), bytes: blobs.reduce((sum, blob) => sum + blob.size, 0) };
}

/** Returns the requests in the access log lines that docker-registry wrote after byte `offset` of its log file. */
async function readRequestsSince(logFile, offset) {
  const text = (await readFile(logFile)).subarray(offset).toString("utf8");
  const requests = [];
  for (const line of text.split("\n")) {
    const match = accessLogLine.exec(line.trim());
    if (match) requests.push({ method: match[1], path: match[2], status: Number(match[3]), userAgent: match[4] });
  }
  return requests;
}

/** Counts docker-registry's requests by kind: blob GETs, manifest GETs and HEADs, and all of them. */
function countRequests(requests) {
  return {
    total: requests.length,
    blobGets: requests.filter((request) => request.method === "GET" && request.path.includes("/blobs/")).length,
    manifestRequests: requests.filter((request) => request.path.includes("/manifests/")).length,
    userAgents: [...new Set(requests.map((request) => request.userAgent))],
  };
}

/**
 * Returns why the requests that reached docker-registry during a pull do not
 * match the pull's kind, or null when they do. A cold pull must fetch every
 * blob upstream. A warm pull and a local pull must send no request at all.
 */
function checkUpstreamRequests(step, requests, digests) {
  if (step === "pull-remote-cold") {
    const fetched = new Set(requests.filter((request) => request.method === "GET").map((request) => request.path.split("/blobs/")[1]));
    const missing = digests.filter((digest) => !fetched.has(digest));
    if (missing.length === 0) return null;
    return `the cold pull fetched only ${digests.length - missing.length} of the image's ${digests.length} blobs from docker-registry`;
  }
  if ((step === "pull-remote-warm" || step === "pull-local") && requests.length > 0) {
    const listed = requests.map((request) => `${request.method} ${request.path}`).slice(0, 3);
    return `docker-registry received ${requests.length} request(s) during a pull that should send none upstream, such as ${listed.join(", ")}`;
  }
  return null;
}

/**
 * Times docker pulls of the image that benchmarkDocker pushed as `name` to
 * both registries: directly from docker-registry, through a new remote
 * repository of Edge Registry with docker-registry as its upstream (cold,
 * then warm), and from Edge Registry's local repository. Each repetition
 * runs the four pulls in turn with a new remote repository, so that slow
 * phases of the shared machine affect all four kinds alike.
 *
 * `context` is run.mjs's benchmark context with `timeStep(record, work)`,
 * the `reference` ReferenceRegistry and the `tag` and `timeoutMs` of a pull.
 */
export async function benchmarkPullThrough(context, image, name, repetitions) {
  const { docker, registries, reference, steps, tag, timeoutMs } = context;
  const ours = registries.find((registry) => registry.id === "ours");
  const { digests, bytes } = await describeBlobs(reference.url, name, tag);

  for (let repetition = 1; repetition <= repetitions; repetition++) {
    const remoteKey = `bench-remote-${image.id}-${repetition}`;
    await createRemoteRepository(ours, remoteKey, reference.url);
    const references = {
      "pull-direct": `${reference.host}/${name}:${tag}`,
      "pull-remote-cold": `${ours.host}/${remoteKey}/${name}:${tag}`,
      "pull-remote-warm": `${ours.host}/${remoteKey}/${name}:${tag}`,
      "pull-local": `${ours.host}/${name}:${tag}`,
    };

    for (const kind of pullKinds) {
      const pulled = references[kind.step];
      console.log(`docker pull ${image.label}, ${kind.label}, repetition ${repetition} of ${repetitions}`);
      const record = {
        image: image.id,
        client: "docker",
        step: kind.step,
        registry: kind.registry,
        repetition,
        imageReference: pulled,
        bytes,
      };
      const logOffset = (await stat(reference.logFile)).size;
      await context.timeStep(record, () => docker.docker(["pull", pulled], { timeoutMs }));

      // docker-registry writes an access log line once it has sent a response, so the last line may lag the pull slightly.
      await delay(500);
      const requests = await readRequestsSince(reference.logFile, logOffset);
      record.registryRequests = countRequests(requests);
      const problem = record.error ? null : checkUpstreamRequests(kind.step, requests, digests);
      if (problem) {
        record.error = `upstream check failed: ${problem}`;
        console.error(`  ${record.error}`);
      }
      steps.push(record);

      // Removing the only tag removes the image and its layers, so the next pull downloads all of them again.
      await docker.tryDocker(["rmi", "-f", pulled]);
    }
  }
}
