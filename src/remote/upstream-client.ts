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

/**
 * Sends GET requests to the upstream registry of a remote repository. On a
 * 401 with a Bearer challenge it fetches a token for `repository:<path>:pull`
 * from the challenge's realm and retries once.
 */
export class UpstreamClient {
  readonly #baseUrl: string;
  /** The image path upstream, such as `library/alpine`. */
  readonly path: string;

  constructor(settings: RemoteSettingsRow, localPath: string) {
    this.#baseUrl = settings.url.replace(/\/+$/, "");
    this.path = settings.docker_hub === 1 && !localPath.includes("/") ? `library/${localPath}` : localPath;
  }

  /** Fetches `/v2/<path>/<suffix>` upstream, such as `manifests/latest` or `blobs/sha256:…`. */
  async get(suffix: string, accept?: string): Promise<Response> {
    const url = `${this.#baseUrl}/v2/${this.path}/${suffix}`;
    const headers = new Headers();
    if (accept) headers.set("Accept", accept);

    // NOTE: a token is fetched again for every upstream request, because tokens are not cached for their lifetime.
    const first = await this.#send(url, headers);
    if (first.status !== 401) return first;
    const challenge = parseBearerChallenge(first.headers.get("WWW-Authenticate"));
    if (!challenge) return first;

    await first.body?.cancel();
    const token = await this.#fetchToken(challenge);
    headers.set("Authorization", `Bearer ${token}`);
    return this.#send(url, headers);
  }

  async #send(url: string, headers: Headers): Promise<Response> {
    try {
      return await fetch(url, { headers });
    } catch (error) {
      log.warn("upstream request failed", { url, error: String(error) });
      throw upstreamUnavailable(`request to the upstream registry at ${this.#baseUrl} failed`);
    }
  }

  async #fetchToken(challenge: BearerChallenge): Promise<string> {
    const tokenUrl = new URL(challenge.realm);
    if (challenge.service) tokenUrl.searchParams.set("service", challenge.service);
    tokenUrl.searchParams.set("scope", `repository:${this.path}:pull`);

    const response = await this.#send(tokenUrl.toString(), new Headers());
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
