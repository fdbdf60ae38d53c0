import { Hono } from "hono";
import { z } from "zod";
import { audit } from "../auth/audit";
import { actions, anyLocalRepository, anyRepository, managesWholeRepository, type Action } from "../auth/permissions";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";
import { isRepositoryKey } from "../names";
import { getRepository } from "../storage/metadata";
import { actsAsAdministrator, requireUser } from "./access";
import { showEffectivePermissions } from "./effective";
import { isConstraintFailure, parseJsonBody, rejectMethod, resourceName } from "./shared";

/** `GET /api/v1/permissions/effective` takes this path, so no target may have the name. */
const reservedTargetName = "effective";

/** Maximum number of users, and of groups, that one target may grant to, which bounds the JSON that the grant statement reads. */
const maxPrincipalsPerTarget = 1000;

/** A list of actions, deduplicated and put in the order of `actions`. */
const actionListSchema = z.array(z.enum(actions)).transform((listed) => actions.filter((action) => listed.includes(action)));

const patternSchema = z.string().superRefine((pattern, context) => {
  const problem = patternProblem(pattern);
  if (problem) context.addIssue({ code: "custom", message: problem });
});

/** Returns the first reason why an include or exclude pattern is invalid, or null, so each pattern gets at most one issue. */
function patternProblem(pattern: string): string | null {
  if (pattern === "") return "a pattern must not be empty";
  if (pattern.length > 256) return "a pattern must be at most 256 characters long";
  if (pattern.startsWith("/")) return "a pattern must not start with '/', because image paths are relative to the repository";
  if (pattern.split("/").includes("")) return "a pattern must not contain an empty path component, as in 'a//b' or 'a/'";
  if (!/^[a-z0-9._\-/*?]+$/.test(pattern)) {
    return "a pattern may contain only a-z, 0-9, '.', '_', '-', '/' and the wildcards '*', '**' and '?', because image paths are lowercase";
  }
  return null;
}

const repositoriesSchema = z
  .array(z.string())
  .min(1, `repositories must list at least one repository key, or be ["${anyLocalRepository}"] or ["${anyRepository}"]`)
  .transform((keys) => [...new Set(keys)])
  .superRefine((keys, context) => {
    const selectors = keys.filter((key) => key === anyRepository || key === anyLocalRepository);
    if (selectors.length > 0 && keys.length > 1) {
      context.addIssue({ code: "custom", message: `"${selectors[0]}" must be the only entry of repositories` });
    }
    for (const key of keys) {
      if (key === anyRepository || key === anyLocalRepository || isRepositoryKey(key)) continue;
      context.addIssue({ code: "custom", message: `'${key}' is not a repository key, "${anyLocalRepository}" or "${anyRepository}"` });
    }
  });

const grantsSchema = z
  .record(z.string(), actionListSchema)
  .refine((grants) => Object.keys(grants).length <= maxPrincipalsPerTarget, `at most ${maxPrincipalsPerTarget} entries are allowed`);

const targetFields = {
  repositories: repositoriesSchema,
  includePatterns: z.array(patternSchema).min(1, 'includePatterns must list at least one pattern, such as "**"').default(["**"]),
  excludePatterns: z.array(patternSchema).default([]),
  users: grantsSchema.default({}),
  groups: grantsSchema.default({}),
  anonymous: actionListSchema.default([]),
};

const createTargetSchema = z.strictObject({
  name: resourceName("permission target").refine((name) => name !== reservedTargetName, `'${reservedTargetName}' is a reserved name`),
  ...targetFields,
});

/** A PUT replaces the whole definition. It may repeat `name` from the path but not change it. */
const replaceTargetSchema = z.strictObject({ name: z.string().optional(), ...targetFields });

type TargetDefinition = z.output<typeof replaceTargetSchema>;

interface TargetRow {
  id: number;
  name: string;
  repositories: string;
  include_patterns: string;
  exclude_patterns: string;
  created_at: string;
  updated_at: string;
}

interface GrantRow {
  target_id: number;
  principal_type: "user" | "group" | "anonymous";
  principal_name: string;
  actions: string;
}

/**
 * JSON admin API for permission targets under `/api/v1/permissions`. An
 * administrator may manage every target. Any other user may manage a target
 * when they manage the whole of every repository it names, which excludes
 * targets for "ANY" and "ANY LOCAL". Also serves the effective permissions.
 */
export const permissionTargetAdmin = new Hono<AppEnv>();

permissionTargetAdmin.use(requireUser);

// Registered before "/:name", which would otherwise take the path.
permissionTargetAdmin.get(`/${reservedTargetName}`, showEffectivePermissions);

permissionTargetAdmin.get("/", async (c) => {
  const { results } = await c.env.DB.prepare(
    "SELECT id, name, repositories, include_patterns, exclude_patterns, created_at, updated_at FROM permission_targets ORDER BY name",
  ).all<TargetRow>();
  const managed = new ManagementCheck(c);
  const visible: TargetRow[] = [];
  for (const target of results) {
    if ((await managed.unmanagedRepositories(JSON.parse(target.repositories) as string[])).length === 0) visible.push(target);
  }

  const grants = await grantsByTarget(c.env.DB);
  return c.json({ permissions: visible.map((target) => present(target, grants.get(target.id) ?? [])) });
});

permissionTargetAdmin.post("/", async (c) => {
  const body = await parseJsonBody(c, createTargetSchema, "permission target");
  await new ManagementCheck(c).require(body.repositories);
  await requireKnownReferences(c, body);

  const db = c.env.DB;
  try {
    await db.batch([
      db
        .prepare("INSERT INTO permission_targets (name, repositories, include_patterns, exclude_patterns) VALUES (?, ?, ?, ?)")
        .bind(body.name, JSON.stringify(body.repositories), JSON.stringify(body.includePatterns), JSON.stringify(body.excludePatterns)),
      insertGrants(db, body.name, body),
    ]);
  } catch (error) {
    if (isConstraintFailure(error, "UNIQUE", "permission_targets.name")) {
      throw new RegistryError("CONFLICT", `permission target '${body.name}' already exists`, { name: body.name });
    }
    throw error;
  }

  await audit(c, "permission.create", body.name, definitionForAudit(body));
  return c.json(await presentOne(c, await requireTarget(c, body.name)), 201, { Location: `/api/v1/permissions/${body.name}` });
});

permissionTargetAdmin.get("/:name", async (c) => {
  const target = await requireTarget(c, c.req.param("name"));
  await new ManagementCheck(c).require(JSON.parse(target.repositories) as string[]);
  return c.json(await presentOne(c, target));
});

/** Replaces the whole definition of a target; fields left out take their defaults. */
permissionTargetAdmin.put("/:name", async (c) => {
  const name = c.req.param("name");
  const body = await parseJsonBody(c, replaceTargetSchema, "permission target");
  if (body.name !== undefined && body.name !== name) {
    throw new RegistryError("INVALID_REQUEST", "permission target is invalid", {
      issues: [{ path: "name", message: `name must be '${name}' as in the path, because targets cannot be renamed` }],
    });
  }
  const target = await requireTarget(c, name);
  const managed = new ManagementCheck(c);
  await managed.require(JSON.parse(target.repositories) as string[]);
  await managed.require(body.repositories);
  await requireKnownReferences(c, body);

  const db = c.env.DB;
  const [updated] = await db.batch([
    db
      .prepare(
        `UPDATE permission_targets
            SET repositories = ?, include_patterns = ?, exclude_patterns = ?, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
          WHERE id = ?`,
      )
      .bind(JSON.stringify(body.repositories), JSON.stringify(body.includePatterns), JSON.stringify(body.excludePatterns), target.id),
    db.prepare("DELETE FROM permission_grants WHERE target_id = ?").bind(target.id),
    insertGrants(db, name, body),
  ]);
  if (updated!.meta.changes === 0) throw targetNotFound(name);

  await audit(c, "permission.update", name, definitionForAudit(body));
  return c.json(await presentOne(c, await requireTarget(c, name)));
});

permissionTargetAdmin.delete("/:name", async (c) => {
  const name = c.req.param("name");
  const target = await requireTarget(c, name);
  await new ManagementCheck(c).require(JSON.parse(target.repositories) as string[]);

  // The target's grants go with it through ON DELETE CASCADE.
  const result = await c.env.DB.prepare("DELETE FROM permission_targets WHERE id = ?").bind(target.id).run();
  if (result.meta.changes === 0) throw targetNotFound(name);

  await audit(c, "permission.delete", name);
  return c.body(null, 204);
});

// Registered last, so these only run for methods that no route above handles.
permissionTargetAdmin.all(`/${reservedTargetName}`, (c) => rejectMethod(c.req.method, "GET, HEAD"));
permissionTargetAdmin.all("/", (c) => rejectMethod(c.req.method, "GET, HEAD, POST"));
permissionTargetAdmin.all("/:name", (c) => rejectMethod(c.req.method, "GET, HEAD, PUT, DELETE"));

/**
 * Checks whether the caller may manage targets for a list of repository
 * selectors, caching the result for each repository during the request.
 */
class ManagementCheck {
  readonly #c: AppContext;
  readonly #results = new Map<string, boolean>();

  constructor(c: AppContext) {
    this.#c = c;
  }

  /** Throws DENIED unless the caller manages every repository in `selectors`. */
  async require(selectors: string[]): Promise<void> {
    const principal = this.#c.get("principal");
    const unmanaged = await this.unmanagedRepositories(selectors);
    if (unmanaged.length === 0) return;

    if (selectors.includes(anyRepository) || selectors.includes(anyLocalRepository)) {
      throw new RegistryError("DENIED", `only administrators may manage permission targets for "${selectors[0]}"`, {
        repositories: selectors,
      });
    }
    throw new RegistryError("DENIED", `user '${principal.name}' does not manage repositories: ${unmanaged.join(", ")}`, {
      repositories: unmanaged,
    });
  }

  /** Returns the selectors that the caller does not manage. "ANY" and "ANY LOCAL" need an administrator. */
  async unmanagedRepositories(selectors: string[]): Promise<string[]> {
    const principal = this.#c.get("principal");
    if (actsAsAdministrator(principal)) return [];

    const unmanaged: string[] = [];
    for (const selector of selectors) {
      if (!(await this.#manages(selector))) unmanaged.push(selector);
    }
    return unmanaged;
  }

  async #manages(selector: string): Promise<boolean> {
    if (selector === anyRepository || selector === anyLocalRepository) return false;
    const cached = this.#results.get(selector);
    if (cached !== undefined) return cached;

    const db = this.#c.env.DB;
    const repository = await getRepository(db, selector);
    const manages = repository !== null && (await managesWholeRepository(db, this.#c.get("principal"), repository));
    this.#results.set(selector, manages);
    return manages;
  }
}

/** Throws INVALID_REQUEST naming every repository, user and group in the definition that does not exist. */
async function requireKnownReferences(c: AppContext, definition: TargetDefinition): Promise<void> {
  const keys = definition.repositories.filter((key) => key !== anyRepository && key !== anyLocalRepository);
  const missing = {
    repositories: await missingNames(c.env.DB, "repositories", "key", keys),
    users: await missingNames(c.env.DB, "users", "name", Object.keys(definition.users)),
    groups: await missingNames(c.env.DB, "groups", "name", Object.keys(definition.groups)),
  };
  const problems = Object.entries(missing)
    .filter(([, names]) => names.length > 0)
    .map(([kind, names]) => `unknown ${kind}: ${names.join(", ")}`);
  if (problems.length > 0) throw new RegistryError("INVALID_REQUEST", problems.join("; "), missing);
}

async function missingNames(db: D1Database, table: "repositories" | "users" | "groups", column: "key" | "name", names: string[]) {
  if (names.length === 0) return [];
  const { results } = await db
    .prepare(`SELECT ${column} AS name FROM ${table} WHERE ${column} IN (SELECT value FROM json_each(?))`)
    .bind(JSON.stringify(names))
    .all<{ name: string }>();
  const known = new Set(results.map((row) => row.name));
  return names.filter((name) => !known.has(name));
}

/** Inserts the grants of a definition for the named target in one statement, skipping empty action lists. */
function insertGrants(db: D1Database, targetName: string, definition: TargetDefinition): D1PreparedStatement {
  const grants = [
    ...Object.entries(definition.users).map(([name, listed]) => ({ type: "user", name, actions: listed })),
    ...Object.entries(definition.groups).map(([name, listed]) => ({ type: "group", name, actions: listed })),
    { type: "anonymous", name: "", actions: definition.anonymous },
  ]
    .filter((grant) => grant.actions.length > 0)
    .map((grant) => ({ ...grant, actions: JSON.stringify(grant.actions) }));
  return db
    .prepare(
      `INSERT INTO permission_grants (target_id, principal_type, principal_name, actions)
       SELECT t.id, json_extract(j.value, '$.type'), json_extract(j.value, '$.name'), json_extract(j.value, '$.actions')
         FROM permission_targets t, json_each(?) j
        WHERE t.name = ?`,
    )
    .bind(JSON.stringify(grants), targetName);
}

async function requireTarget(c: AppContext, name: string): Promise<TargetRow> {
  const target = await c.env.DB.prepare(
    "SELECT id, name, repositories, include_patterns, exclude_patterns, created_at, updated_at FROM permission_targets WHERE name = ?",
  )
    .bind(name)
    .first<TargetRow>();
  if (!target) throw targetNotFound(name);
  return target;
}

function targetNotFound(name: string): RegistryError {
  return new RegistryError("NOT_FOUND", `permission target '${name}' does not exist`, { name });
}

/** Maps target ids to their grants, ordered by principal name. */
async function grantsByTarget(db: D1Database, targetId?: number): Promise<Map<number, GrantRow[]>> {
  const filter = targetId === undefined ? "" : "WHERE target_id = ?";
  const statement = db.prepare(
    `SELECT target_id, principal_type, principal_name, actions FROM permission_grants ${filter} ORDER BY principal_name`,
  );
  const { results } = await (targetId === undefined ? statement : statement.bind(targetId)).all<GrantRow>();

  const grants = new Map<number, GrantRow[]>();
  for (const row of results) grants.set(row.target_id, [...(grants.get(row.target_id) ?? []), row]);
  return grants;
}

async function presentOne(c: AppContext, target: TargetRow) {
  const grants = await grantsByTarget(c.env.DB, target.id);
  return present(target, grants.get(target.id) ?? []);
}

function present(target: TargetRow, grants: GrantRow[]) {
  const users: Record<string, Action[]> = {};
  const groups: Record<string, Action[]> = {};
  let anonymous: Action[] = [];
  for (const grant of grants) {
    const granted = JSON.parse(grant.actions) as Action[];
    if (grant.principal_type === "user") users[grant.principal_name] = granted;
    else if (grant.principal_type === "group") groups[grant.principal_name] = granted;
    else anonymous = granted;
  }
  return {
    name: target.name,
    repositories: JSON.parse(target.repositories) as string[],
    includePatterns: JSON.parse(target.include_patterns) as string[],
    excludePatterns: JSON.parse(target.exclude_patterns) as string[],
    users,
    groups,
    anonymous,
    createdAt: target.created_at,
    updatedAt: target.updated_at,
  };
}

function definitionForAudit(definition: TargetDefinition) {
  const { name: _name, ...rest } = definition;
  return rest;
}
