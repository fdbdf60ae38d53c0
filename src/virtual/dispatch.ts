import { addLogFields, type AppContext } from "../context";
import { RegistryError } from "../errors";
import type { ImageName } from "../names";
import type { Route, RouteParams } from "../routes";
import { getVirtualSettings } from "../storage/metadata";
import { deploymentImage } from "./push";
import { getBlob, getManifest, listReferrers, listTags, type VirtualReadHandler } from "./reads";

/** The read handler of each route through a virtual repository, by route name. */
const readHandlers: Record<string, VirtualReadHandler> = {
  tags: listTags,
  manifest: getManifest,
  blob: getBlob,
  referrers: listReferrers,
};

/**
 * Handles a registry request whose name is in a virtual repository, after the
 * route's permission on the virtual name passed. Reads resolve through the
 * members the caller may read. Writes (uploads and manifest pushes) run the
 * route's own handler on the image in the default deployment repository.
 * Manifest and blob deletes return 405 UNSUPPORTED, because a virtual
 * repository stores nothing of its own.
 */
export async function dispatchVirtual(c: AppContext, route: Route, params: RouteParams, image: ImageName): Promise<Response> {
  const settings = await getVirtualSettings(c.env.DB, image.repositoryKey);
  if (!settings) throw new Error(`repository ${image.repositoryKey} is reported as virtual but has no virtual_repositories row`);
  addLogFields(c, { repository: image.full });

  const method = c.req.method as keyof Route["methods"];
  const access = route.access[method];
  const read = readHandlers[route.name];
  if (access === "read" && read) return read(c, params, image, settings);

  if (access === "delete") {
    const locals = settings.members.filter((member) => member.type === "local").map((member) => member.key);
    const advice =
      locals.length > 0 ? `delete it from the local member that has it (${locals.join(", ")})` : "it has no local member to delete from";
    const allowed = (Object.keys(route.methods) as (keyof Route["methods"])[]).filter((other) => route.access[other] !== "delete");
    throw new RegistryError(
      "UNSUPPORTED",
      `${image.full} is in virtual repository '${image.repositoryKey}', which stores no content; ${advice}`,
      { repository: image.repositoryKey, members: settings.members.map((member) => member.key) },
      { Allow: allowed.join(", ") },
    );
  }

  const handler = route.methods[method];
  if (access !== "deploy" || !handler) throw new Error(`route ${route.name} ${method} has no handling through a virtual repository`);
  const target = await deploymentImage(c, image, settings);
  c.set("pushThrough", { virtualKey: image.repositoryKey, deploymentKey: target.repositoryKey });
  addLogFields(c, { deploymentImage: target.full });
  return handler(c, { ...params, name: target.full });
}
