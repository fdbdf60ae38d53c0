import { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../context";
import { requireUser } from "./access";
import { administratorsOnly, parseQuery, rejectMethod } from "./shared";

/** Entries per page when the request gives no `limit`. */
const defaultPageSize = 100;
/** The largest `limit` a request may give. */
const maxPageSize = 1000;

const positiveInteger = z
  .string()
  .regex(/^[1-9][0-9]{0,15}$/, "must be a positive integer")
  .transform(Number);

const auditQuerySchema = z.strictObject({
  since: z.iso
    .datetime({ offset: true, message: "since must be an ISO 8601 time such as 2026-01-31T12:00:00Z" })
    .transform((time) => new Date(time).toISOString())
    .optional(),
  actor: z.string().min(1, "actor must not be empty").optional(),
  action: z.string().min(1, "action must not be empty").optional(),
  limit: positiveInteger.refine((limit) => limit <= maxPageSize, `limit must be at most ${maxPageSize}`).default(defaultPageSize),
  /** The pagination cursor from the Link header: entries with a smaller id than this one. */
  before: positiveInteger.optional(),
});

interface AuditRow {
  id: number;
  time: string;
  actor: string;
  action: string;
  target: string;
  client_address: string;
  detail: string | null;
}

/**
 * `GET /api/v1/audit?since=&actor=&action=&limit=`: the audit log, newest
 * first, for administrators only. `since` keeps entries at or after a time;
 * `actor` and `action` match exactly. When more entries remain, the `Link`
 * header gives the next page, which continues with a `before` cursor.
 */
export const auditLogAdmin = new Hono<AppEnv>();

auditLogAdmin.use(requireUser, administratorsOnly);

auditLogAdmin.get("/", async (c) => {
  const query = parseQuery(c, auditQuerySchema, "audit log query");

  const conditions: string[] = [];
  const bindings: (string | number)[] = [];
  if (query.since !== undefined) {
    conditions.push("time >= ?");
    bindings.push(query.since);
  }
  if (query.actor !== undefined) {
    conditions.push("actor = ?");
    bindings.push(query.actor);
  }
  if (query.action !== undefined) {
    conditions.push("action = ?");
    bindings.push(query.action);
  }
  if (query.before !== undefined) {
    conditions.push("id < ?");
    bindings.push(query.before);
  }
  const where = conditions.length > 0 ? `WHERE ${conditions.join(" AND ")}` : "";

  // One row more than the page shows whether another page follows.
  const { results } = await c.env.DB.prepare(
    `SELECT id, time, actor, action, target, client_address, detail FROM audit_log ${where} ORDER BY id DESC LIMIT ?`,
  )
    .bind(...bindings, query.limit + 1)
    .all<AuditRow>();
  const entries = results.slice(0, query.limit);

  const headers: Record<string, string> = {};
  if (results.length > query.limit) {
    const next = new URLSearchParams();
    if (query.since !== undefined) next.set("since", query.since);
    if (query.actor !== undefined) next.set("actor", query.actor);
    if (query.action !== undefined) next.set("action", query.action);
    next.set("limit", String(query.limit));
    next.set("before", String(entries[entries.length - 1]!.id));
    headers.Link = `</api/v1/audit?${next.toString()}>; rel="next"`;
  }
  return c.json({ entries: entries.map(present) }, 200, headers);
});

// Registered last, so it only runs for methods that the route above does not handle.
auditLogAdmin.all("/", (c) => rejectMethod(c.req.method, "GET, HEAD"));

function present(row: AuditRow) {
  return {
    id: row.id,
    time: row.time,
    actor: row.actor,
    action: row.action,
    target: row.target,
    clientAddress: row.client_address,
    detail: row.detail === null ? null : (JSON.parse(row.detail) as unknown),
  };
}
