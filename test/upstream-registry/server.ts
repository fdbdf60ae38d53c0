import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { UpstreamBehaviour, UpstreamRegistryInfo } from "./types.ts";

const service = "upstream.test";
const username = "puller";
const password = "upstream-secret: with colon";
const manifestMediaType = "application/vnd.oci.image.manifest.v1+json";

/**
 * A minimal upstream registry for the remote repository tests, listening on
 * 127.0.0.1. Every image path serves the same image (manifest, config and
 * layer) under the tag `latest` and by digest, so each test picks a path of
 * its own and reads that path's request counts from `GET /_counts/<path>`.
 * Paths that start with `private-` need a Bearer token from `/token` and
 * return 401 with a challenge when it is missing. Paths that start with
 * `login-` need a Bearer token too, which `/token` issues only with Basic
 * credentials `username:password`, and their challenge also offers Basic.
 * Paths that start with `basic-` need Basic auth with those credentials.
 * Paths that start with `corrupt-` serve layer bytes that do not match the
 * layer digest. HEAD requests are counted under `HEAD <path>`, token requests
 * under `token:<scope>`. `POST /_behaviour/<path>` with a JSON
 * `UpstreamBehaviour` changes how that image path responds from then on.
 */
export class UpstreamRegistry {
  readonly info: UpstreamRegistryInfo;
  readonly #server: Server;

  private constructor(server: Server, info: UpstreamRegistryInfo) {
    this.#server = server;
    this.info = info;
  }

  /** Builds the image and starts the server on a free port. */
  static async start(): Promise<UpstreamRegistry> {
    const config = JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } });
    const layer = "layer content of the test upstream image\n".repeat(64);
    const configDigest = sha256Digest(config);
    const layerDigest = sha256Digest(layer);
    const manifest = JSON.stringify(
      {
        schemaVersion: 2,
        mediaType: manifestMediaType,
        config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: configDigest, size: Buffer.byteLength(config) },
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", digest: layerDigest, size: Buffer.byteLength(layer) }],
      },
      null,
      3,
    );
    const movedManifest = manifest.replace('"schemaVersion": 2,', '"schemaVersion": 2,\n   "annotations": { "test.moved": "true" },');
    const counts = new Map<string, number>();
    const behaviours = new Map<string, UpstreamBehaviour>();

    const server = createServer((request, response) => {
      const url = new URL(request.url ?? "/", "http://127.0.0.1");
      if (url.pathname.startsWith("/_counts/")) {
        const prefix = url.pathname.slice("/_counts/".length);
        const matching = [...counts].filter(([path]) => path.replace(/^HEAD /, "").startsWith(prefix));
        sendJson(response, 200, Object.fromEntries(matching));
        return;
      }
      if (url.pathname.startsWith("/_behaviour/") && request.method === "POST") {
        void readJson(request).then((behaviour) => {
          behaviours.set(url.pathname.slice("/_behaviour/".length), behaviour as UpstreamBehaviour);
          sendJson(response, 200, {});
        });
        return;
      }

      const path = url.pathname === "/token" ? `token:${url.searchParams.get("scope")}` : url.pathname.replace(/^\/v2\//, "");
      const counted = request.method === "HEAD" ? `HEAD ${path}` : path;
      counts.set(counted, (counts.get(counted) ?? 0) + 1);
      if (url.pathname === "/token") {
        sendToken(request, url, response, behaviours);
        return;
      }

      const match = /^\/v2\/(?<name>.+)\/(?<kind>manifests|blobs)\/(?<reference>[^/]+)$/.exec(url.pathname);
      if ((request.method !== "GET" && request.method !== "HEAD") || !match?.groups) {
        sendJson(response, 404, { errors: [{ code: "NOT_FOUND", message: `no endpoint at ${request.method} ${url.pathname}` }] });
        return;
      }
      const { name, kind, reference } = match.groups as { name: string; kind: string; reference: string };
      const behaviour = behaviours.get(name) ?? {};
      const realm = behaviour.realm ?? `http://127.0.0.1:${port()}/token`;
      const bearerChallenge = `Bearer realm="${realm}",service="${service}",scope="repository:${name}:pull"`;
      if (name.startsWith("private-") && !hasToken(request, name, behaviour)) {
        sendUnauthorized(response, bearerChallenge);
        return;
      }
      if (name.startsWith("login-") && !hasToken(request, name, behaviour)) {
        // Two challenges in one header, with a comma inside a quoted value and an upper-case scheme.
        sendUnauthorized(response, `Basic realm="upstream, test", ${bearerChallenge.replace("Bearer", "BEARER")}`);
        return;
      }
      if (name.startsWith("basic-") && request.headers.authorization !== basicAuthorization(username, password)) {
        sendUnauthorized(response, `Basic realm="upstream.test", charset="UTF-8"`);
        return;
      }

      if (behaviour.down) {
        request.socket.destroy();
        return;
      }
      if (behaviour.status !== undefined) {
        response.writeHead(behaviour.status, behaviour.retryAfter === undefined ? {} : { "Retry-After": behaviour.retryAfter });
        response.end();
        return;
      }

      const latest = behaviour.moved ? movedManifest : manifest;
      if (kind === "manifests" && (reference === "latest" || reference === sha256Digest(latest))) {
        sendContent(response, latest, { "Content-Type": manifestMediaType, "Docker-Content-Digest": sha256Digest(latest) });
      } else if (kind === "manifests" && reference === sha256Digest(manifest)) {
        sendContent(response, manifest, { "Content-Type": manifestMediaType, "Docker-Content-Digest": sha256Digest(manifest) });
      } else if (kind === "blobs" && reference === configDigest) {
        sendContent(response, config, { "Content-Type": "application/octet-stream", "Docker-Content-Digest": configDigest });
      } else if (kind === "blobs" && reference === layerDigest) {
        const content = name.startsWith("corrupt-") ? layer.toUpperCase() : layer;
        sendContent(response, content, { "Content-Type": "application/octet-stream", "Docker-Content-Digest": layerDigest });
      } else {
        const code = kind === "manifests" ? "MANIFEST_UNKNOWN" : "BLOB_UNKNOWN";
        sendJson(response, 404, { errors: [{ code, message: `${reference} is not in ${name}` }] });
      }
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", resolve);
    });
    const port = () => (server.address() as AddressInfo).port;

    return new UpstreamRegistry(server, {
      url: `http://127.0.0.1:${port()}`,
      service,
      username,
      password,
      manifest,
      manifestDigest: sha256Digest(manifest),
      movedManifest,
      movedManifestDigest: sha256Digest(movedManifest),
      manifestMediaType,
      config,
      configDigest,
      layer,
      layerDigest,
    });
  }

  /** Stops the server and closes its open connections. */
  async stop(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve, reject) => this.#server.close((error) => (error ? reject(error) : resolve())));
  }
}

