import type { Env } from "../env";
import { RegistryError } from "../errors";
import { log } from "../log";
import { digestBytes } from "../storage/hashing";
import type { RemoteSettingsRow } from "../storage/metadata";
import { nowSeconds, recordUpstreamFailure, recordUpstreamSuccess } from "./cache-state";
import { decryptPassword, type UpstreamCredentials } from "./credentials";
import { cachedToken, cacheToken, defaultTokenSeconds, dropToken, tokenCacheKey } from "./token-cache";
import { parseWwwAuthenticate, type Challenge } from "./www-authenticate";

/** Media types sent in Accept when a manifest is fetched upstream, so the upstream returns the stored form unchanged. */
export const manifestMediaTypes = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
];

/** Redirects that one upstream request follows; the response to the next one is returned as it is. */
const maxRedirects = 5;

/** Upstream manifest requests that take longer than this, body included, fail as if the upstream were unreachable. */
export const manifestTimeoutMs = 30_000;

/**
 * Sends GET and HEAD requests to the upstream registry of a remote repository
 * and counts their failures towards its automatic offline period. On a 401 it
 * retries once: with a Bearer token for `repository:<path>:pull` from the
 * challenge's realm (cached for the token's lifetime), or with Basic auth when
 * the upstream sends a Basic challenge and the repository has credentials.
 */
export class UpstreamClient {
  readonly #env: Env;
  readonly #repositoryKey: string;
  readonly #baseUrl: string;
  readonly #credentials: UpstreamCredentials | null;
  /** Names the credentials in token cache keys: "anonymous", or the username with a hash of the password. */
  readonly #identity: string;
  /** Whether the repository may have a failure count or offline period to reset after a success. */
  #mayHaveFailures: boolean;
  /** The image path upstream, such as `library/alpine`. */
  readonly path: string;

  private constructor(env: Env, settings: RemoteSettingsRow, localPath: string, credentials: UpstreamCredentials | null, identity: string) {
    this.#env = env;
    this.#repositoryKey = settings.repository_key;
    this.#baseUrl = settings.url.replace(/\/+$/, "");
    this.#credentials = credentials;
    this.#identity = identity;
    this.#mayHaveFailures = settings.consecutive_failures > 0 || settings.offline_until !== null;
    this.path = settings.docker_hub === 1 && !localPath.includes("/") ? `library/${localPath}` : localPath;
  }

  /**
   * Creates the client of a remote repository, decrypting its upstream
   * password. A stored password that cannot be decrypted (CREDENTIALS_KEY
   * missing or rotated) fails closed: it logs an error and raises
   * UNAVAILABLE rather than pull anonymously.
   */
  static async open(env: Env, settings: RemoteSettingsRow, localPath: string): Promise<UpstreamClient> {
    if (settings.username === null || settings.password_ciphertext === null) {
      return new UpstreamClient(env, settings, localPath, null, "anonymous");
    }

    let password: string;
    try {
      password = await decryptPassword(env, settings.repository_key, settings.password_ciphertext);
    } catch (error) {
      log.error("decrypting the upstream password failed", { repository: settings.repository_key, error: String(error) });
      throw upstreamUnavailable(
        `the upstream password of remote repository '${settings.repository_key}' cannot be decrypted with the current CREDENTIALS_KEY; set it again`,
      );
    }
    const credentials = { username: settings.username, password };
    const passwordHash = await digestBytes("sha256", new TextEncoder().encode(password));
    return new UpstreamClient(env, settings, localPath, credentials, `${settings.username} ${passwordHash}`);
  }

  /**
   * Fetches `/v2/<path>/<suffix>` upstream, such as `manifests/latest` or `blobs/sha256:…`.
   * With `timeoutMs`, the request and the reading of its body are aborted after that many milliseconds.
   */
  async get(suffix: string, accept?: string, timeoutMs?: number): Promise<Response> {
    return this.#request("GET", suffix, accept, timeoutMs);
  }

  /** Sends HEAD for `/v2/<path>/<suffix>` upstream, with the same Accept, authentication and timeout handling as `get`. */
  async head(suffix: string, accept?: string, timeoutMs?: number): Promise<Response> {
    return this.#request("HEAD", suffix, accept, timeoutMs);
  }

