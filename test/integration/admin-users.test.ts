import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  adminRequest,
  anonymousAdminRequest,
  auditRows,
  createGroup,
  createTarget,
  createUser,
  issueMessages,
  issuePaths,
  loginStatus,
  uniqueName,
  userPassword,
} from "./admin-helpers";
import { expectRegistryError } from "./helpers";

interface User {
  name: string;
  email: string;
  admin: boolean;
  disabled: boolean;
  groups: string[];
  createdAt: string;
  updatedAt: string;
}

const userKeys = ["admin", "createdAt", "disabled", "email", "groups", "name", "updatedAt"];

interface StoredPassword {
  password_hash: string;
  password_salt: string;
  password_iterations: number;
}

async function storedPassword(name: string): Promise<StoredPassword> {
  const row = await env.DB.prepare("SELECT password_hash, password_salt, password_iterations FROM users WHERE name = ?")
    .bind(name)
    .first<StoredPassword>();
  if (!row) throw new Error(`user ${name} has no row in D1`);
  return row;
}

function createUserRequest(body: unknown): Promise<Response> {
  return adminRequest("POST", "/api/v1/users", body);
}

describe("user create", () => {
  it("returns 201 with the user", async () => {
    const name = uniqueName("alice");

    const response = await createUserRequest({ name, password: userPassword, email: "alice@example.com" });

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/api/v1/users/${name}`);
    const user = (await response.json()) as User;
    expect(Object.keys(user).sort()).toEqual(userKeys);
    expect(user).toMatchObject({ name, email: "alice@example.com", admin: false, disabled: false, groups: [] });
    expect(user.createdAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  it("stores PBKDF2 with 100000 iterations", async () => {
    const name = uniqueName("hashed");

    const response = await createUserRequest({ name, password: userPassword });

    const text = await response.text();
    const stored = await storedPassword(name);
    expect(stored.password_iterations).toBe(100_000);
    expect(atob(stored.password_hash)).toHaveLength(32);
    expect(atob(stored.password_salt)).toHaveLength(16);
    expect(text).not.toContain(stored.password_hash);
    expect(text).not.toContain(stored.password_salt);
    expect(text).not.toContain(userPassword);
  });

  it("lets the new user log in", async () => {
    const name = uniqueName("login");
    expect((await createUserRequest({ name, password: userPassword })).status).toBe(201);

    expect(await loginStatus(name, userPassword)).toBe(200);
    expect(await loginStatus(name, `${userPassword}x`)).toBe(401);
  });

  it("creates an administrator", async () => {
    const name = uniqueName("boss");

    const response = await createUserRequest({ name, password: userPassword, admin: true });

    expect(((await response.json()) as User).admin).toBe(true);
    const listed = await adminRequest("GET", "/api/v1/users", undefined, `Basic ${btoa(`${name}:${userPassword}`)}`);
    expect(listed.status).toBe(200);
  });

  it("creates a disabled user who cannot log in", async () => {
    const name = uniqueName("off");

    const response = await createUserRequest({ name, password: userPassword, disabled: true });

    expect(((await response.json()) as User).disabled).toBe(true);
    expect(await loginStatus(name, userPassword)).toBe(401);
  });

  it("writes an audit entry without the password", async () => {
    const name = uniqueName("audited");

    await createUserRequest({ name, password: userPassword, email: "a@example.com" });

    const rows = await auditRows(name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([["admin", "user.create"]]);
    expect(JSON.parse(rows[0]!.detail!)).toEqual({ email: "a@example.com", admin: false, disabled: false });
    expect(rows[0]!.detail).not.toContain(userPassword);
  });

  it("rejects a duplicate name with 409", async () => {
    const name = uniqueName("twice");
    expect((await createUserRequest({ name, password: userPassword })).status).toBe(201);
    const before = await storedPassword(name);

    const error = await expectRegistryError(await createUserRequest({ name, password: `${userPassword}-2` }), 409, "CONFLICT");

    expect(error.detail).toEqual({ name });
    expect(await storedPassword(name)).toEqual(before);
  });

  it("rejects the reserved name anonymous", async () => {
    const error = await expectRegistryError(await createUserRequest({ name: "anonymous", password: userPassword }), 400, "INVALID_REQUEST");

    expect(issuePaths(error.detail)).toEqual(["name"]);
    expect(issueMessages(error.detail)[0]).toContain("reserved");
  });

  const invalidNames: [string, string][] = [
    ["uppercase", "Alice"],
    ["a leading dash", "-alice"],
    ["a leading dot", ".alice"],
    ["a slash", "team/alice"],
    ["a space", "al ice"],
    ["a colon", "al:ice"],
    ["65 characters", "a".repeat(65)],
    ["nothing", ""],
  ];
  for (const [label, name] of invalidNames) {
    it(`rejects a name with ${label}`, async () => {
      const error = await expectRegistryError(await createUserRequest({ name, password: userPassword }), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toEqual(["name"]);
    });
  }

  it("accepts a name of 64 characters", async () => {
    const name = `u${crypto.randomUUID().replaceAll("-", "")}`.padEnd(64, "_");

    expect((await createUserRequest({ name, password: userPassword })).status).toBe(201);
  });

  const invalidBodies: [string, Record<string, unknown> | unknown[] | null, string[]][] = [
    ["a password of 11 characters", { name: "short-pw", password: "a".repeat(11) }, ["password"]],
    ["a password over 1024 characters", { name: "long-pw", password: "a".repeat(1025) }, ["password"]],
    ["a missing password", { name: "no-pw" }, ["password"]],
    ["a missing name", { password: userPassword }, ["name"]],
    ["an invalid email", { name: "bad-mail", password: userPassword, email: "not-an-address" }, ["email"]],
    ["a string for admin", { name: "bad-admin", password: userPassword, admin: "yes" }, ["admin"]],
    ["a number for disabled", { name: "bad-disabled", password: userPassword, disabled: 1 }, ["disabled"]],
    ["an unknown field", { name: "extra", password: userPassword, role: "admin" }, [""]],
    ["a stored hash field", { name: "hash-field", password: userPassword, password_hash: "x" }, [""]],
    ["a JSON array", [], [""]],
    ["JSON null", null, [""]],
  ];
  for (const [label, body, paths] of invalidBodies) {
    it(`rejects ${label}`, async () => {
      const error = await expectRegistryError(await createUserRequest(body), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toEqual(paths);
    });
  }

  it("rejects a body that is not JSON", async () => {
    const error = await expectRegistryError(await createUserRequest("name=bob"), 400, "INVALID_REQUEST");

    expect(error.message).toContain("JSON");
  });

  it("creates nothing from an invalid body", async () => {
    await expectRegistryError(await createUserRequest({ name: "half-valid", password: "short" }), 400, "INVALID_REQUEST");

    await expectRegistryError(await adminRequest("GET", "/api/v1/users/half-valid"), 404, "NOT_FOUND");
  });

  it("returns 401 to the anonymous user", async () => {
    const response = await anonymousAdminRequest("POST", "/api/v1/users", { name: uniqueName("anon"), password: userPassword });

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  it("returns 403 to a user who is not an administrator", async () => {
    const caller = await createUser("plain");
    const name = uniqueName("victim");

    const response = await adminRequest("POST", "/api/v1/users", { name, password: userPassword }, caller.authorization);

    await expectRegistryError(response, 403, "DENIED");
    await expectRegistryError(await adminRequest("GET", `/api/v1/users/${name}`), 404, "NOT_FOUND");
  });
});

describe("user list and show", () => {
  it("lists users sorted by name", async () => {
    const created = [await createUser("zed"), await createUser("amy")];

    const response = await adminRequest("GET", "/api/v1/users");

    expect(response.status).toBe(200);
    const { users } = (await response.json()) as { users: User[] };
    const names = users.map((user) => user.name);
    for (const user of created) expect(names).toContain(user.name);
    expect(names).toContain("admin");
    expect(names).toEqual([...names].sort());
  });

  it("lists no password fields", async () => {
    const user = await createUser("secretive");
    const stored = await storedPassword(user.name);

    const response = await adminRequest("GET", "/api/v1/users");

    const text = await response.text();
    for (const listed of (JSON.parse(text) as { users: User[] }).users) expect(Object.keys(listed).sort()).toEqual(userKeys);
    expect(text).not.toContain(stored.password_hash);
    expect(text).not.toContain(stored.password_salt);
    expect(text).not.toContain("password");
  });

  it("shows a user with their groups", async () => {
    const user = await createUser("member");
    const group = await createGroup("crew", { members: [user.name] });

    const response = await adminRequest("GET", `/api/v1/users/${user.name}`);

    expect(response.status).toBe(200);
    const shown = (await response.json()) as User;
    expect(Object.keys(shown).sort()).toEqual(userKeys);
    expect(shown).toMatchObject({ name: user.name, groups: [group] });
  });

  it("returns 404 for an unknown user", async () => {
    const error = await expectRegistryError(await adminRequest("GET", "/api/v1/users/nobody-here"), 404, "NOT_FOUND");

    expect(error.detail).toEqual({ name: "nobody-here" });
  });

  it("returns 401 to the anonymous user on the list", async () => {
    await expectRegistryError(await anonymousAdminRequest("GET", "/api/v1/users"), 401, "UNAUTHORIZED");
  });

  it("returns 401 to the anonymous user on one user", async () => {
    await expectRegistryError(await anonymousAdminRequest("GET", "/api/v1/users/admin"), 401, "UNAUTHORIZED");
  });

  it("returns 403 to a non-administrator on the list", async () => {
    const caller = await createUser("curious");

    await expectRegistryError(await adminRequest("GET", "/api/v1/users", undefined, caller.authorization), 403, "DENIED");
  });

  it("returns 403 to a non-administrator on themselves", async () => {
    const caller = await createUser("self");

    const response = await adminRequest("GET", `/api/v1/users/${caller.name}`, undefined, caller.authorization);

    await expectRegistryError(response, 403, "DENIED");
  });
});

describe("user update", () => {
  it("changes the email", async () => {
    const user = await createUser("mail");

    const response = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { email: "new@example.com" });

    expect(response.status).toBe(200);
    const updated = (await response.json()) as User;
    expect(Object.keys(updated).sort()).toEqual(userKeys);
    expect(updated).toMatchObject({ name: user.name, email: "new@example.com", admin: false, disabled: false });
    const shown = (await (await adminRequest("GET", `/api/v1/users/${user.name}`)).json()) as User;
    expect(shown.email).toBe("new@example.com");
  });

  it("clears the email with an empty string", async () => {
    const user = await createUser("clear", { email: "old@example.com" });

    const response = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { email: "" });

    expect(((await response.json()) as User).email).toBe("");
  });

  it("promotes a user to administrator", async () => {
    const user = await createUser("promoted");
    await expectRegistryError(await adminRequest("GET", "/api/v1/users", undefined, user.authorization), 403, "DENIED");

    const response = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { admin: true });

    expect(((await response.json()) as User).admin).toBe(true);
    expect((await adminRequest("GET", "/api/v1/users", undefined, user.authorization)).status).toBe(200);
  });

  it("demotes an administrator", async () => {
    const user = await createUser("demoted", { admin: true });

    const response = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { admin: false });

    expect(((await response.json()) as User).admin).toBe(false);
    await expectRegistryError(await adminRequest("GET", "/api/v1/users", undefined, user.authorization), 403, "DENIED");
  });

  it("disables and enables a user", async () => {
    const user = await createUser("toggled");
    expect(await loginStatus(user.name, user.password)).toBe(200);

    const disabled = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { disabled: true });

    expect(((await disabled.json()) as User).disabled).toBe(true);
    expect(await loginStatus(user.name, user.password)).toBe(401);

    const enabled = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { disabled: false });

    expect(((await enabled.json()) as User).disabled).toBe(false);
    expect(await loginStatus(user.name, user.password)).toBe(200);
  });

  it("sets a new password", async () => {
    const user = await createUser("reset");
    const before = await storedPassword(user.name);
    const newPassword = "another-long-password";

    const response = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { password: newPassword });

    expect(response.status).toBe(200);
    const text = await response.text();
    const after = await storedPassword(user.name);
    expect(after.password_iterations).toBe(100_000);
    expect(after.password_hash).not.toBe(before.password_hash);
    expect(after.password_salt).not.toBe(before.password_salt);
    expect(text).not.toContain(after.password_hash);
    expect(text).not.toContain("password");
    expect(await loginStatus(user.name, newPassword)).toBe(200);
    expect(await loginStatus(user.name, user.password)).toBe(401);
  });

  it("writes an audit entry without the password", async () => {
    const user = await createUser("patched");
    const newPassword = "audited-new-password";

    await adminRequest("PATCH", `/api/v1/users/${user.name}`, { email: "p@example.com", password: newPassword });

    const rows = await auditRows(user.name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([
      ["admin", "user.create"],
      ["admin", "user.update"],
    ]);
    expect(JSON.parse(rows[1]!.detail!)).toEqual({ changed: ["email", "password"], email: "p@example.com" });
    expect(rows[1]!.detail).not.toContain(newPassword);
  });

  it("rejects an empty update", async () => {
    const user = await createUser("empty");

    const error = await expectRegistryError(await adminRequest("PATCH", `/api/v1/users/${user.name}`, {}), 400, "INVALID_REQUEST");

    expect(issuePaths(error.detail)).toEqual([""]);
  });

  const invalidPatches: [string, Record<string, unknown>, string[]][] = [
    ["a short password", { password: "short" }, ["password"]],
    ["a renamed user", { name: "renamed" }, [""]],
    ["an invalid email", { email: "nope" }, ["email"]],
    ["a null admin", { admin: null }, ["admin"]],
  ];
  for (const [label, patch, paths] of invalidPatches) {
    it(`rejects ${label}`, async () => {
      const user = await createUser("invalid-patch");

      const error = await expectRegistryError(await adminRequest("PATCH", `/api/v1/users/${user.name}`, patch), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toEqual(paths);
    });
  }

  it("returns 404 for an unknown user", async () => {
    await expectRegistryError(await adminRequest("PATCH", "/api/v1/users/nobody-here", { email: "" }), 404, "NOT_FOUND");
  });

  it("returns 401 to the anonymous user", async () => {
    const user = await createUser("target");

    await expectRegistryError(await anonymousAdminRequest("PATCH", `/api/v1/users/${user.name}`, { admin: true }), 401, "UNAUTHORIZED");
  });

  it("returns 403 to a user promoting themselves", async () => {
    const user = await createUser("climber");

    const response = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { admin: true }, user.authorization);

    await expectRegistryError(response, 403, "DENIED");
    expect(((await (await adminRequest("GET", `/api/v1/users/${user.name}`)).json()) as User).admin).toBe(false);
  });
});

describe("user delete", () => {
  it("deletes with 204, then returns 404", async () => {
    const user = await createUser("doomed");

    const response = await adminRequest("DELETE", `/api/v1/users/${user.name}`);

    expect(response.status).toBe(204);
    expect(await response.text()).toBe("");
    await expectRegistryError(await adminRequest("GET", `/api/v1/users/${user.name}`), 404, "NOT_FOUND");
    expect(await loginStatus(user.name, user.password)).toBe(401);
  });

  it("writes an audit entry", async () => {
    const user = await createUser("gone");

    await adminRequest("DELETE", `/api/v1/users/${user.name}`);

    const rows = await auditRows(user.name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([
      ["admin", "user.create"],
      ["admin", "user.delete"],
    ]);
  });

  it("removes the user's memberships and grants", async () => {
    const user = await createUser("leaver");
    const group = await createGroup("left", { members: [user.name] });
    const target = await createTarget({ repositories: ["docker-local"], users: { [user.name]: ["read"] } });

    expect((await adminRequest("DELETE", `/api/v1/users/${user.name}`)).status).toBe(204);

    const shownGroup = (await (await adminRequest("GET", `/api/v1/groups/${group}`)).json()) as { members: string[] };
    expect(shownGroup.members).toEqual([]);
    const shownTarget = (await (await adminRequest("GET", `/api/v1/permissions/${target}`)).json()) as { users: object };
    expect(shownTarget.users).toEqual({});
  });

  it("gives a new user of the same name no old grants", async () => {
    const user = await createUser("reused");
    await createTarget({ repositories: ["docker-local"], users: { [user.name]: ["read"] } });
    expect((await adminRequest("DELETE", `/api/v1/users/${user.name}`)).status).toBe(204);

    expect((await createUserRequest({ name: user.name, password: userPassword })).status).toBe(201);

    const response = await adminRequest("GET", `/api/v1/permissions/effective?repo=docker-local&path=app`, undefined, user.authorization);
    expect(((await response.json()) as { actions: object }).actions).toEqual({});
  });

  it("returns 404 for an unknown user", async () => {
    await expectRegistryError(await adminRequest("DELETE", "/api/v1/users/nobody-here"), 404, "NOT_FOUND");
  });

  it("returns 401 to the anonymous user", async () => {
    const user = await createUser("kept");

    await expectRegistryError(await anonymousAdminRequest("DELETE", `/api/v1/users/${user.name}`), 401, "UNAUTHORIZED");
    expect((await adminRequest("GET", `/api/v1/users/${user.name}`)).status).toBe(200);
  });

  it("returns 403 to a non-administrator", async () => {
    const caller = await createUser("vandal");
    const user = await createUser("spared");

    await expectRegistryError(await adminRequest("DELETE", `/api/v1/users/${user.name}`, undefined, caller.authorization), 403, "DENIED");
    expect((await adminRequest("GET", `/api/v1/users/${user.name}`)).status).toBe(200);
  });
});

describe("user routes", () => {
  it("serves HEAD on the list without a body", async () => {
    const response = await adminRequest("HEAD", "/api/v1/users");

    expect(response.status).toBe(200);
    expect(await response.text()).toBe("");
  });

  it("returns 405 for PUT on the list", async () => {
    const response = await adminRequest("PUT", "/api/v1/users", {});

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, POST");
  });

  it("returns 405 for POST on one user", async () => {
    const response = await adminRequest("POST", "/api/v1/users/admin", {});

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, PATCH, DELETE");
  });
});
