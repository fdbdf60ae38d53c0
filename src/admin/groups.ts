import { Hono } from "hono";
import { z } from "zod";
import { audit } from "../auth/audit";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";
import { requireUser } from "./access";
import { batchKeepingAdministrator } from "./administrators";
import { administratorsOnly, isConstraintFailure, parseJsonBody, rejectMethod, resourceName } from "./shared";

/** Maximum number of members one request may list, which bounds the JSON array that each membership statement reads. */
const maxMembersPerRequest = 1000;

const membersSchema = z
  .array(z.string())
  .max(maxMembersPerRequest, `members may list at most ${maxMembersPerRequest} users`)
  .transform((names) => [...new Set(names)].sort());

const createGroupSchema = z.strictObject({
  name: resourceName("group"),
  description: z.string().max(1024, "description must be at most 1024 characters long").default(""),
  admin: z.boolean().default(false),
  members: membersSchema.default([]),
});

const updateGroupSchema = z
  .strictObject({
    description: z.string().max(1024, "description must be at most 1024 characters long").optional(),
    admin: z.boolean().optional(),
    members: membersSchema.optional(),
  })
  .refine((patch) => Object.keys(patch).length > 0, "request must change at least one of description, admin and members");

interface GroupRow {
  id: number;
  name: string;
  description: string;
  admin: number;
  created_at: string;
}

/**
 * JSON admin API for groups under `/api/v1/groups`, for administrators only.
 * Members of a group with `admin: true` are administrators. A change that
 * would leave no enabled administrator fails with CONFLICT.
 */
export const groupAdmin = new Hono<AppEnv>();

groupAdmin.use(requireUser, administratorsOnly);

groupAdmin.get("/", async (c) => {
  const { results } = await c.env.DB.prepare("SELECT id, name, description, admin, created_at FROM groups ORDER BY name").all<GroupRow>();
  const members = await membersByGroup(c.env.DB);
  return c.json({ groups: results.map((group) => present(group, members.get(group.id) ?? [])) });
});

groupAdmin.post("/", async (c) => {
  const body = await parseJsonBody(c, createGroupSchema, "group definition");
  await requireKnownUsers(c, body.members);

  try {
    await c.env.DB.batch([
      c.env.DB.prepare("INSERT INTO groups (name, description, admin) VALUES (?, ?, ?)").bind(
        body.name,
        body.description,
        Number(body.admin),
      ),
      insertMembers(c.env.DB, body.name, body.members),
    ]);
  } catch (error) {
    if (isConstraintFailure(error, "UNIQUE", "groups.name")) {
      throw new RegistryError("CONFLICT", `group '${body.name}' already exists`, { name: body.name });
    }
    throw error;
  }

  await audit(c, "group.create", body.name, { description: body.description, admin: body.admin, members: body.members });
  const created = await requireGroup(c, body.name);
  return c.json(await presentOne(c, created), 201, { Location: `/api/v1/groups/${body.name}` });
});

groupAdmin.get("/:name", async (c) => {
  const group = await requireGroup(c, c.req.param("name"));
  return c.json(await presentOne(c, group));
});

/** Changes the description or the administrator flag, or replaces the member list. */
groupAdmin.patch("/:name", async (c) => {
  const name = c.req.param("name");
  const patch = await parseJsonBody(c, updateGroupSchema, "group update");
  const group = await requireGroup(c, name);
  if (patch.members) await requireKnownUsers(c, patch.members);

  const db = c.env.DB;
  const statements: D1PreparedStatement[] = [];
  if (patch.description !== undefined) {
    statements.push(db.prepare("UPDATE groups SET description = ? WHERE id = ?").bind(patch.description, group.id));
  }
  if (patch.admin !== undefined)
    statements.push(db.prepare("UPDATE groups SET admin = ? WHERE id = ?").bind(Number(patch.admin), group.id));
  if (patch.members) {
    statements.push(
      db
        .prepare(
          `DELETE FROM group_members
            WHERE group_id = ? AND user_id NOT IN (SELECT id FROM users WHERE name IN (SELECT value FROM json_each(?)))`,
        )
        .bind(group.id, JSON.stringify(patch.members)),
      insertMembers(db, name, patch.members),
    );
  }
  await batchKeepingAdministrator(db, statements, `the change to group '${name}' would leave no enabled administrator`, { name });

  await audit(c, "group.update", name, { changed: Object.keys(patch), ...patch });
  return c.json(await presentOne(c, await requireGroup(c, name)));
});

/** Deletes the group with its memberships and permission grants, but keeps the member accounts. */
groupAdmin.delete("/:name", async (c) => {
  const name = c.req.param("name");
  const group = await requireGroup(c, name);

  await batchKeepingAdministrator(
    c.env.DB,
    [
      c.env.DB.prepare("DELETE FROM permission_grants WHERE principal_type = 'group' AND principal_name = ?").bind(name),
      c.env.DB.prepare("DELETE FROM groups WHERE id = ?").bind(group.id),
    ],
    `deleting group '${name}' would leave no enabled administrator`,
    { name },
  );

  await audit(c, "group.delete", name);
  return c.body(null, 204);
});

