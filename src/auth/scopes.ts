import type { Action } from "./permissions";

/** A Docker token scope such as `repository:docker-local/app:pull,push`. */
export interface RequestedScope {
  type: string;
  name: string;
  actions: string[];
}

/** The Docker token actions and the permission each one needs. */
export const dockerActionPermission: Record<string, Action> = { pull: "read", push: "deploy", delete: "delete" };

/**
 * Parses one scope string. The name may itself contain colons, as in
 * `repository:localhost:5000/app:pull`, so the type ends at the first colon
 * and the actions start after the last one. Returns null for a malformed scope.
 */
export function parseScope(scope: string): RequestedScope | null {
  const first = scope.indexOf(":");
  const last = scope.lastIndexOf(":");
  if (first <= 0 || last <= first) return null;
  const name = scope.slice(first + 1, last);
  if (name === "") return null;
  const actions = scope
    .slice(last + 1)
    .split(",")
    .map((action) => action.trim())
    .filter((action) => action !== "");
  return { type: scope.slice(0, first), name, actions };
}

/** Formats a scope for a WWW-Authenticate challenge or a token's access claim. */
export function formatScope(scope: RequestedScope): string {
  return `${scope.type}:${scope.name}:${scope.actions.join(",")}`;
}
