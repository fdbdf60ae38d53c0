import type { MiddlewareHandler } from "hono";
import { challenge } from "../auth/authorize";
import { authenticate } from "../auth/credentials";
import { actions, anyRepository, type Principal } from "../auth/permissions";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";

/**
 * Authenticates every admin API request with Basic credentials (a password
 * or an access token) or a Bearer access token. Registry tokens from
 * `/v2/token` are rejected here: they carry only image scopes, and Docker
 * clients send them on every registry request, so one that leaks must not
 * open the admin API. The anonymous user gets 401.
 */
export const requireUser: MiddlewareHandler<AppEnv> = async (c, next) => {
  const { principal, tokenAccess } = await authenticate(c);
  if (tokenAccess !== null) {
    throw new RegistryError("UNAUTHORIZED", "registry tokens are not accepted on the admin API; use Basic credentials or an access token");
  }
  c.set("principal", principal);
  c.set("tokenAccess", tokenAccess);
  if (principal.kind !== "user") throw challenge(c, "the admin API requires authentication");
  await next();
};

/** Throws DENIED unless the caller acts as an administrator; see `actsAsAdministrator`. */
export function requireAdministrator(c: AppContext): void {
  const principal = c.get("principal");
  if (!principal.admin) throw new RegistryError("DENIED", `user '${principal.name}' is not an administrator`);
  if (!actsAsAdministrator(principal)) {
    throw new RegistryError(
      "DENIED",
      `the access token of user '${principal.name}' is narrowed by a scope, so it has no administrator rights`,
    );
  }
}

/**
 * Returns whether a principal has administrator rights. An administrator's
 * access token has them only when its scope covers every repository and
 * every action, so a narrowed token cannot manage users or settings.
 */
export function actsAsAdministrator(principal: Principal): boolean {
  if (!principal.admin) return false;
  const scope = principal.tokenScope;
  if (!scope) return true;
  const everyRepository = !scope.repositories || scope.repositories.includes(anyRepository);
  const everyAction = !scope.actions || actions.every((action) => scope.actions!.includes(action));
  return everyRepository && everyAction;
}
