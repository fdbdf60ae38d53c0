import type { PasswordHash } from "./passwords";
import type { Principal, TokenScope } from "./permissions";

export interface UserRow {
  id: number;
  name: string;
  email: string;
  password_hash: string | null;
  password_salt: string | null;
  password_iterations: number | null;
  admin: number;
  disabled: number;
  created_at: string;
  updated_at: string;
}

const userColumns = "id, name, email, password_hash, password_salt, password_iterations, admin, disabled, created_at, updated_at";

export async function findUserByName(db: D1Database, name: string): Promise<UserRow | null> {
  return db.prepare(`SELECT ${userColumns} FROM users WHERE name = ?`).bind(name).first<UserRow>();
}

export async function findUserById(db: D1Database, id: number): Promise<UserRow | null> {
  return db.prepare(`SELECT ${userColumns} FROM users WHERE id = ?`).bind(id).first<UserRow>();
}

export function storedPassword(user: UserRow): PasswordHash | null {
  if (!user.password_hash || !user.password_salt || !user.password_iterations) return null;
  return { hash: user.password_hash, salt: user.password_salt, iterations: user.password_iterations };
}

/** Builds the principal of an enabled user, with its groups; an administrator group makes the user an administrator. */
export async function userPrincipal(
  db: D1Database,
  user: UserRow,
  via: Principal["via"],
  tokenScope: TokenScope | null = null,
): Promise<Principal> {
  const { results } = await db
    .prepare("SELECT g.name, g.admin FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = ? ORDER BY g.name")
    .bind(user.id)
    .all<{ name: string; admin: number }>();
  return {
    kind: "user",
    name: user.name,
    userId: user.id,
    admin: user.admin === 1 || results.some((group) => group.admin === 1),
    groups: results.map((group) => group.name),
    tokenScope,
    via,
  };
}