/** Returns the token that the test token endpoint issues for pulling `name`; a new `tokenGeneration` revokes older tokens. */
function tokenFor(name: string, behaviour: UpstreamBehaviour): string {
  return `pull-token-for-${name}-generation-${behaviour.tokenGeneration ?? 0}`;
}

function hasToken(request: IncomingMessage, name: string, behaviour: UpstreamBehaviour): boolean {
  return request.headers.authorization === `Bearer ${tokenFor(name, behaviour)}`;
}

function basicAuthorization(user: string, secret: string): string {
  return `Basic ${Buffer.from(`${user}:${secret}`).toString("base64")}`;
}

function sendUnauthorized(response: ServerResponse, challenge: string): void {
  response.writeHead(401, { "Content-Type": "application/json", "WWW-Authenticate": challenge });
  response.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED", message: "authentication required" }] }));
}

/**
 * Issues a token for a `repository:<name>:pull` scope of the expected service,
 * and returns 400 for anything else. Names that start with `login-` get a
 * token only with the test credentials, and 401 without them.
 */
function sendToken(request: IncomingMessage, url: URL, response: ServerResponse, behaviours: Map<string, UpstreamBehaviour>): void {
  const scope = /^repository:(?<name>[^:]+):pull$/.exec(url.searchParams.get("scope") ?? "");
  if (url.searchParams.get("service") !== service || !scope?.groups) {
    sendJson(response, 400, { error: "expected service=upstream.test and scope=repository:<name>:pull" });
    return;
  }
  const name = scope.groups.name!;
  if (name.startsWith("login-") && request.headers.authorization !== basicAuthorization(username, password)) {
    sendJson(response, 401, { errors: [{ code: "UNAUTHORIZED", message: "invalid username or password" }] });
    return;
  }
  const behaviour = behaviours.get(name) ?? {};
  const body: Record<string, unknown> = { token: tokenFor(name, behaviour) };
  if (behaviour.tokenExpiresIn !== undefined) body.expires_in = behaviour.tokenExpiresIn;
  if (behaviour.tokenIssuedSecondsAgo !== undefined)
    body.issued_at = new Date(Date.now() - behaviour.tokenIssuedSecondsAgo * 1000).toISOString();
  sendJson(response, 200, body);
}

/** Sends `content`, or only its headers for a HEAD request. */
function sendContent(response: ServerResponse, content: string, headers: Record<string, string>): void {
  response.writeHead(200, { ...headers, "Content-Length": String(Buffer.byteLength(content)) });
  response.end(response.req.method === "HEAD" ? undefined : content);
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function sendJson(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "Content-Type": "application/json" });
  response.end(JSON.stringify(body));
}

function sha256Digest(content: string): string {
  return `sha256:${createHash("sha256").update(content).digest("hex")}`;
}
