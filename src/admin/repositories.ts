import { Hono } from "hono";
import { z } from "zod";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";
import { isRepositoryKey } from "../names";
import {
  getRemoteSettings,
  getRepository,
  getVirtualSettings,
  listRepositories,
  type RemoteSettingsRow,
  type RepositoryRow,
} from "../storage/metadata";
import { requireAdministrator, requireUser } from "./access";
import { audit } from "../auth/audit";
import { isConstraintFailure } from "./shared";
import type { Env } from "../env";
import { nowSeconds } from "../remote/cache-state";
import { encryptPassword } from "../remote/credentials";
import {
  assertValidDefinition,
  definitionStatements,
  isForeignKeyFailure,
  presentVirtual,
  updateStatements,
  virtualCreateFields,
} from "./virtual-repositories";

const repositoryKeySchema = z
  .string()
  .refine(isRepositoryKey, "key must be one lowercase OCI name component of at most 64 characters, such as docker-local");

const upstreamUrlSchema = z
  .url({
    protocol: /^https?$/,
    error: (issue) =>
      issue.input === undefined
        ? "a remote repository needs url, the base URL of the upstream registry, such as https://registry-1.docker.io"
        : "url must be an http or https URL, such as https://registry-1.docker.io",
  })
  .refine((url) => {
    // zod runs this even after the URL check failed, so a value that does not parse is left to that check.
    const parsed = URL.canParse(url) ? new URL(url) : null;
    return parsed === null || (parsed.username === "" && parsed.password === "");
  }, "url must not contain a user or password, which would be shown and logged; set username and password instead")
  .refine((url) => {
    const parsed = URL.canParse(url) ? new URL(url) : null;
    return parsed === null || (parsed.search === "" && parsed.hash === "" && !url.includes("?") && !url.includes("#"));
  }, "url must not contain a query or fragment; give the base URL of the upstream registry, such as https://registry-1.docker.io")
  .refine((url) => {
    const parsed = URL.canParse(url) ? new URL(url) : null;
    return parsed === null || !/\/v2\/?$/.test(parsed.pathname);
  }, "url must be the base URL without /v2, such as https://registry-1.docker.io; the registry adds /v2 itself");

const cacheSecondsSchema = z.number().int().min(0).max(31_536_000);

/** Fields of a remote repository that both create and PATCH accept. */
const remoteFields = {
  username: z
    .string()
    .min(1)
    .max(256)
    .refine(
      (username) => !username.includes(":"),
      "username must not contain ':', which Basic authentication uses to separate it from the password",
    ),
  /** Write-only: stored encrypted under CREDENTIALS_KEY and never returned. */
  password: z.string().min(1).max(1024),
  tagCacheSeconds: cacheSecondsSchema,
  negativeCacheSeconds: cacheSecondsSchema,
  offline: z.boolean(),
  dockerHub: z.boolean(),
  failureThreshold: z.number().int().min(1).max(100),
  offlineSeconds: z.number().int().min(0).max(86_400),
  recentPullSeconds: cacheSecondsSchema,
};

const passwordNeedsUsername = "password needs username, the upstream user that the password belongs to";

const createRepositorySchema = z.discriminatedUnion(
  "type",
  [
    z.strictObject({
      key: repositoryKeySchema,
      type: z.literal("local"),
      description: z.string().max(1024).default(""),
    }),
    z
      .strictObject({
        key: repositoryKeySchema,
        type: z.literal("remote"),
        description: z.string().max(1024).default(""),
        url: upstreamUrlSchema,
        username: remoteFields.username.optional(),
        password: remoteFields.password.optional(),
        tagCacheSeconds: remoteFields.tagCacheSeconds.default(600),
        negativeCacheSeconds: remoteFields.negativeCacheSeconds.default(60),
        offline: remoteFields.offline.default(false),
        dockerHub: remoteFields.dockerHub.default(false),
        failureThreshold: remoteFields.failureThreshold.default(3),
        offlineSeconds: remoteFields.offlineSeconds.default(300),
        recentPullSeconds: remoteFields.recentPullSeconds.default(86_400),
      })
      .refine((remote) => remote.password === undefined || remote.username !== undefined, {
        path: ["password"],
        message: passwordNeedsUsername,
      }),
    z.strictObject({
      key: repositoryKeySchema,
      type: z.literal("virtual"),
      ...virtualCreateFields,
    }),
  ],
  { error: (issue) => (issue.code === "invalid_union" ? "type must be local, remote or virtual" : undefined) },
);