/** Adds a user to the group. Adding a member again changes nothing and still returns 204. */
groupAdmin.put("/:name/members/:user", async (c) => {
  const name = c.req.param("name");
  const userName = c.req.param("user");
  const group = await requireGroup(c, name);
  const userId = await requireUserId(c, userName);

  const result = await c.env.DB.prepare("INSERT INTO group_members (group_id, user_id) VALUES (?, ?) ON CONFLICT DO NOTHING")
    .bind(group.id, userId)
    .run();
  if (result.meta.changes > 0) await audit(c, "group.member.add", name, { user: userName });
  return c.body(null, 204);
});

groupAdmin.delete("/:name/members/:user", async (c) => {
  const name = c.req.param("name");
  const userName = c.req.param("user");
  const group = await requireGroup(c, name);
  const userId = await requireUserId(c, userName);

  const [result] = await batchKeepingAdministrator(
    c.env.DB,
    [c.env.DB.prepare("DELETE FROM group_members WHERE group_id = ? AND user_id = ?").bind(group.id, userId)],
    `removing '${userName}' from group '${name}' would leave no enabled administrator`,
    { name, user: userName },
  );
  if (result!.meta.changes === 0) {
    throw new RegistryError("NOT_FOUND", `user '${userName}' is not a member of group '${name}'`, { name, user: userName });
  }

  await audit(c, "group.member.remove", name, { user: userName });
  return c.body(null, 204);
});

// Registered last, so these only run for methods that no route above handles.
groupAdmin.all("/", (c) => rejectMethod(c.req.method, "GET, HEAD, POST"));
groupAdmin.all("/:name", (c) => rejectMethod(c.req.method, "GET, HEAD, PATCH, DELETE"));
groupAdmin.all("/:name/members/:user", (c) => rejectMethod(c.req.method, "PUT, DELETE"));

function present(group: GroupRow, members: string[]) {
  return { name: group.name, description: group.description, admin: group.admin === 1, members, createdAt: group.created_at };
}

async function presentOne(c: AppContext, group: GroupRow) {
  const members = await membersByGroup(c.env.DB, group.id);
  return present(group, members.get(group.id) ?? []);
}

async function requireGroup(c: AppContext, name: string): Promise<GroupRow> {
  const group = await c.env.DB.prepare("SELECT id, name, description, admin, created_at FROM groups WHERE name = ?")
    .bind(name)
    .first<GroupRow>();
  if (!group) throw new RegistryError("NOT_FOUND", `group '${name}' does not exist`, { name });
  return group;
}

async function requireUserId(c: AppContext, name: string): Promise<number> {
  const user = await c.env.DB.prepare("SELECT id FROM users WHERE name = ?").bind(name).first<{ id: number }>();
  if (!user) throw new RegistryError("NOT_FOUND", `user '${name}' does not exist`, { name });
  return user.id;
}

/** Throws INVALID_REQUEST listing every name in `names` that is not a user. */
async function requireKnownUsers(c: AppContext, names: string[]): Promise<void> {
  if (names.length === 0) return;
  const { results } = await c.env.DB.prepare("SELECT name FROM users WHERE name IN (SELECT value FROM json_each(?))")
    .bind(JSON.stringify(names))
    .all<{ name: string }>();
  const known = new Set(results.map((row) => row.name));
  const unknown = names.filter((name) => !known.has(name));
  if (unknown.length > 0) throw new RegistryError("INVALID_REQUEST", `unknown users: ${unknown.join(", ")}`, { users: unknown });
}

/** Adds the named users to the group, keeping existing memberships. */
function insertMembers(db: D1Database, groupName: string, members: string[]): D1PreparedStatement {
  return db
    .prepare(
      `INSERT INTO group_members (group_id, user_id)
       SELECT g.id, u.id FROM groups g JOIN users u ON u.name IN (SELECT value FROM json_each(?))
        WHERE g.name = ?
       ON CONFLICT DO NOTHING`,
    )
    .bind(JSON.stringify(members), groupName);
}

/** Maps group ids to the sorted names of their members, for one group or for all. */
async function membersByGroup(db: D1Database, groupId?: number): Promise<Map<number, string[]>> {
  const filter = groupId === undefined ? "" : "WHERE m.group_id = ?";
  const statement = db.prepare(`SELECT m.group_id, u.name FROM group_members m JOIN users u ON u.id = m.user_id ${filter} ORDER BY u.name`);
  const { results } = await (groupId === undefined ? statement : statement.bind(groupId)).all<{ group_id: number; name: string }>();

  const members = new Map<number, string[]>();
  for (const row of results) members.set(row.group_id, [...(members.get(row.group_id) ?? []), row.name]);
  return members;
}
