import type { ContentfulStatusCode } from "hono/utils/http-status";

/**
 * Error codes of the OCI Distribution Specification 1.1 and the Docker
 * Registry HTTP API v2, each registered once with its HTTP status and the
 * default message. MANIFEST_TOO_LARGE, NOT_FOUND, INVALID_REQUEST, CONFLICT
 * and INTERNAL_ERROR are this registry's own codes and appear in neither
 * specification. Call sites throw a code; only the error handler picks the
 * status.
 */
export const errorCodes = {
  BLOB_UNKNOWN: { status: 404, message: "blob unknown to registry" },
  BLOB_UPLOAD_INVALID: { status: 400, message: "blob upload invalid" },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: "blob upload unknown to registry" },
  DIGEST_INVALID: { status: 400, message: "provided digest did not match uploaded content" },
  MANIFEST_BLOB_UNKNOWN: { status: 400, message: "manifest references a blob unknown to this repository" },
  MANIFEST_INVALID: { status: 400, message: "manifest invalid" },
  MANIFEST_UNKNOWN: { status: 404, message: "manifest unknown" },
  NAME_INVALID: { status: 400, message: "invalid repository name" },
  NAME_UNKNOWN: { status: 404, message: "repository name not known to registry" },
  SIZE_INVALID: { status: 400, message: "provided length did not match content length" },
  TAG_INVALID: { status: 400, message: "manifest tag did not match URI" },
  RANGE_INVALID: { status: 416, message: "invalid content range" },
  PAGINATION_NUMBER_INVALID: { status: 400, message: "invalid number of results requested" },
  MANIFEST_TOO_LARGE: { status: 413, message: "manifest is larger than the registry accepts" },
  UNAUTHORIZED: { status: 401, message: "authentication required" },
  DENIED: { status: 403, message: "requested access to the resource is denied" },
  UNSUPPORTED: { status: 405, message: "the operation is unsupported" },
  NOT_FOUND: { status: 404, message: "no route matches the request" },
  TOOMANYREQUESTS: { status: 429, message: "too many requests" },
  INVALID_REQUEST: { status: 400, message: "request body or parameters are invalid" },
  CONFLICT: { status: 409, message: "the resource already exists or is in use" },
  INTERNAL_ERROR: { status: 500, message: "internal server error" },
  UNAVAILABLE: { status: 503, message: "service unavailable" },
} as const satisfies Record<string, { status: ContentfulStatusCode; message: string }>;

export type ErrorCode = keyof typeof errorCodes;

/**
 * The one error type that handlers, storage and Durable Objects throw for
 * conditions a client caused. `detail` is sent to the client, so it must
 * never carry internal error text.
 */
export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly detail: unknown;
  /** Extra response headers, such as Range on a 416. */
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, message?: string, detail?: unknown, headers: Record<string, string> = {}) {
    super(message ?? errorCodes[code].message);
    this.name = "RegistryError";
    this.code = code;
    this.detail = detail;
    this.headers = headers;
  }

  get status(): ContentfulStatusCode {
    return errorCodes[this.code].status;
  }
}

/** Builds the OCI error body `{"errors":[{"code","message","detail"}]}`. */
export function errorBody(code: ErrorCode, message: string, detail?: unknown): string {
  return JSON.stringify({ errors: [{ code, message, detail: detail ?? null }] });
}

/** A RegistryError as plain data, which structured clone can carry across RPC. */
export interface RegistryErrorData {
  code: ErrorCode;
  message: string;
  detail: unknown;
  headers: Record<string, string>;
}

/**
 * The outcome of a Durable Object method. RegistryErrors travel as data
 * rather than as exceptions, because RPC keeps only an exception's message
 * and workerd logs every thrown exception as uncaught.
 */
export type RpcResult<T> = { ok: true; value: T } | { ok: false; error: RegistryErrorData };

/** Runs a Durable Object method's work, returning RegistryErrors as data and rethrowing anything else. */
export async function toRpcResult<T>(work: () => Promise<T>): Promise<RpcResult<T>> {
  try {
    return { ok: true, value: await work() };
  } catch (error) {
    if (!(error instanceof RegistryError)) throw error;
    return { ok: false, error: { code: error.code, message: error.message, detail: error.detail, headers: error.headers } };
  }
}

/** Returns a Durable Object method's value, or throws its RegistryError in the caller. */
export function unwrapRpcResult<T>(result: RpcResult<T>): T {
  if (result.ok) return result.value;
  const { code, message, detail, headers } = result.error;
  throw new RegistryError(code, message, detail, headers);
}