const updateRemoteSchema = z
  .strictObject({
    url: upstreamUrlSchema.optional(),
    username: remoteFields.username.nullable().optional(),
    password: remoteFields.password.nullable().optional(),
    tagCacheSeconds: remoteFields.tagCacheSeconds.optional(),
    negativeCacheSeconds: remoteFields.negativeCacheSeconds.optional(),
    offline: remoteFields.offline.optional(),
    dockerHub: remoteFields.dockerHub.optional(),
    failureThreshold: remoteFields.failureThreshold.optional(),
    offlineSeconds: remoteFields.offlineSeconds.optional(),
    recentPullSeconds: remoteFields.recentPullSeconds.optional(),
  })
  .refine((patch) => Object.keys(patch).length > 0, "the request changes nothing; set at least one field");

/**
 * JSON admin API for repositories under `/api/v1/repositories`. Any user may
 * list and show repositories; creating, changing and deleting them needs an administrator.
 */
export const repositoryAdmin = new Hono<AppEnv>();

repositoryAdmin.use(requireUser);

repositoryAdmin.get("/", async (c) => {
  const repositories = await listRepositories(c.env.DB);
  const presented = [];
  for (const repository of repositories) {
    presented.push(repository.type === "virtual" ? await presentByKey(c.env.DB, repository.key) : present(repository));
  }
  return c.json({ repositories: presented });
});

