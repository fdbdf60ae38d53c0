import type { AppContext } from "../context";
import { RegistryError } from "../errors";
import { imageExists, listTags } from "../storage/metadata";
import type { RouteParams } from "../routes";
import { pageResponse, parsePage, resolveImage } from "./shared";

/** `GET` and `HEAD /v2/<name>/tags/list`: tag names in byte order, paginated with `n` and `last`. */
export async function list(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const page = parsePage(c);
  if (!(await imageExists(c.env.DB, image.full))) {
    throw new RegistryError("NAME_UNKNOWN", `repository ${image.full} has no content`, { name: image.full });
  }

  const tags = page.limit === 0 ? [] : await listTags(c.env.DB, image.full, page.last, page.limit + 1);
  return pageResponse(c, page, tags, (visible) => ({ name: image.full, tags: visible }));
}
