import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../context";
import { RegistryError } from "../errors";
import { isRepositoryKey } from "../names";
import { getRepository, listRepositories, type RepositoryRow } from "../storage/metadata";
import { requireAdministrator, requireUser } from "./access";
import { audit } from "../auth/audit";

const createRepositorySchema = z.strictObject({
  key: z.string().refine(isRepositoryKey, "key must be one lowercase OCI name component of at most 64 characters, such as docker-local"),
  type: z.literal("local"),
  description: z.string().max(1024).default(""),
});

/**
 * JSON admin API for repositories under `/api/v1/repositories`. Any user may
 * list and show repositories; creating and deleting them needs an administrator.
 */
export const repositoryAdmin = new Hono<AppEnv>();

repositoryAdmin.use(requireUser);

repositoryAdmin.get("/", async (c) => {
  const repositories = await listRepositories(c.env.DB);
  return c.json({ repositories: repositories.map(present) });
});

repositoryAdmin.post("/", async (c) => {
  requireAdministrator(c);
  const body = await readJson(c.req.raw);
  const parsed = createRepositorySchema.safeParse(body);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => ({ path: issue.path.join("."), message: issue.message }));
    throw new RegistryError("INVALID_REQUEST", "repository definition is invalid", { issues });
  }

  const { key, type, description } = parsed.data;
  const result = await c.env.DB.prepare("INSERT INTO repositories (key, type, description) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING")
    .bind(key, type, description)
    .run();
  if (result.meta.changes === 0) throw new RegistryError("CONFLICT", `repository '${key}' already exists`, { key });

  await audit(c, "repository.create", key, { type });
  const created = await getRepository(c.env.DB, key);
  return c.json(present(created!), 201, { Location: `/api/v1/repositories/${key}` });
});

repositoryAdmin.get("/:key", async (c) => {
  const repository = await getRepository(c.env.DB, c.req.param("key"));
  if (!repository) throw new RegistryError("NAME_UNKNOWN", `repository '${c.req.param("key")}' does not exist`);
  const images = await c.env.DB.prepare("SELECT COUNT(*) AS count FROM images WHERE repository_key = ?")
    .bind(repository.key)
    .first<{ count: number }>();
  return c.json({ ...present(repository), imageCount: images?.count ?? 0 });
});

/**
 * Deletes the repository with its images, manifests, tags and blob links.
 * Blob and manifest bytes stay in R2, where other repositories may share them.
 */
repositoryAdmin.delete("/:key", async (c) => {
  requireAdministrator(c);
  const key = c.req.param("key");
  const result = await c.env.DB.prepare("DELETE FROM repositories WHERE key = ?").bind(key).run();
  if (result.meta.changes === 0) throw new RegistryError("NAME_UNKNOWN", `repository '${key}' does not exist`);
  await audit(c, "repository.delete", key);
  return c.body(null, 204);
});

// Registered last, so these only run for methods that no route above handles.
repositoryAdmin.all("/", (c) => rejectMethod(c.req.method, "GET, HEAD, POST"));
repositoryAdmin.all("/:key", (c) => rejectMethod(c.req.method, "GET, HEAD, DELETE"));

/** Throws the 405 UNSUPPORTED error with the Allow header of the route. */
function rejectMethod(method: string, allowed: string): never {
  throw new RegistryError("UNSUPPORTED", `method ${method} is not allowed on this endpoint; allowed: ${allowed}`, null, { Allow: allowed });
}

function present(repository: RepositoryRow) {
  return { key: repository.key, type: repository.type, description: repository.description, createdAt: repository.created_at };
}

async function readJson(request: Request): Promise<unknown> {
  try {
    return await request.json();
  } catch {
    throw new RegistryError("INVALID_REQUEST", "request body must be JSON");
  }
}
