// Registry tokens from Edge Registry's Docker token endpoint, as docker
// gets them: `GET /v2/token?service=<host>&scope=repository:<name>:<actions>`
// with Basic credentials, then `Authorization: Bearer <token>` on each
// registry request until the token nears its expiry.

import { performance } from "node:perf_hooks";
import { authorizationHeaders } from "../../test/e2e/harness.ts";

/** Seconds before a token's expiry at which `headers` fetches its successor. */
const refreshMarginSeconds = 30;

/**
 * A Bearer token for one repository scope. `headers` returns the
 * Authorization header and fetches a new token first when the current one
 * has less than 30 s left. Concurrent callers share one token request.
 */
export class RegistryToken {
  #baseUrl;
  #query;
  #credentials;
  #headers = null;
  #refreshAt = 0;
  #pending = null;

  /**
   * `baseUrl` is the registry's URL, such as http://127.0.0.1:24817,
   * `credentials` the user name and password that the token request sends,
   * `name` an image name such as docker-local/app, and `actions` the
   * scope's actions, such as ["pull"].
   */
  constructor(baseUrl, credentials, name, actions) {
    this.#baseUrl = baseUrl;
    this.#credentials = credentials;
    // The registry checks the token's audience against the host of each request, so the service is that host.
    const service = new URL(baseUrl).host;
    this.#query = new URLSearchParams({ service, scope: `repository:${name}:${actions.join(",")}` });
  }

  /** Returns `{ Authorization: "Bearer …" }`, fetching a token when there is none or it expires soon. */
  async headers() {
    if (this.#headers && performance.now() < this.#refreshAt) return this.#headers;
    this.#pending ??= this.#fetch().finally(() => (this.#pending = null));
    return this.#pending;
  }

  async #fetch() {
    const url = `${this.#baseUrl}/v2/token?${this.#query}`;
    const requested = performance.now();
    const response = await fetch(url, { headers: authorizationHeaders(this.#credentials) });
    const body = await response.text();
    if (response.status !== 200)
      throw new Error(`GET ${url} as ${this.#credentials.username} returned ${response.status}, expected 200: ${body.slice(0, 500)}`);

    const { token, expires_in: expiresIn } = JSON.parse(body);
    if (typeof token !== "string" || typeof expiresIn !== "number")
      throw new Error(`GET ${url} returned no token or no expires_in: ${body.slice(0, 500)}`);
    this.#headers = { Authorization: `Bearer ${token}` };
    this.#refreshAt = requested + Math.max(0, expiresIn - refreshMarginSeconds) * 1000;
    return this.#headers;
  }
}
