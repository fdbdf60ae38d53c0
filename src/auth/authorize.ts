import { findRequestRepository, type AppContext } from "../context";
import { RegistryError } from "../errors";
import type { ImageName } from "../names";
import { serviceName } from "./credentials";
import { effectivePermissions, type Action } from "./permissions";
import { formatScope, type RequestedScope } from "./scopes";

/** The Docker token actions a client must request for each permission. */
const dockerActionsFor: Record<Action, string[]> = {
  read: ["pull"],
  annotate: ["pull"],
  deploy: ["pull", "push"],
  delete: ["delete"],
  manage: ["pull", "push", "delete"],
};

/**
 * Checks that the request may perform `action` on an image, and throws when
 * it may not. The anonymous user gets 401 with a Bearer challenge, and a user
 * who lacks the permission gets 403 DENIED. A registry token that lacks
 * `tokenAction` although its user has the permission gets 401
 * `insufficient_scope`. A repository that does not exist is checked as a
 * local one, so the error does not tell strangers which repositories exist.
 */
export async function requireAction(
  c: AppContext,
  image: ImageName,
  action: Action,
  tokenAction = dockerActionsFor[action].at(-1)!,
): Promise<void> {
  const principal = c.get("principal");
  const repository = (await findRequestRepository(c, image.repositoryKey)) ?? { key: image.repositoryKey, type: "local" };
  const effective = await effectivePermissions(c.env.DB, principal, repository, image.path);
  const scope: RequestedScope = { type: "repository", name: image.full, actions: dockerActionsFor[action] };

  if (!effective.has(action)) {
    if (principal.kind === "anonymous") throw challenge(c, "authentication required", scope);
    // The default message is the one that Docker Hub and the CNCF registry send, which docker, podman and skopeo print
    // after "denied:" and which scripts look for. The detail names the user, action and image.
    throw new RegistryError("DENIED", undefined, { user: principal.name, action, name: image.full });
  }

  const access = c.get("tokenAccess");
  if (access && !tokenGrants(access, image.full, tokenAction)) {
    throw challenge(c, `the bearer token does not grant '${tokenAction}' on ${image.full}`, scope, "insufficient_scope");
  }
}

/** Throws a 401 challenge unless the request carried valid credentials or a registry token. */
export function requireCredentials(c: AppContext, scope?: RequestedScope): void {
  if (c.get("principal").kind === "user" || c.get("tokenAccess") !== null) return;
  throw challenge(c, "authentication required", scope);
}

/** Builds UNAUTHORIZED with the WWW-Authenticate header that sends Docker clients to the token endpoint. */
export function challenge(c: AppContext, message: string, scope?: RequestedScope, error?: string): RegistryError {
  // Docker 20.10 decodes an error with the code's default message and a null detail as a bare code. It then prints only
  // "unauthorized" and retries each layer upload for 50 seconds, so a challenge for a scope names the scope in its detail.
  const detail = scope ? { scope: formatScope(scope) } : null;
  return new RegistryError("UNAUTHORIZED", message, detail, { "WWW-Authenticate": challengeHeader(c, scope, error) });
}

export function challengeHeader(c: AppContext, scope?: RequestedScope, error?: string): string {
  const origin = new URL(c.req.url).origin;
  const parts = [`realm="${origin}/v2/token"`, `service="${serviceName(c)}"`];
  if (scope) parts.push(`scope="${formatScope(scope)}"`);
  if (error) parts.push(`error="${error}"`);
  return `Bearer ${parts.join(",")}`;
}

function tokenGrants(access: RequestedScope[], name: string, tokenAction: string): boolean {
  return access.some(
    (grant) => grant.type === "repository" && grant.name === name && (grant.actions.includes(tokenAction) || grant.actions.includes("*")),
  );
}

/**
 * Returns whether the caller may perform `action` on an image of a member of
 * a virtual repository. Call it only after `requireAction` passed on the
 * virtual name: a Docker registry token names only that virtual name, so its
 * grants are not checked again here. The caller's permissions decide, still
 * narrowed by the scope of an access token, so a token limited to the virtual
 * repository reaches no member.
 */
export async function memberAllows(c: AppContext, image: ImageName, action: Action): Promise<boolean> {
  const repository = (await findRequestRepository(c, image.repositoryKey)) ?? { key: image.repositoryKey, type: "local" };
  const effective = await effectivePermissions(c.env.DB, c.get("principal"), repository, image.path);
  return effective.has(action);
}

/** Returns whether the request may perform `action` on an image, without throwing. */
export async function allows(c: AppContext, image: ImageName, action: Action): Promise<boolean> {
  try {
    await requireAction(c, image, action);
    return true;
  } catch (error) {
    if (error instanceof RegistryError) return false;
    throw error;
  }
}
