import { challenge } from "../auth/authorize";
import { permissionEvaluator } from "../auth/permissions";
import type { AppContext } from "../context";
import { parseImageName } from "../names";
import { listImages, listRepositories } from "../storage/metadata";
import { readableVirtualImages } from "../virtual/catalog";
import { pageResponse, parsePage } from "./shared";

/** Rows read from D1 per round while filtering the catalog by permission. */
const catalogBatchSize = 1000;

/**
 * `GET` and `HEAD /v2/_catalog`: the image names the caller may read, in byte order,
 * paginated with `n` and `last`. A registry token must grant `registry:catalog:*`.
 */
export async function list(c: AppContext): Promise<Response> {
  const access = c.get("tokenAccess");
  if (access && !access.some((grant) => grant.type === "registry" && grant.name === "catalog" && grant.actions.includes("*"))) {
    throw challenge(
      c,
      "the bearer token does not grant registry:catalog:*",
      { type: "registry", name: "catalog", actions: ["*"] },
      "insufficient_scope",
    );
  }

  const page = parsePage(c);
  const names = page.limit === 0 ? [] : await catalogNames(c, page.last, page.limit + 1);
  return pageResponse(c, page, names, (visible) => ({ repositories: visible }));
}

/**
 * Collects up to `limit` names after `last` in byte order: the images the
 * caller may read, merged with the names that virtual repositories serve.
 */
async function catalogNames(c: AppContext, last: string, limit: number): Promise<string[]> {
  const stored = await readableImages(c, last, limit);
  const virtual = await readableVirtualImages(c.env.DB, c.get("principal"), last, limit);
  if (virtual.length === 0) return stored;
  return [...new Set([...stored, ...virtual])].sort().slice(0, limit);
}

/** Collects up to `wanted` image names after `last` that the caller may read. */
async function readableImages(c: AppContext, last: string, wanted: number): Promise<string[]> {
  const principal = c.get("principal");
  if (principal.admin && !principal.tokenScope) return listImages(c.env.DB, last, wanted);

  const evaluate = await permissionEvaluator(c.env.DB, principal);
  const repositoryTypes = new Map((await listRepositories(c.env.DB)).map((repository) => [repository.key, repository.type]));
  const readable: string[] = [];
  let cursor = last;
  for (;;) {
    const batch = await listImages(c.env.DB, cursor, catalogBatchSize);
    for (const name of batch) {
      const image = parseImageName(name);
      const type = repositoryTypes.get(image.repositoryKey) ?? "local";
      if (evaluate({ key: image.repositoryKey, type }, image.path).has("read")) readable.push(name);
      if (readable.length === wanted) return readable;
    }
    if (batch.length < catalogBatchSize) return readable;
    cursor = batch[batch.length - 1]!;
  }
}
