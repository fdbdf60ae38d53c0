import { Hono } from "hono";
import { z } from "zod";
import { audit } from "../auth/audit";
import { hashPassword } from "../auth/passwords";
import { findUserByName, type UserRow } from "../auth/users";
import type { AppContext, AppEnv } from "../context";
import { RegistryError } from "../errors";
import { requireUser } from "./access";
import { batchKeepingAdministrator } from "./administrators";
import { changeOwnPassword } from "./own-password";
import { administratorsOnly, newPasswordSchema, parseJsonBody, rejectMethod, resourceName } from "./shared";

/** The user name of requests without credentials, which no account may take. */
export const anonymousUserName = "anonymous";

const emailSchema = z
  .string()
  .max(254, "email must be at most 254 characters long")
  .refine((value) => value === "" || z.email().safeParse(value).success, "email must be an email address, or empty to clear it");

const createUserSchema = z.strictObject({
  name: resourceName("user").refine((name) => name !== anonymousUserName, `user name '${anonymousUserName}' is reserved`),
  password: newPasswordSchema,
  email: emailSchema.default(""),
  admin: z.boolean().default(false),
  disabled: z.boolean().default(false),
});

const updateUserSchema = z
  .strictObject({
    email: emailSchema.optional(),
    admin: z.boolean().optional(),
    disabled: z.boolean().optional(),
    password: newPasswordSchema.optional(),
  })
  .refine((patch) => Object.keys(patch).length > 0, "request must change at least one of email, admin, disabled and password");

/**
 * JSON admin API for user accounts under `/api/v1/users`. Only
 * administrators may use it, except `PUT /me/password`, with which any user
 * who logged in with a password changes their own.
 */
export const userAdmin = new Hono<AppEnv>();

userAdmin.use(requireUser);

userAdmin.put("/me/password", changeOwnPassword);

userAdmin.get("/", administratorsOnly, async (c) => {
  const { results } = await c.env.DB.prepare(
    "SELECT id, name, email, admin, disabled, created_at, updated_at FROM users ORDER BY name",
  ).all<PublicUserRow>();
  const groups = await groupsByUser(c.env.DB);
  return c.json({ users: results.map((user) => present(user, groups.get(user.id) ?? [])) });
});

userAdmin.post("/", administratorsOnly, async (c) => {
  const body = await parseJsonBody(c, createUserSchema, "user definition");

  const password = await hashPassword(body.password);
  const result = await c.env.DB.prepare(
    `INSERT INTO users (name, email, password_hash, password_salt, password_iterations, admin, disabled)
     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING`,
  )
    .bind(body.name, body.email, password.hash, password.salt, password.iterations, Number(body.admin), Number(body.disabled))
    .run();
  if (result.meta.changes === 0) throw new RegistryError("CONFLICT", `user '${body.name}' already exists`, { name: body.name });

  await audit(c, "user.create", body.name, { email: body.email, admin: body.admin, disabled: body.disabled });
  const created = await requireUserRow(c, body.name);
  return c.json(present(created, []), 201, { Location: `/api/v1/users/${body.name}` });
});

userAdmin.get("/:name", administratorsOnly, async (c) => {
  const user = await requireUserRow(c, c.req.param("name"));
  const groups = await groupsByUser(c.env.DB, user.id);
  return c.json(present(user, groups.get(user.id) ?? []));
});

userAdmin.patch("/:name", administratorsOnly, async (c) => {
  const name = c.req.param("name");
  const patch = await parseJsonBody(c, updateUserSchema, "user update");
  const user = await requireUserRow(c, name);

  const columns: Record<string, string | number> = {};
  if (patch.email !== undefined) columns.email = patch.email;
  if (patch.admin !== undefined) columns.admin = Number(patch.admin);
  if (patch.disabled !== undefined) columns.disabled = Number(patch.disabled);
  if (patch.password !== undefined) {
    const password = await hashPassword(patch.password);
    columns.password_hash = password.hash;
    columns.password_salt = password.salt;
    columns.password_iterations = password.iterations;
  }

  // Column names come from the fixed keys above, never from the request.
  const assignments = Object.keys(columns).map((column) => `${column} = ?`);
  const update = c.env.DB.prepare(
    `UPDATE users SET ${assignments.join(", ")}, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?`,
  ).bind(...Object.values(columns), user.id);
  const [result] = await batchKeepingAdministrator(
    c.env.DB,
    [update],
    `user '${name}' is the last enabled administrator; make another user an administrator first`,
    { name },
  );
  if (result!.meta.changes === 0) throw userNotFound(name);

  const { password: _password, ...visible } = patch;
  await audit(c, "user.update", name, { changed: Object.keys(patch), ...visible });
  const updated = await requireUserRow(c, name);
  const groups = await groupsByUser(c.env.DB, updated.id);
  return c.json(present(updated, groups.get(updated.id) ?? []));
});

/** Deletes the user with their group memberships, access tokens and permission grants. */
userAdmin.delete("/:name", administratorsOnly, async (c) => {
  const name = c.req.param("name");
  const user = await requireUserRow(c, name);

  const [, deleted] = await batchKeepingAdministrator(
    c.env.DB,
    [
      c.env.DB.prepare("DELETE FROM permission_grants WHERE principal_type = 'user' AND principal_name = ?").bind(name),
      c.env.DB.prepare("DELETE FROM users WHERE id = ?").bind(user.id),
    ],
    `user '${name}' is the last enabled administrator; make another user an administrator first`,
    { name },
  );
  if (deleted!.meta.changes === 0) throw userNotFound(name);

  await audit(c, "user.delete", name);
  return c.body(null, 204);
});

// Registered last, so these only run for methods that no route above handles.
userAdmin.all("/me/password", (c) => rejectMethod(c.req.method, "PUT"));
userAdmin.all("/", (c) => rejectMethod(c.req.method, "GET, HEAD, POST"));
userAdmin.all("/:name", (c) => rejectMethod(c.req.method, "GET, HEAD, PATCH, DELETE"));

/** A user row without the password columns, which no response may contain. */
type PublicUserRow = Omit<UserRow, "password_hash" | "password_salt" | "password_iterations">;

function present(user: PublicUserRow, groups: string[]) {
  return {
    name: user.name,
    email: user.email,
    admin: user.admin === 1,
    disabled: user.disabled === 1,
    groups,
    createdAt: user.created_at,
    updatedAt: user.updated_at,
  };
}

async function requireUserRow(c: AppContext, name: string): Promise<UserRow> {
  const user = await findUserByName(c.env.DB, name);
  if (!user) throw userNotFound(name);
  return user;
}

function userNotFound(name: string): RegistryError {
  return new RegistryError("NOT_FOUND", `user '${name}' does not exist`, { name });
}

/** Maps user ids to the names of their groups, for one user or for all. */
async function groupsByUser(db: D1Database, userId?: number): Promise<Map<number, string[]>> {
  const filter = userId === undefined ? "" : "WHERE m.user_id = ?";
  const statement = db.prepare(
    `SELECT m.user_id, g.name FROM group_members m JOIN groups g ON g.id = m.group_id ${filter} ORDER BY g.name`,
  );
  const { results } = await (userId === undefined ? statement : statement.bind(userId)).all<{ user_id: number; name: string }>();

  const groups = new Map<number, string[]>();
  for (const row of results) groups.set(row.user_id, [...(groups.get(row.user_id) ?? []), row.name]);
  return groups;
}
