import type { Context } from "hono";
import type { Principal } from "./auth/permissions";
import type { Env } from "./env";
import { getRepository, type RepositoryRow } from "./storage/metadata";

/** Values the request middleware sets for handlers and the request log. */
export interface RequestVariables {
  requestId: string;
  /** Ids added to this request's log line, such as repository, digest or upload id. */
  logFields: Record<string, unknown>;
  /** The authenticated sender of the request, set by the authentication middleware. */
  principal: Principal;
  /** The Docker token grants of the bearer token the request used, or null. */
  tokenAccess: import("./auth/scopes").RequestedScope[] | null;
  /** Set while a write through a virtual repository goes to its default deployment repository, so Locations keep the virtual key. */
  pushThrough: PushThrough | null;
  /** Repository rows this request has read, by key, so authorization, routing and handlers read each one once. */
  repositories: Map<string, Promise<RepositoryRow | null>>;
}

/** A write addressed to a virtual repository and stored in its default deployment repository. */
export interface PushThrough {
  virtualKey: string;
  deploymentKey: string;
}

export type AppEnv = { Bindings: Env; Variables: RequestVariables };

export type AppContext = Context<AppEnv>;

/** Adds ids to the request's log line. */
export function addLogFields(c: AppContext, fields: Record<string, unknown>): void {
  Object.assign(c.get("logFields"), fields);
}

/**
 * Returns the repository row of `key`, or null when it does not exist. The
 * row is read from D1 once per request, because authorization, routing and
 * the handler all need it and it does not change within a request.
 */
export function findRequestRepository(c: AppContext, key: string): Promise<RepositoryRow | null> {
  const repositories = c.get("repositories");
  let repository = repositories.get(key);
  if (!repository) {
    repository = getRepository(c.env.DB, key);
    repositories.set(key, repository);
  }
  return repository;
}