repositoryAdmin.post("/", async (c) => {
  requireAdministrator(c);
  const body = await readJson(c.req.raw);
  const definition = validate(createRepositorySchema, body, "repository definition");
  const { key, type, description } = definition;
  const db = c.env.DB;
  const virtual =
    definition.type === "virtual"
      ? { members: definition.members, defaultDeploymentRepository: definition.defaultDeploymentRepository ?? null }
      : null;
  if (virtual) await assertValidDefinition(db, key, virtual);

  // The type column keeps 'local' for a remote or virtual repository, because its CHECK allows nothing else. The
  // remote_repositories or virtual_repositories row sets its type.
  const statements = [db.prepare("INSERT INTO repositories (key, type, description) VALUES (?, 'local', ?)").bind(key, description)];
  if (definition.type === "remote") {
    const passwordCiphertext = definition.password === undefined ? null : await encryptPassword(c.env, key, definition.password);
    statements.push(
      db
        .prepare(
          `INSERT INTO remote_repositories (repository_key, url, username, password_ciphertext, tag_cache_seconds, negative_cache_seconds,
             offline, docker_hub, failure_threshold, offline_seconds, recent_pull_seconds)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .bind(
          key,
          definition.url,
          definition.username ?? null,
          passwordCiphertext,
          definition.tagCacheSeconds,
          definition.negativeCacheSeconds,
          definition.offline ? 1 : 0,
          definition.dockerHub ? 1 : 0,
          definition.failureThreshold,
          definition.offlineSeconds,
          definition.recentPullSeconds,
        ),
    );
  }
  if (virtual) statements.push(...definitionStatements(db, key, virtual));
  try {
    await db.batch(statements);
  } catch (error) {
    if (isConstraintFailure(error, "UNIQUE", "repositories.key")) {
      throw new RegistryError("CONFLICT", `repository '${key}' already exists`, { key });
    }
    if (virtual && isForeignKeyFailure(error)) throw memberDeletedMeanwhile(key);
    throw error;
  }

  const auditDetail =
    definition.type === "remote"
      ? { type, url: definition.url, offline: definition.offline, passwordSet: definition.password !== undefined }
      : virtual
        ? { type, ...virtual }
        : { type };
  await audit(c, "repository.create", key, auditDetail);
  return c.json(await presentByKey(db, key), 201, { Location: `/api/v1/repositories/${key}` });
});

repositoryAdmin.get("/:key", async (c) => {
  const key = c.req.param("key");
  const repository = await presentByKey(c.env.DB, key);
  const images = await c.env.DB.prepare("SELECT COUNT(*) AS count FROM images WHERE repository_key = ?")
    .bind(key)
    .first<{ count: number }>();
  return c.json({ ...repository, imageCount: images?.count ?? 0 });
});

/**
 * Changes the settings of a remote repository, where content already cached
 * stays cached, or the description, members and default deployment
 * repository of a virtual repository. For a remote repository,
 * `username: null` also clears the password, and `offline: false` also ends
 * an automatic offline period and resets the failure count.
 */
repositoryAdmin.patch("/:key", async (c) => {
  requireAdministrator(c);
  const key = c.req.param("key");
  const body = await readJson(c.req.raw);
  if ((await getRepository(c.env.DB, key))?.type === "virtual") return updateVirtual(c, key, body);
  const patch = validate(updateRemoteSchema, body, "remote repository update");
  const repository = await getRepository(c.env.DB, key);
  if (!repository) throw new RegistryError("NAME_UNKNOWN", `repository '${key}' does not exist`);
  const settings = repository.type === "remote" ? await getRemoteSettings(c.env.DB, key) : null;
  if (!settings) {
    throw new RegistryError(
      "INVALID_REQUEST",
      `repository '${key}' is ${repository.type}; only remote and virtual repositories have settings to change`,
      {
        key,
      },
    );
  }
  const username = patch.username === undefined ? settings.username : patch.username;
  if (typeof patch.password === "string" && username === null) {
    throw new RegistryError("INVALID_REQUEST", "remote repository update is invalid", {
      issues: [{ path: "password", message: passwordNeedsUsername }],
    });
  }

  const columns = await changedColumns(c.env, key, patch);
  const assignments = Object.keys(columns).map((column) => `${column} = ?`);
  await c.env.DB.prepare(`UPDATE remote_repositories SET ${assignments.join(", ")} WHERE repository_key = ?`)
    .bind(...Object.values(columns), key)
    .run();

  await audit(c, "repository.update", key, {
    changed: Object.keys(patch),
    ...(patch.url !== undefined ? { url: patch.url } : {}),
    ...(patch.offline !== undefined ? { offline: patch.offline } : {}),
    ...(patch.password !== undefined || patch.username === null ? { passwordSet: typeof patch.password === "string" } : {}),
  });
  return c.json(await presentByKey(c.env.DB, key));
});

/** Maps a validated PATCH to the remote_repositories columns it sets, encrypting a new password. */
async function changedColumns(
  env: Env,
  key: string,
  patch: z.output<typeof updateRemoteSchema>,
): Promise<Record<string, string | number | null>> {
  const columns: Record<string, string | number | null> = {};
  if (patch.url !== undefined) columns.url = patch.url;
  if (patch.username !== undefined) columns.username = patch.username;
  if (patch.username === null || patch.password === null) columns.password_ciphertext = null;
  if (typeof patch.password === "string") columns.password_ciphertext = await encryptPassword(env, key, patch.password);
  if (patch.tagCacheSeconds !== undefined) columns.tag_cache_seconds = patch.tagCacheSeconds;
  if (patch.negativeCacheSeconds !== undefined) columns.negative_cache_seconds = patch.negativeCacheSeconds;
  if (patch.offline !== undefined) columns.offline = patch.offline ? 1 : 0;
  if (patch.offline === false) {
    columns.offline_until = null;
    columns.consecutive_failures = 0;
  }
  if (patch.dockerHub !== undefined) columns.docker_hub = patch.dockerHub ? 1 : 0;
  if (patch.failureThreshold !== undefined) columns.failure_threshold = patch.failureThreshold;
  if (patch.offlineSeconds !== undefined) columns.offline_seconds = patch.offlineSeconds;
  if (patch.recentPullSeconds !== undefined) columns.recent_pull_seconds = patch.recentPullSeconds;
  return columns;
}

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

async function updateVirtual(c: AppContext, key: string, body: unknown): Promise<Response> {
  const { statements, changed } = await updateStatements(c.env.DB, key, body);
  try {
    await c.env.DB.batch(statements);
  } catch (error) {
    if (isForeignKeyFailure(error)) throw memberDeletedMeanwhile(key);
    throw error;
  }
  await audit(c, "repository.update", key, { changed });
  return c.json(await presentByKey(c.env.DB, key));
}

function memberDeletedMeanwhile(key: string): RegistryError {
  return new RegistryError("CONFLICT", `a member of '${key}' was deleted while the request ran; check the members and retry`, { key });
}

// Registered last, so these only run for methods that no route above handles.
repositoryAdmin.all("/", (c) => rejectMethod(c.req.method, "GET, HEAD, POST"));
repositoryAdmin.all("/:key", (c) => rejectMethod(c.req.method, "GET, HEAD, PATCH, DELETE"));

/** Throws the 405 UNSUPPORTED error with the Allow header of the route. */
function rejectMethod(method: string, allowed: string): never {
  throw new RegistryError("UNSUPPORTED", `method ${method} is not allowed on this endpoint; allowed: ${allowed}`, null, { Allow: allowed });
}

function present(repository: RepositoryRow) {
  return { key: repository.key, type: repository.type, description: repository.description, createdAt: repository.created_at };
}

/** Presents a repository with its remote or virtual settings, if any. The response never contains an upstream password. */
async function presentByKey(db: D1Database, key: string) {
  const repository = await getRepository(db, key);
  if (!repository) throw new RegistryError("NAME_UNKNOWN", `repository '${key}' does not exist`);
  const virtual = repository.type === "virtual" ? await getVirtualSettings(db, key) : null;
  if (virtual) return { ...present(repository), ...presentVirtual(virtual) };
  const settings = repository.type === "remote" ? await getRemoteSettings(db, key) : null;
  return settings ? { ...present(repository), ...presentRemote(settings) } : present(repository);
}

/** Presents remote settings. `offlineUntil` is the end of an automatic offline period in force, else null. */
function presentRemote(settings: RemoteSettingsRow) {
  const offlineUntil = settings.offline_until !== null && settings.offline_until > nowSeconds() ? settings.offline_until : null;
  return {
    url: settings.url,
    username: settings.username,
    passwordSet: settings.password_ciphertext !== null,
    tagCacheSeconds: settings.tag_cache_seconds,
    negativeCacheSeconds: settings.negative_cache_seconds,
    offline: settings.offline === 1,
    offlineUntil: offlineUntil === null ? null : new Date(offlineUntil * 1000).toISOString(),
    failureThreshold: settings.failure_threshold,
    offlineSeconds: settings.offline_seconds,
    recentPullSeconds: settings.recent_pull_seconds,
    dockerHub: settings.docker_hub === 1,
  };
}

function validate<Schema extends z.ZodType>(schema: Schema, value: unknown, inputName: string): z.output<Schema> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;

  const issues = parsed.error.issues.map((issue) => ({ path: issue.path.join("."), message: issue.message }));
  throw new RegistryError("INVALID_REQUEST", `${inputName} is invalid`, { issues });
}

async function readJson(request: Request): Promise<unknown> {
  try {
    return await request.json();
  } catch {
    throw new RegistryError("INVALID_REQUEST", "request body must be JSON");
  }
}