  /**
   * Counts a failed upstream request (a connection error, a timeout, a 5xx or
   * a 429) and logs when the failure starts an automatic offline period.
   * The client calls it itself except when reading a response body fails.
   */
  async recordFailure(): Promise<void> {
    this.#mayHaveFailures = true;
    const state = await recordUpstreamFailure(this.#env.DB, this.#repositoryKey, nowSeconds());
    if (state?.offlineUntil == null || state.consecutiveFailures < state.failureThreshold) return;
    log.warn("remote repository is offline automatically", {
      repository: this.#repositoryKey,
      consecutiveFailures: state.consecutiveFailures,
      offlineUntil: new Date(state.offlineUntil * 1000).toISOString(),
    });
  }

  async #request(method: "GET" | "HEAD", suffix: string, accept?: string, timeoutMs?: number): Promise<Response> {
    const url = `${this.#baseUrl}/v2/${this.path}/${suffix}`;
    const headers = new Headers();
    if (accept) headers.set("Accept", accept);
    const signal = timeoutMs === undefined ? undefined : AbortSignal.timeout(timeoutMs);
    const scope = `repository:${this.path}:pull`;
    const tokenKey = tokenCacheKey(new URL(this.#baseUrl).origin, this.#identity, scope);
    const token = cachedToken(tokenKey);
    if (token) headers.set("Authorization", `Bearer ${token}`);

    // NOTE: Basic credentials are sent only after a 401, so every request to a Basic-protected upstream takes two round trips.
    const first = await this.#send(url, { method, headers, signal });
    if (first.status !== 401) return this.#counted(first);

    // A 401 despite a cached token means the upstream no longer accepts it, so it is dropped and fetched again once.
    if (token) dropToken(tokenKey);
    if (!this.#isUpstreamOrigin(first.url)) {
      // A challenge from the target of a cross-origin redirect could name a realm that would receive the credentials.
      log.warn("upstream redirect target returned 401, so its challenge is left unanswered", {
        repository: this.#repositoryKey,
        url: first.url,
      });
      return this.#counted(first);
    }
    const authorization = await this.#authorize(parseWwwAuthenticate(first.headers.get("WWW-Authenticate")), scope, tokenKey, signal);
    if (authorization === null) return this.#counted(first);

    await first.body?.cancel();
    headers.set("Authorization", authorization);
    return this.#counted(await this.#send(url, { method, headers, signal }));
  }

  /** Returns whether `url` is on the upstream's own origin. An empty or invalid URL is not. */
  #isUpstreamOrigin(url: string): boolean {
    return URL.canParse(url) && new URL(url).origin === new URL(this.#baseUrl).origin;
  }

  /** Counts the response as a failure (5xx or 429) or a success (anything else, 401 and 404 included). */
  async #counted(response: Response): Promise<Response> {
    if (response.status >= 500 || response.status === 429) {
      await this.#recordFailureOf(response.url, response.status);
    } else if (this.#mayHaveFailures) {
      this.#mayHaveFailures = false;
      if (await recordUpstreamSuccess(this.#env.DB, this.#repositoryKey)) {
        log.info("upstream request succeeded; failure count of the remote repository reset", { repository: this.#repositoryKey });
      }
    }
    return response;
  }

  async #recordFailureOf(url: string, status: number): Promise<void> {
    log.warn("upstream request failed", { repository: this.#repositoryKey, url, status });
    await this.recordFailure();
  }

  /**
   * Returns the Authorization value for the retry after a 401, or null when no
   * challenge can be handled. Bearer challenges are preferred, and a Basic
   * challenge is handled only with credentials.
   */
  async #authorize(challenges: Challenge[], scope: string, tokenKey: string, signal?: AbortSignal): Promise<string | null> {
    const bearer = challenges.find((challenge) => challenge.scheme === "bearer" && challenge.parameters.has("realm"));
    if (bearer) return `Bearer ${await this.#fetchToken(bearer, scope, tokenKey, signal)}`;

    const basic = challenges.some((challenge) => challenge.scheme === "basic");
    if (basic && this.#credentials) return basicAuthorization(this.#credentials);

    const schemes = challenges.map((challenge) => challenge.scheme);
    if (basic) log.warn("upstream requires Basic credentials, but the remote repository has none", { repository: this.#repositoryKey });
    else log.warn("upstream 401 has no Bearer or Basic challenge", { repository: this.#repositoryKey, schemes });
    return null;
  }

  /**
   * Sends one upstream request, following up to `maxRedirects` redirects
   * itself so that the Authorization header is dropped when a redirect leaves
   * the origin, as a blob redirect to a storage service does.
   */
  async #send(url: string, init: RequestInit & { headers?: Headers }): Promise<Response> {
    try {
      let target = new URL(url);
      let headers = init.headers ?? new Headers();
      for (let redirects = 0; ; redirects += 1) {
        const response = await fetch(target, { ...init, headers, redirect: "manual" });
        const location = response.headers.get("Location");
        if (response.status < 300 || response.status > 399 || location === null || redirects === maxRedirects) return response;

        await response.body?.cancel();
        const next = new URL(location, target);
        if (next.origin !== target.origin && headers.has("Authorization")) {
          headers = new Headers(headers);
          headers.delete("Authorization");
        }
        target = next;
      }
    } catch (error) {
      log.warn("upstream request failed", { repository: this.#repositoryKey, url, error: String(error) });
      await this.recordFailure();
      throw upstreamUnavailable(`request to the upstream registry at ${this.#baseUrl} failed`);
    }
  }

  /**
   * Fetches a token from the challenge's realm, with Basic credentials when
   * the repository has them, and caches it. Credentials go only to a realm on
   * the upstream's own origin or to an https realm; see `mayReceiveCredentials`.
   */
  async #fetchToken(challenge: Challenge, scope: string, tokenKey: string, signal?: AbortSignal): Promise<string> {
    const realm = parseRealm(challenge.parameters.get("realm")!);
    if (!realm)
      throw upstreamUnavailable(`the upstream registry at ${this.#baseUrl} sent a Bearer challenge without an http or https realm`);
    const service = challenge.parameters.get("service");
    if (service) realm.searchParams.set("service", service);
    realm.searchParams.set("scope", scope);
    const endpoint = `${realm.origin}${realm.pathname}`;

    const headers = new Headers();
    if (this.#credentials) {
      if (!mayReceiveCredentials(realm, new URL(this.#baseUrl))) {
        log.error("upstream credentials not sent: the token realm is on another origin and not https", {
          repository: this.#repositoryKey,
          realm: endpoint,
        });
        throw upstreamUnavailable(
          `the upstream token realm ${endpoint} is on another origin and not https, so the credentials are not sent to it`,
        );
      }
      headers.set("Authorization", basicAuthorization(this.#credentials));
    }

    const issuedAt = Date.now();
    const response = await this.#send(realm.toString(), { headers, signal });
    if (!response.ok) {
      await response.body?.cancel();
      if (response.status >= 500 || response.status === 429) await this.#recordFailureOf(endpoint, response.status);
      const rejected = response.status === 401 || response.status === 403;
      const reason = rejected && this.#credentials ? "; check the username and password of the remote repository" : "";
      throw upstreamUnavailable(`the upstream token endpoint ${endpoint} returned ${response.status}${reason}`);
    }
    const body = (await response.json().catch(() => null)) as TokenResponse | null;
    const token = body?.token ?? body?.access_token;
    if (typeof token !== "string" || token === "") {
      throw upstreamUnavailable(`the upstream token endpoint ${endpoint} returned no token`);
    }

    const expiresIn = typeof body?.expires_in === "number" && body.expires_in > 0 ? body.expires_in : defaultTokenSeconds;
    const reportedIssuedAt = typeof body?.issued_at === "string" ? Date.parse(body.issued_at) : Number.NaN;
    cacheToken(tokenKey, token, expiresIn, Number.isNaN(reportedIssuedAt) ? issuedAt : reportedIssuedAt);
    return token;
  }
}

/** The fields of a token response that the client reads (Docker token authentication specification). */
interface TokenResponse {
  token?: unknown;
  access_token?: unknown;
  expires_in?: unknown;
  issued_at?: unknown;
}

function parseRealm(realm: string): URL | null {
  try {
    const url = new URL(realm);
    return url.protocol === "https:" || url.protocol === "http:" ? url : null;
  } catch {
    return null;
  }
}

/**
 * Returns whether the registry may send upstream credentials to a token realm: one on
 * the upstream's own origin (which already gets the credentials for Basic
 * auth), or any https realm, such as Docker Hub's auth.docker.io. A realm on
 * another origin over plain http could be read by anyone on the path, so it
 * gets no credentials.
 */
export function mayReceiveCredentials(realm: URL, upstream: URL): boolean {
  return realm.origin === upstream.origin || realm.protocol === "https:";
}

function basicAuthorization(credentials: UpstreamCredentials): string {
  const bytes = new TextEncoder().encode(`${credentials.username}:${credentials.password}`);
  return `Basic ${btoa(String.fromCharCode(...bytes))}`;
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
