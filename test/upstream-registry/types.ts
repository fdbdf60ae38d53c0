/** What the test upstream registry passes to tests: its URL and the digests and bytes of the one image it serves. */
export interface UpstreamRegistryInfo {
  /** Base URL, such as http://127.0.0.1:41234. */
  url: string;
  /** The `service` that its token endpoint expects and its challenges name. */
  service: string;
  /** The Basic credentials that `basic-` paths and the token endpoint for `login-` paths accept. */
  username: string;
  password: string;
  /** The image manifest's exact text, which is indented unusually so that a re-serialised copy would differ. */
  manifest: string;
  manifestDigest: string;
  /** The manifest that `latest` points to after a test moves the tag with `{ moved: true }`. */
  movedManifest: string;
  movedManifestDigest: string;
  manifestMediaType: string;
  /** The config and layer, as text; both are plain ASCII. */
  config: string;
  configDigest: string;
  layer: string;
  layerDigest: string;
}

/** How one image path of the test upstream responds, set with `POST /_behaviour/<path>`. */
export interface UpstreamBehaviour {
  /** Serves `movedManifest` under `latest`. */
  moved?: boolean;
  /** Makes every manifest and blob request fail with this status and an empty body. */
  status?: number;
  /** The Retry-After header sent with `status`. */
  retryAfter?: string;
  /**
   * Redirects every manifest and blob request that arrives for another Host to
   * this `host:port` (such as `localhost:<port>`, another origin of this
   * server), where a path that needs a token returns 401 without one.
   */
  redirectToHost?: string;
  /** Closes the connection without a response, as an unreachable upstream would. */
  down?: boolean;
  /** The realm that challenges name instead of this server's `/token`. */
  realm?: string;
  /** The `expires_in` of issued tokens, in seconds; left out of the response when unset. */
  tokenExpiresIn?: number;
  /** Sends `issued_at` this many seconds in the past; left out of the response when unset. */
  tokenIssuedSecondsAgo?: number;
  /** Tokens carry this number, so raising it makes the upstream reject tokens issued before. */
  tokenGeneration?: number;
  /** Holds every manifest and blob response (GET and HEAD) before its headers until `POST /_resume/<path>`. */
  hold?: boolean;
  /** Sends the headers and this many bytes of every GET body, then waits for `POST /_resume/<path>` before the rest. */
  stallAfterBytes?: number;
  /** Sends the headers and this many bytes of every GET body, then closes the connection, as an upstream that fails mid-body would. */
  cutAfterBytes?: number;
}

declare module "vitest" {
  export interface ProvidedContext {
    upstreamRegistry: UpstreamRegistryInfo;
  }
}
