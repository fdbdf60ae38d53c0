import type { MiddlewareHandler } from "hono";
import { challenge } from "../auth/authorize";
import { authenticate } from "../auth/credentials";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";

/**
 * Authenticates every admin API request with Basic credentials (a password
 * or an access token) or a Bearer access token or registry token. The
 * anonymous user gets 401.
 */
export const requireUser: MiddlewareHandler<AppEnv> = async (c, next) => {
  const { principal, tokenAccess } = await authenticate(c);
  c.set("principal", principal);
  c.set("tokenAccess", tokenAccess);
  if (principal.kind !== "user") throw challenge(c, "the admin API requires authentication");
  await next();
};

/** Throws DENIED unless the caller is an administrator. */
export function requireAdministrator(c: AppContext): void {
  const principal = c.get("principal");
  if (!principal.admin) throw new RegistryError("DENIED", `user '${principal.name}' is not an administrator`);
}
