import { addLogFields, type AppContext } from "../context";
import { mediaTypes } from "../manifests/schema";
import { parseDigest } from "../names";
import type { RouteParams } from "../routes";
import { listReferrers } from "../storage/metadata";
import { resolveImage } from "./shared";

/** `GET /v2/<name>/referrers/<digest>`: an OCI index of the manifests whose subject is the digest. */
export async function list(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const subject = parseDigest(decodeURIComponent(params.digest ?? ""));
  const artifactType = c.req.query("artifactType") ?? null;
  addLogFields(c, { digest: subject });

  const rows = await listReferrers(c.env.DB, image.full, subject, artifactType);
  const index = {
    schemaVersion: 2,
    mediaType: mediaTypes.ociIndex,
    manifests: rows.map((row) => ({
      mediaType: row.media_type,
      digest: row.digest,
      size: row.size,
      ...(row.artifact_type ? { artifactType: row.artifact_type } : {}),
      ...(row.annotations ? { annotations: JSON.parse(row.annotations) as Record<string, string> } : {}),
    })),
  };
  const headers = new Headers({ "Content-Type": mediaTypes.ociIndex });
  if (artifactType !== null) headers.set("OCI-Filters-Applied", "artifactType");
  return new Response(JSON.stringify(index), { status: 200, headers });
}
