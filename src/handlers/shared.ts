import { addLogFields, findRequestRepository, type AppContext } from "../context";
import { RegistryError, unwrapRpcResult } from "../errors";
import { indexedAnnotations } from "../manifests/annotations";
import type { ParsedManifest } from "../manifests/schema";
import { parseImageName, type ImageName } from "../names";
import type { Env } from "../env";
import { memberAllows, requireAction } from "../auth/authorize";
import type { Action } from "../auth/permissions";
import type { RemoteSettingsRow } from "../storage/metadata";
import { isUpstreamOffline, nowSeconds } from "../remote/cache-state";

/**
 * Validates the name in the path and checks that its repository exists.
 * Throws NAME_INVALID or NAME_UNKNOWN.
 */
export async function resolveImage(c: AppContext, rawName: string | undefined): Promise<ImageName> {
  const image = parseImageName(rawName ?? "");
  addLogFields(c, { repository: image.full });
  const repository = await findRequestRepository(c, image.repositoryKey);
  if (!repository) {
    throw new RegistryError(
      "NAME_UNKNOWN",
      `repository '${image.repositoryKey}' does not exist; image names are '<repository key>/<path>'`,
      {
        repository: image.repositoryKey,
      },
    );
  }
  return image;
}

/** Returns the stub of the image's ImageStore Durable Object, which queues every write to the image. */
export function imageStore(env: Env, image: ImageName) {
  return env.IMAGE_STORES.get(env.IMAGE_STORES.idFromName(image.full));
}

/** The largest page of tags or repositories returned by one request; a larger `n` is lowered to it. */
export const maxPageSize = 10_000;

export interface Page {
  limit: number;
  last: string;
}

/** Reads `n` and `last`. A missing `n` means the largest page, and a larger one is lowered to `maxLimit`. */
export function parsePage(c: AppContext, maxLimit: number = maxPageSize): Page {
  const rawLimit = c.req.query("n");
  const last = c.req.query("last") ?? "";
  if (rawLimit === undefined || rawLimit === "") return { limit: maxLimit, last };
  if (!/^\d+$/.test(rawLimit)) {
    throw new RegistryError("PAGINATION_NUMBER_INVALID", "n must be a non-negative integer", { n: rawLimit });
  }
  return { limit: Math.min(Number(rawLimit), maxLimit), last };
}

/**
 * Builds the body and Link header of one page, given up to `limit + 1` items
 * read from storage. The extra item only shows that more remain.
 */
export function pageResponse(c: AppContext, page: Page, items: string[], body: (items: string[]) => unknown): Response {
  const visible = items.slice(0, page.limit);
  const headers = new Headers({ "Content-Type": "application/json" });
  if (items.length > page.limit && visible.length > 0) {
    const url = new URL(c.req.url);
    const next = new URLSearchParams({ n: String(page.limit), last: visible[visible.length - 1]! });
    headers.set("Link", `<${url.pathname}?${next.toString()}>; rel="next"`);
  }
  return jsonResponse(c, JSON.stringify(body(visible)), headers);
}

/** Builds a 200 response with a JSON body and its Content-Length. A HEAD request gets the same headers and no body. */
export function jsonResponse(c: AppContext, body: string, headers: Headers): Response {
  const bytes = new TextEncoder().encode(body);
  headers.set("Content-Length", String(bytes.byteLength));
  return new Response(c.req.method === "HEAD" ? null : bytes, { status: 200, headers });
}

/** Formats a digest as a strong ETag. */
export function etagOf(digest: string): string {
  return `"${digest}"`;
}

/** The fields of a manifest write that callers choose; see `storeManifest`. */
export interface ManifestToStore {
  digest: string;
  bytes: Uint8Array;
  manifest: ParsedManifest;
  tag: string | null;
  /** Set for a remote repository's cache, whose referenced blobs arrive later. */
  fromUpstream?: boolean;
}

/**
 * Stores a validated manifest through the image's ImageStore and throws its
 * RegistryError, if any, in the caller. The D1 row keeps only the annotations
 * that the referrers list reads.
 */
export async function storeManifest(env: Env, image: ImageName, write: ManifestToStore): Promise<void> {
  const stored = await imageStore(env, image).putManifest({
    name: image.full,
    repositoryKey: image.repositoryKey,
    digest: write.digest,
    bytes: write.bytes,
    manifest: { ...write.manifest, annotations: indexedAnnotations(write.manifest, write.bytes.byteLength) },
    tag: write.tag,
    fromUpstream: write.fromUpstream,
  });
  unwrapRpcResult(stored);
}

/**
 * Checks that the request may fetch a missing manifest or blob from the
 * upstream of a remote repository. That writes to the cache, so it needs
 * `deploy`. An offline repository (set by the administrator or after repeated
 * upstream failures) fetches nothing, so its misses need no more than the
 * `read` the route already checked.
 */
export async function requireUpstreamFetch(c: AppContext, image: ImageName, settings: RemoteSettingsRow): Promise<void> {
  if (!isUpstreamOffline(settings, nowSeconds())) await requireAction(c, image, "deploy", "pull");
}

/**
 * Returns the image name that Location headers use: the name in the request
 * path. A push through a virtual repository is stored in its default
 * deployment repository, but its Locations keep the virtual key, because a
 * Docker client follows them with a registry token for the virtual name only.
 */
export function locationName(c: AppContext, image: ImageName): string {
  const pushThrough = c.get("pushThrough");
  if (!pushThrough || image.repositoryKey !== pushThrough.deploymentKey) return image.full;
  return `${pushThrough.virtualKey}/${image.path}`;
}

/**
 * Checks a permission that a write needs beyond the route's own, such as
 * `delete` to move an existing tag. Through a virtual repository, the route
 * already checked the registry token on the virtual name, so the image in the
 * deployment repository is checked against the caller's permissions only.
 */
export async function requireWriteAction(c: AppContext, image: ImageName, action: Action): Promise<void> {
  if (!c.get("pushThrough")) return requireAction(c, image, action, "push");
  if (await memberAllows(c, image, action)) return;
  const principal = c.get("principal");
  throw new RegistryError("DENIED", undefined, { user: principal.name, action, name: image.full });
}
