import type { AppContext } from "../context";
import { listImages } from "../storage/metadata";
import { pageResponse, parsePage } from "./shared";

/** `GET` and `HEAD /v2/_catalog`: every image name in byte order, paginated with `n` and `last`. */
export async function list(c: AppContext): Promise<Response> {
  const page = parsePage(c);
  const names = page.limit === 0 ? [] : await listImages(c.env.DB, page.last, page.limit + 1);
  return pageResponse(c, page, names, (visible) => ({ repositories: visible }));
}
