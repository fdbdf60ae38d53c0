import type { AppContext } from "../context";
import { RegistryError } from "../errors";
import { imageExists, listTags } from "../storage/metadata";
import type { RouteParams } from "../routes";
import { pageResponse, parsePage, resolveImage, type Page } from "./shared";

/** `GET` and `HEAD /v2/<name>/tags/list`: tag names in byte order, paginated with `n` and `last`. */
export async function list(c: AppContext, params: RouteParams): Promise<Response> {
  const image = await resolveImage(c, params.name);
  const page = parsePage(c);
  if (!(await imageExists(c.env.DB, image.full))) {
    throw new RegistryError("NAME_UNKNOWN", `repository ${image.full} has no content`, { name: image.full });
  }
  return tagsResponse(c, page, image.full, [image.full]);
}

/** Builds one page of the tags of `imageNames`, merged without duplicates, listed under the name `name`. */
export async function tagsResponse(c: AppContext, page: Page, name: string, imageNames: string[]): Promise<Response> {
  const tags = page.limit === 0 ? [] : await listTags(c.env.DB, imageNames, page.last, page.limit + 1);
  return pageResponse(c, page, tags, (visible) => ({ name, tags: visible }));
}
