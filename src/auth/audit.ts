import type { AppContext } from "../context";
import { log } from "../log";

/**
 * Appends one entry to the audit log in D1: who did what to which target,
 * from which client address. `detail` must never contain a secret.
 */
export async function audit(
  c: AppContext,
  action: string,
  target: string,
  detail: Record<string, unknown> = {},
  actor?: string,
): Promise<void> {
  const who = actor ?? c.get("principal")?.name ?? "anonymous";
  const address = clientAddress(c);
  await c.env.DB.prepare("INSERT INTO audit_log (actor, action, target, client_address, detail) VALUES (?, ?, ?, ?, ?)")
    .bind(who, action, target, address, JSON.stringify(detail))
    .run();
  log.info("audit", { requestId: c.get("requestId"), actor: who, action, target, clientAddress: address });
}

/** The client address recorded when the request did not come through Cloudflare's network. */
export const unknownClientAddress = "unknown";

/** Returns the client's address as Cloudflare reports it, or "unknown" outside Cloudflare's network. */
export function clientAddress(c: AppContext): string {
  return c.req.header("CF-Connecting-IP") ?? unknownClientAddress;
}
