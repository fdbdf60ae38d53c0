import { addLogFields, type AppContext } from "../context";
import { annotationsOf, annotationsOnlyInR2 } from "../manifests/annotations";
import { mediaTypes } from "../manifests/schema";
import { parseDigestFromPath } from "../names";
import type { RouteParams } from "../routes";
import { listReferrers, type ManifestRow } from "../storage/metadata";
import { manifestStorageKey } from "../manifests/storage-key";
import { resolveImage } from "./shared";

/** `GET /v2/<name>/referrers/<digest>`: an OCI index of the manifests whose subject is the digest. */
export async function list(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const subject = parseDigestFromPath(params.digest ?? "");
  const artifactType = c.req.query("artifactType") ?? null;
  addLogFields(c, { digest: subject });

  const rows = await listReferrers(c.env.DB, image.full, subject, artifactType);
  const descriptors = [];
  for (const row of rows) {
    const annotations = await referrerAnnotations(c, row);
    descriptors.push({
      mediaType: row.media_type,
      digest: row.digest,
      size: row.size,
      ...(row.artifact_type ? { artifactType: row.artifact_type } : {}),
      ...(annotations ? { annotations } : {}),
    });
  }
  const index = { schemaVersion: 2, mediaType: mediaTypes.ociIndex, manifests: descriptors };
  const headers = new Headers({ "Content-Type": mediaTypes.ociIndex });
  if (artifactType !== null) headers.set("OCI-Filters-Applied", "artifactType");
  return new Response(JSON.stringify(index), { status: 200, headers });
}

/** Returns a referrer's annotations from its D1 row, or from its bytes in R2 when the row cannot hold them. */
async function referrerAnnotations(c: AppContext, row: ManifestRow): Promise<Record<string, string> | null> {
  if (row.annotations) return JSON.parse(row.annotations) as Record<string, string>;
  if (!annotationsOnlyInR2(row.size)) return null;

  const object = await c.env.BLOBS.get(manifestStorageKey(row.digest));
  if (!object) throw new Error(`manifest ${row.digest} is recorded in D1 but missing from R2`);
  return annotationsOf(await object.arrayBuffer());
}
