import { addLogFields, type AppContext } from "../context";
import { annotationsOf, annotationsOnlyInR2 } from "../manifests/annotations";
import { mediaTypes } from "../manifests/schema";
import { parseDigestFromPath } from "../names";
import type { RouteParams } from "../routes";
import { listReferrers, type ManifestRow } from "../storage/metadata";
import { manifestStorageKey } from "../manifests/storage-key";
import { jsonResponse, parsePage, resolveImage, type Page } from "./shared";

/** The largest number of descriptors in one page of the referrers list; a larger `n` is lowered to it. */
export const maxReferrersPageSize = 1000;

/**
 * The largest page of the referrers list in bytes of JSON. It equals the
 * largest manifest the registry accepts, so a client that reads a manifest
 * can read a page.
 */
export const maxReferrersPageBytes = 4 * 1024 * 1024;

/**
 * Rows read from D1 per query. A row contains at most 64 KiB of annotations,
 * so one batch stays near 6 MiB however many referrers the page may take.
 */
const rowsPerQuery = 100;

/**
 * `GET` and `HEAD /v2/<name>/referrers/<digest>`: an OCI index of the
 * manifests whose subject is the digest, in digest order and paginated with
 * `n` and `last`.
 */
export async function list(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  return referrersResponse(c, [image.full], params.digest ?? "");
}

/**
 * Builds one page of the referrers of the digest in the path, encoded as
 * `encodedSubject`, merged across `imageNames` without duplicates.
 */
export async function referrersResponse(c: AppContext, imageNames: string[], encodedSubject: string): Promise<Response> {
  const subject = parseDigestFromPath(encodedSubject);
  const artifactType = c.req.query("artifactType") ?? null;
  const page = parsePage(c, maxReferrersPageSize);
  addLogFields(c, { digest: subject });

  const { descriptors, nextAfter } = await readPage(c, imageNames, subject, artifactType, page);
  const headers = new Headers({ "Content-Type": mediaTypes.ociIndex });
  if (artifactType !== null) headers.set("OCI-Filters-Applied", "artifactType");
  if (nextAfter !== null) {
    const next = new URLSearchParams({ n: String(page.limit), last: nextAfter });
    if (artifactType !== null) next.set("artifactType", artifactType);
    headers.set("Link", `<${new URL(c.req.url).pathname}?${next.toString()}>; rel="next"`);
  }
  return jsonResponse(c, indexJson(descriptors), headers);
}

interface ReferrersPage {
  /** Each descriptor of the page as JSON. */
  descriptors: string[];
  /** The digest the next page starts after, or null on the last page. */
  nextAfter: string | null;
}

/**
 * Reads referrers in digest order after `page.last` until the page has
 * `page.limit` descriptors or one more would take its JSON past
 * `maxReferrersPageBytes`.
 */
async function readPage(
  c: AppContext,
  imageNames: string[],
  subject: string,
  artifactType: string | null,
  page: Page,
): Promise<ReferrersPage> {
  const descriptors: string[] = [];
  if (page.limit === 0) return { descriptors, nextAfter: null };

  let bytes = utf8Length(indexJson([]));
  let after = page.last;
  for (;;) {
    // One row past the limit shows whether another page follows.
    const wanted = Math.min(rowsPerQuery, page.limit + 1 - descriptors.length);
    const rows = await listReferrers(c.env.DB, imageNames, subject, artifactType, after, wanted);
    for (const row of rows) {
      if (descriptors.length === page.limit) return { descriptors, nextAfter: after };

      const descriptor = JSON.stringify(await describeReferrer(c, row));
      const added = utf8Length(descriptor) + (descriptors.length > 0 ? 1 : 0);
      // NOTE: the first descriptor of a page is always sent, so a referrer
      // whose annotations nearly fill a 4 MiB manifest gets a page of its own
      // that can pass maxReferrersPageBytes by a few hundred bytes.
      if (descriptors.length > 0 && bytes + added > maxReferrersPageBytes) return { descriptors, nextAfter: after };

      descriptors.push(descriptor);
      bytes += added;
      after = row.digest;
    }
    if (rows.length < wanted) return { descriptors, nextAfter: null };
  }
}

/** Builds the descriptor of one referrer, with the annotations the manifest has. */
async function describeReferrer(c: AppContext, row: ManifestRow) {
  const annotations = await referrerAnnotations(c, row);
  return {
    mediaType: row.media_type,
    digest: row.digest,
    size: row.size,
    ...(row.artifact_type ? { artifactType: row.artifact_type } : {}),
    ...(annotations ? { annotations } : {}),
  };
}

/** Returns a referrer's annotations from its D1 row, or from its bytes in R2 when the row cannot hold them. */
async function referrerAnnotations(c: AppContext, row: ManifestRow): Promise<Record<string, string> | null> {
  if (row.annotations) return JSON.parse(row.annotations) as Record<string, string>;
  if (!annotationsOnlyInR2(row.size)) return null;

  const object = await c.env.BLOBS.get(manifestStorageKey(row.digest));
  if (!object) throw new Error(`manifest ${row.digest} is recorded in D1 but missing from R2`);
  return annotationsOf(await object.arrayBuffer());
}

/** Returns the JSON of the OCI index that lists the descriptors, given as JSON. */
function indexJson(descriptors: string[]): string {
  return `{"schemaVersion":2,"mediaType":${JSON.stringify(mediaTypes.ociIndex)},"manifests":[${descriptors.join(",")}]}`;
}

function utf8Length(text: string): number {
  return new TextEncoder().encode(text).byteLength;
}
