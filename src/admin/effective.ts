import { z } from "zod";
import { actions, anonymousPrincipal, effectivePermissions, type Action, type Principal } from "../auth/permissions";
import { findUserByName, userPrincipal } from "../auth/users";
import type { AppContext } from "../context";
import { RegistryError } from "../errors";
import { parseImageName } from "../names";
import { getRepository } from "../storage/metadata";
import { actsAsAdministrator } from "./access";
import { parseQuery } from "./shared";

const effectiveQuerySchema = z.strictObject({
  repo: z.string().min(1, "repo must name a repository key, such as docker-local"),
  path: z.string().min(1, "path must name an image path inside the repository, such as team/app"),
  user: z.string().min(1, "user must name a user, or be 'anonymous'").optional(),
});

/**
 * `GET /api/v1/permissions/effective?repo=&path=&user=`: the actions that a
 * user has at one image path, each with the permission targets that grant
 * it. Without `user`, or with the caller's own name, it shows the caller's
 * permissions as narrowed by the token they used. Only administrators may
 * name another user or `anonymous`. A disabled user has no action.
 */
export async function showEffectivePermissions(c: AppContext): Promise<Response> {
  const query = parseQuery(c, effectiveQuerySchema, "effective permissions query");
  const principal = await resolvePrincipal(c, query.user);

  const repository = await getRepository(c.env.DB, query.repo);
  if (!repository) throw new RegistryError("NAME_UNKNOWN", `repository '${query.repo}' does not exist`, { repository: query.repo });
  const image = parseImageName(`${repository.key}/${query.path}`);

  const effective = principal ? await effectivePermissions(c.env.DB, principal, repository, image.path) : new Map<Action, string[]>();
  const granted = actions.filter((action) => effective.has(action)).map((action) => [action, effective.get(action)!] as const);
  return c.json({
    repository: repository.key,
    path: image.path,
    user: principal?.name ?? query.user,
    actions: Object.fromEntries(granted),
  });
}

/** Returns the principal to evaluate, or null for a disabled user. */
async function resolvePrincipal(c: AppContext, userName: string | undefined): Promise<Principal | null> {
  const caller = c.get("principal");
  if (userName === undefined || userName === caller.name) return caller;
  if (!actsAsAdministrator(caller)) {
    throw new RegistryError("DENIED", "only administrators may show the permissions of another user", { user: userName });
  }
  if (userName === anonymousPrincipal.name) return anonymousPrincipal;

  const user = await findUserByName(c.env.DB, userName);
  if (!user) throw new RegistryError("NOT_FOUND", `user '${userName}' does not exist`, { name: userName });
  if (user.disabled === 1) return null;
  return userPrincipal(c.env.DB, user, "password");
}
