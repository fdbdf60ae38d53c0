import { RegistryError } from "../errors";
import { log } from "../log";
import type { RemoteSettingsRow } from "../storage/metadata";

/** Media types sent in Accept when a manifest is fetched upstream, so the upstream returns the stored form unchanged. */
export const manifestMediaTypes = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];

/** Upstream manifest requests that take longer than this, body included, fail as if the upstream were unreachable. */
export const manifestTimeoutMs = 30_000;

/**
 * Sends GET and HEAD requests to the upstream registry of a remote repository.
 * On a 401 with a Bearer challenge it fetches a token for
 * `repository:<path>:pull` from the challenge's realm and retries once.
 */
export class UpstreamClient {
  readonly #baseUrl: string;
  /** The image path upstream, such as `library/alpine`. */
  readonly path: string;

  constructor(settings: RemoteSettingsRow, localPath: string) {
    this.#baseUrl = settings.url.replace(/\/+$/, "");
    this.path = settings.docker_hub === 1 && !localPath.includes("/") ? `library/${localPath}` : localPath;
  }

  /**
   * Fetches `/v2/<path>/<suffix>` upstream, such as `manifests/latest` or `blobs/sha256:…`.
   * With `timeoutMs`, the request and the reading of its body are aborted after that many milliseconds.
   */
  async get(suffix: string, accept?: string, timeoutMs?: number): Promise<Response> {
    return this.#request("GET", suffix, accept, timeoutMs);
  }

  /** Sends HEAD for `/v2/<path>/<suffix>` upstream, with the same Accept, token and timeout handling as `get`. */
  async head(suffix: string, accept?: string, timeoutMs?: number): Promise<Response> {
    return this.#request("HEAD", suffix, accept, timeoutMs);
  }

  async #request(method: "GET" | "HEAD", suffix: string, accept?: string, timeoutMs?: number): Promise<Response> {
    const url = `${this.#baseUrl}/v2/${this.path}/${suffix}`;
    const headers = new Headers();
    if (accept) headers.set("Accept", accept);
    const signal = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs);

    // NOTE: a token is fetched again for every upstream request, because tokens are not cached for their lifetime.
    const first = await this.#send(url, { method, headers, signal });
    if (first.status !== 401) return first;
    const challenge = parseBearerChallenge(first.headers.get("WWW-Authenticate"));
    if (!challenge) return first;

    await first.body?.cancel();
    const token = await this.#fetchToken(challenge);
    headers.set("Authorization", `Bearer ${token}`);
    return this.#send(url, { method, headers, signal });
  }

  async #send(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, init);
    } catch (error) {
      log.warn("upstream request failed", { url, error: String(error) });
      throw upstreamUnavailable(`request to the upstream registry at ${this.#baseUrl} failed`);
    }
  }

  async #fetchToken(challenge: BearerChallenge): Promise<string> {
    const tokenUrl = new URL(challenge.realm);
    if (challenge.service) tokenUrl.searchParams.set("service", challenge.service);
    tokenUrl.searchParams.set("scope", `repository:${this.path}:pull`);

    const response = await this.#send(tokenUrl.toString(), {});
    if (!response.ok) {
      await response.body?.cancel();
      throw upstreamUnavailable(`the upstream token endpoint ${tokenUrl.origin}${tokenUrl.pathname} returned ${response.status}`);
    }
    const body = (await response.json().catch(() => null)) as { token?: unknown; access_token?: unknown } | null;
    const token = body?.token ?? body?.access_token;
    if (typeof token !== "string" || token === "") {
      throw upstreamUnavailable(`the upstream token endpoint ${tokenUrl.origin}${tokenUrl.pathname} returned no token`);
    }
    return token;
  }
}

interface BearerChallenge {
  realm: string;
  service: string | null;
}

/** Parses `Bearer realm="…",service="…"` (RFC 6750). Returns null for any other scheme or a challenge without an http or https realm. */
export function parseBearerChallenge(header: string | null): BearerChallenge | null {
  if (!header || !/^bearer\s/i.test(header)) return null;
  const parameters = new Map<string, string>();
  for (const match of header.slice(7).matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) {
    parameters.set(match[1]!.toLowerCase(), match[2]!);
  }
  const realm = parameters.get("realm");
  if (!realm || !/^https?:\/\//.test(realm)) return null;
  return { realm, service: parameters.get("service") ?? null };
}

/** Builds the 503 UNAVAILABLE that a client gets when the upstream registry cannot serve a cache miss. */
export function upstreamUnavailable(message: string): RegistryError {
  return new RegistryError("UNAVAILABLE", message);
}

/**
 * Parses a Retry-After header (RFC 9110), either delay seconds or an HTTP date,
 * into the Unix time in seconds after which a request may be sent again.
 * A missing or invalid header yields `now + fallbackSeconds`.
 */
export function parseRetryAfter(header: string | null, now: number, fallbackSeconds: number): number {
  const value = header?.trim() ?? "";
  if (/^\d+$/.test(value)) return now + Number(value);
  const date = Date.parse(value);
  if (!Number.isNaN(date)) return Math.max(now, Math.ceil(date / 1000));
  return now + fallbackSeconds;
}
