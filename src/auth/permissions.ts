import { matchesAntPattern } from "./patterns";

/** The actions a permission target can grant, in the order the API lists them. */
export const actions = ["read", "annotate", "deploy", "delete", "manage"] as const;
export type Action = (typeof actions)[number];

/** Repository selectors that stand for more than one repository in a permission target. */
export const anyRepository = "ANY";
export const anyLocalRepository = "ANY LOCAL";

/** The authenticated sender of a request. */
export interface Principal {
  kind: "user" | "anonymous";
  /** The user name, or "anonymous". */
  name: string;
  userId: number | null;
  /** True for administrators and members of an administrator group. */
  admin: boolean;
  groups: string[];
  /** The narrower scope of the access token the request used, or null. */
  tokenScope: TokenScope | null;
  /** The kind of credentials the request presented. */
  via: "anonymous" | "password" | "access-token" | "bearer-token" | "oidc";
  /** The group of an OpenID Connect login that a rule maps to a group rather than to a user. */
  oidcGroup?: string;
}

/** An access token's optional narrowing: the repositories and actions it may use. */
export interface TokenScope {
  repositories?: string[];
  actions?: Action[];
}

export const anonymousPrincipal: Principal = {
  kind: "anonymous",
  name: "anonymous",
  userId: null,
  admin: false,
  groups: [],
  tokenScope: null,
  via: "anonymous",
};

interface GrantRow {
  target: string;
  repositories: string;
  include_patterns: string;
  exclude_patterns: string;
  actions: string;
}

/** The actions a principal has at one image path, each with the permission targets that grant it. */
export type EffectivePermissions = Map<Action, string[]>;

/** Computes what a principal may do at `path` in a repository; see `permissionEvaluator`. */
export async function effectivePermissions(
  db: D1Database,
  principal: Principal,
  repository: { key: string; type: string },
  path: string,
): Promise<EffectivePermissions> {
  const evaluate = await permissionEvaluator(db, principal);
  return evaluate(repository, path);
}

/**
 * Loads a principal's grants once and returns a function that computes the
 * actions at any repository and path, for checks over many images such as
 * the catalog. Grants to the anonymous user apply to everyone, so a public
 * repository stays readable after login. An access token's scope can only
 * remove actions.
 */
export async function permissionEvaluator(
  db: D1Database,
  principal: Principal,
): Promise<(repository: { key: string; type: string }, path: string) => EffectivePermissions> {
  const rows = principal.admin ? [] : await grantsFor(db, principal);
  const grants = rows.map((row) => ({
    target: row.target,
    repositories: JSON.parse(row.repositories) as string[],
    includes: JSON.parse(row.include_patterns) as string[],
    excludes: JSON.parse(row.exclude_patterns) as string[],
    actions: JSON.parse(row.actions) as Action[],
  }));

  return (repository, path) => {
    const effective: EffectivePermissions = new Map();
    if (principal.admin) {
      for (const action of actions) effective.set(action, ["administrator"]);
      return narrowToTokenScope(effective, principal.tokenScope, repository.key);
    }
    for (const grant of grants) {
      if (!selectsRepository(grant.repositories, repository)) continue;
      if (!selectsPath(grant.includes, grant.excludes, path)) continue;
      for (const action of grant.actions) {
        const targets = effective.get(action) ?? [];
        if (!targets.includes(grant.target)) targets.push(grant.target);
        effective.set(action, targets);
      }
    }
    return narrowToTokenScope(effective, principal.tokenScope, repository.key);
  };
}

/**
 * Returns whether a principal may manage every image path of a repository,
 * as writing a permission target for it requires: an administrator, or a
 * grant of `manage` from a target that selects the repository, includes `**`
 * and excludes nothing. An access token's scope can remove the right.
 */
export async function managesWholeRepository(
  db: D1Database,
  principal: Principal,
  repository: { key: string; type: string },
): Promise<boolean> {
  if (!principal.admin) {
    const rows = await grantsFor(db, principal);
    const granted = rows.some(
      (row) =>
        (JSON.parse(row.actions) as Action[]).includes("manage") &&
        selectsRepository(JSON.parse(row.repositories) as string[], repository) &&
        (JSON.parse(row.include_patterns) as string[]).includes("**") &&
        (JSON.parse(row.exclude_patterns) as string[]).length === 0,
    );
    if (!granted) return false;
  }
  const effective: EffectivePermissions = new Map([["manage", []]]);
  return narrowToTokenScope(effective, principal.tokenScope, repository.key).has("manage");
}

async function grantsFor(db: D1Database, principal: Principal): Promise<GrantRow[]> {
  const groupPlaceholders = principal.groups.map(() => "?").join(", ");
  const groupClause = principal.groups.length > 0 ? `OR (g.principal_type = 'group' AND g.principal_name IN (${groupPlaceholders}))` : "";
  const userClause = principal.kind === "user" ? "OR (g.principal_type = 'user' AND g.principal_name = ?)" : "";
  const bindings = [...(principal.kind === "user" ? [principal.name] : []), ...principal.groups];
  const { results } = await db
    .prepare(
      `SELECT t.name AS target, t.repositories, t.include_patterns, t.exclude_patterns, g.actions
         FROM permission_grants g JOIN permission_targets t ON t.id = g.target_id
        WHERE g.principal_type = 'anonymous' ${userClause} ${groupClause}
        ORDER BY t.name`,
    )
    .bind(...bindings)
    .all<GrantRow>();
  return results;
}

function selectsRepository(selectors: string[], repository: { key: string; type: string }): boolean {
  return selectors.some(
    (selector) =>
      selector === anyRepository || (selector === anyLocalRepository && repository.type === "local") || selector === repository.key,
  );
}

/** Returns whether an include pattern matches the path and no exclude pattern does. */
function selectsPath(includes: string[], excludes: string[], path: string): boolean {
  if (excludes.some((pattern) => matchesAntPattern(pattern, path))) return false;
  return includes.some((pattern) => matchesAntPattern(pattern, path));
}

function narrowToTokenScope(effective: EffectivePermissions, scope: TokenScope | null, repositoryKey: string): EffectivePermissions {
  if (!scope) return effective;
  const repositoryAllowed = !scope.repositories || scope.repositories.includes(anyRepository) || scope.repositories.includes(repositoryKey);
  if (!repositoryAllowed) return new Map();
  if (!scope.actions) return effective;
  return new Map([...effective].filter(([action]) => scope.actions!.includes(action)));
}
