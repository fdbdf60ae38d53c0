import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  adminRequest,
  anonymousAdminRequest,
  auditRows,
  createGroup,
  createTarget,
  createUser,
  issuePaths,
  uniqueName,
} from "./admin-helpers";
import { expectRegistryError } from "./helpers";

interface Group {
  name: string;
  description: string;
  admin: boolean;
  members: string[];
  createdAt: string;
}

const groupKeys = ["admin", "createdAt", "description", "members", "name"];

function createGroupRequest(body: unknown, authorization?: string): Promise<Response> {
  return adminRequest("POST", "/api/v1/groups", body, authorization);
}

async function showGroup(name: string): Promise<Group> {
  const response = await adminRequest("GET", `/api/v1/groups/${name}`);
  expect(response.status).toBe(200);
  return (await response.json()) as Group;
}

async function isAdministrator(authorization: string): Promise<boolean> {
  const response = await adminRequest("GET", "/api/v1/users", undefined, authorization);
  return response.status === 200;
}

describe("group create", () => {
  it("returns 201 with the group", async () => {
    const [first, second] = [await createUser("b-member"), await createUser("a-member")];
    const name = uniqueName("devs");

    const response = await createGroupRequest({ name, description: "Developers", members: [first.name, second.name, first.name] });

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/api/v1/groups/${name}`);
    const group = (await response.json()) as Group;
    expect(Object.keys(group).sort()).toEqual(groupKeys);
    expect(group).toMatchObject({ name, description: "Developers", admin: false, members: [second.name, first.name].sort() });
    expect(await showGroup(name)).toEqual(group);
  });

  it("defaults to no description and no members", async () => {
    const name = uniqueName("bare");

    const response = await createGroupRequest({ name });

    expect(await response.json()).toMatchObject({ name, description: "", admin: false, members: [] });
  });

  it("makes members of an admin group administrators", async () => {
    const user = await createUser("elevated");
    expect(await isAdministrator(user.authorization)).toBe(false);

    await createGroup("admins", { admin: true, members: [user.name] });

    expect(await isAdministrator(user.authorization)).toBe(true);
  });

  it("writes an audit entry", async () => {
    const user = await createUser("audited");
    const name = uniqueName("audited");

    await createGroupRequest({ name, admin: true, members: [user.name] });

    const rows = await auditRows(name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([["admin", "group.create"]]);
    expect(JSON.parse(rows[0]!.detail!)).toEqual({ description: "", admin: true, members: [user.name] });
  });

  it("rejects a duplicate name with 409", async () => {
    const name = await createGroup("twice", { description: "first" });

    const error = await expectRegistryError(await createGroupRequest({ name, description: "second" }), 409, "CONFLICT");

    expect(error.detail).toEqual({ name });
    expect((await showGroup(name)).description).toBe("first");
  });

  it("rejects unknown members with their names", async () => {
    const user = await createUser("known");
    const name = uniqueName("ghosts");

    const response = await createGroupRequest({ name, members: [user.name, "ghost-b", "ghost-a"] });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(error.detail).toEqual({ users: ["ghost-a", "ghost-b"] });
    expect(error.message).toContain("ghost-a");
    await expectRegistryError(await adminRequest("GET", `/api/v1/groups/${name}`), 404, "NOT_FOUND");
  });

  const invalidBodies: [string, unknown, string[]][] = [
    ["an uppercase name", { name: "Devs" }, ["name"]],
    ["a missing name", { description: "x" }, ["name"]],
    ["a string for admin", { name: "str-admin", admin: "true" }, ["admin"]],
    ["members that are not a list", { name: "bad-members", members: "alice" }, ["members"]],
    ["a number among members", { name: "num-members", members: [7] }, ["members.0"]],
    ["a description over 1024 characters", { name: "long", description: "d".repeat(1025) }, ["description"]],
    ["an unknown field", { name: "extra", owner: "admin" }, [""]],
    ["a JSON array", [], [""]],
  ];
  for (const [label, body, paths] of invalidBodies) {
    it(`rejects ${label}`, async () => {
      const error = await expectRegistryError(await createGroupRequest(body), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toEqual(paths);
    });
  }

  it("returns 401 to the anonymous user", async () => {
    await expectRegistryError(await anonymousAdminRequest("POST", "/api/v1/groups", { name: uniqueName("anon") }), 401, "UNAUTHORIZED");
  });

  it("returns 403 to a non-administrator", async () => {
    const caller = await createUser("plain");
    const name = uniqueName("self-made");

    const response = await createGroupRequest({ name, admin: true, members: [caller.name] }, caller.authorization);

    await expectRegistryError(response, 403, "DENIED");
    expect(await isAdministrator(caller.authorization)).toBe(false);
  });
});

describe("group list and show", () => {
  it("lists groups sorted, with members", async () => {
    const user = await createUser("listed");
    const names = [await createGroup("zulu", { members: [user.name] }), await createGroup("alpha")];

    const response = await adminRequest("GET", "/api/v1/groups");

    expect(response.status).toBe(200);
    const { groups } = (await response.json()) as { groups: Group[] };
    const listed = groups.map((group) => group.name);
    expect(listed).toEqual([...listed].sort());
    expect(groups.find((group) => group.name === names[0])?.members).toEqual([user.name]);
    expect(groups.find((group) => group.name === names[1])?.members).toEqual([]);
    for (const group of groups) expect(Object.keys(group).sort()).toEqual(groupKeys);
  });

  it("returns 404 for an unknown group", async () => {
    const error = await expectRegistryError(await adminRequest("GET", "/api/v1/groups/no-such-group"), 404, "NOT_FOUND");

    expect(error.detail).toEqual({ name: "no-such-group" });
  });

  it("returns 401 to the anonymous user", async () => {
    await expectRegistryError(await anonymousAdminRequest("GET", "/api/v1/groups"), 401, "UNAUTHORIZED");
  });

  it("returns 403 to a member of the group", async () => {
    const user = await createUser("insider");
    const group = await createGroup("visible", { members: [user.name] });

    await expectRegistryError(await adminRequest("GET", `/api/v1/groups/${group}`, undefined, user.authorization), 403, "DENIED");
  });
});

describe("group update", () => {
  it("changes the description", async () => {
    const name = await createGroup("described");

    const response = await adminRequest("PATCH", `/api/v1/groups/${name}`, { description: "New text" });

    expect(response.status).toBe(200);
    const group = (await response.json()) as Group;
    expect(Object.keys(group).sort()).toEqual(groupKeys);
    expect(group.description).toBe("New text");
    expect((await showGroup(name)).description).toBe("New text");
  });

  it("replaces the members", async () => {
    const [kept, dropped, added] = [await createUser("kept"), await createUser("dropped"), await createUser("added")];
    const name = await createGroup("replaced", { members: [kept.name, dropped.name] });

    const response = await adminRequest("PATCH", `/api/v1/groups/${name}`, { members: [added.name, kept.name] });

    expect(((await response.json()) as Group).members).toEqual([added.name, kept.name].sort());
  });

  it("empties the members", async () => {
    const user = await createUser("emptied");
    const name = await createGroup("emptied", { members: [user.name] });

    const response = await adminRequest("PATCH", `/api/v1/groups/${name}`, { members: [] });

    expect(((await response.json()) as Group).members).toEqual([]);
  });

  it("grants and revokes administrator rights", async () => {
    const user = await createUser("flagged");
    const name = await createGroup("flagged", { members: [user.name] });

    await adminRequest("PATCH", `/api/v1/groups/${name}`, { admin: true });
    expect(await isAdministrator(user.authorization)).toBe(true);

    await adminRequest("PATCH", `/api/v1/groups/${name}`, { admin: false });
    expect(await isAdministrator(user.authorization)).toBe(false);
  });

  it("writes an audit entry", async () => {
    const name = await createGroup("patched");

    await adminRequest("PATCH", `/api/v1/groups/${name}`, { description: "changed", admin: false });

    const rows = await auditRows(name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([
      ["admin", "group.create"],
      ["admin", "group.update"],
    ]);
    expect(JSON.parse(rows[1]!.detail!)).toEqual({ changed: ["description", "admin"], description: "changed", admin: false });
  });

  it("rejects unknown members with their names", async () => {
    const user = await createUser("stays");
    const name = await createGroup("guarded", { members: [user.name] });

    const response = await adminRequest("PATCH", `/api/v1/groups/${name}`, { members: ["ghost"] });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(error.detail).toEqual({ users: ["ghost"] });
    expect((await showGroup(name)).members).toEqual([user.name]);
  });

  it("rejects an empty update", async () => {
    const name = await createGroup("empty-patch");

    const error = await expectRegistryError(await adminRequest("PATCH", `/api/v1/groups/${name}`, {}), 400, "INVALID_REQUEST");

    expect(issuePaths(error.detail)).toEqual([""]);
  });

  it("rejects a rename", async () => {
    const name = await createGroup("renamed");

    const response = await adminRequest("PATCH", `/api/v1/groups/${name}`, { name: "other" });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual([""]);
  });

  it("returns 404 for an unknown group", async () => {
    await expectRegistryError(await adminRequest("PATCH", "/api/v1/groups/no-such-group", { description: "" }), 404, "NOT_FOUND");
  });

  it("returns 403 to a non-administrator", async () => {
    const caller = await createUser("climber");
    const name = await createGroup("ladder", { members: [caller.name] });

    const response = await adminRequest("PATCH", `/api/v1/groups/${name}`, { admin: true }, caller.authorization);

    await expectRegistryError(response, 403, "DENIED");
    expect((await showGroup(name)).admin).toBe(false);
  });

  it("returns 401 to the anonymous user", async () => {
    const name = await createGroup("untouched");

    await expectRegistryError(await anonymousAdminRequest("PATCH", `/api/v1/groups/${name}`, { admin: true }), 401, "UNAUTHORIZED");
  });
});

describe("group delete", () => {
  it("deletes with 204 and keeps the members", async () => {
    const user = await createUser("survivor");
    const name = await createGroup("doomed", { members: [user.name] });

    const response = await adminRequest("DELETE", `/api/v1/groups/${name}`);

    expect(response.status).toBe(204);
    await expectRegistryError(await adminRequest("GET", `/api/v1/groups/${name}`), 404, "NOT_FOUND");
    const shown = await adminRequest("GET", `/api/v1/users/${user.name}`);
    expect(((await shown.json()) as { groups: string[] }).groups).toEqual([]);
  });

  it("removes the group's grants", async () => {
    const name = await createGroup("granted");
    const target = await createTarget({ repositories: ["docker-local"], groups: { [name]: ["read"] } });

    expect((await adminRequest("DELETE", `/api/v1/groups/${name}`)).status).toBe(204);

    const shown = (await (await adminRequest("GET", `/api/v1/permissions/${target}`)).json()) as { groups: object };
    expect(shown.groups).toEqual({});
    const rows = await env.DB.prepare(
      "SELECT COUNT(*) AS count FROM permission_grants WHERE principal_type = 'group' AND principal_name = ?",
    )
      .bind(name)
      .first<{ count: number }>();
    expect(rows?.count).toBe(0);
  });

  it("writes an audit entry", async () => {
    const name = await createGroup("audited-delete");

    await adminRequest("DELETE", `/api/v1/groups/${name}`);

    expect((await auditRows(name)).map((row) => row.action)).toEqual(["group.create", "group.delete"]);
  });

  it("returns 404 for an unknown group", async () => {
    await expectRegistryError(await adminRequest("DELETE", "/api/v1/groups/no-such-group"), 404, "NOT_FOUND");
  });

  it("returns 403 to a non-administrator", async () => {
    const caller = await createUser("vandal");
    const name = await createGroup("protected");

    await expectRegistryError(await adminRequest("DELETE", `/api/v1/groups/${name}`, undefined, caller.authorization), 403, "DENIED");
    expect((await showGroup(name)).name).toBe(name);
  });
});

describe("group members", () => {
  it("adds a member with 204", async () => {
    const user = await createUser("joiner");
    const name = await createGroup("club");

    const response = await adminRequest("PUT", `/api/v1/groups/${name}/members/${user.name}`);

    expect(response.status).toBe(204);
    expect((await showGroup(name)).members).toEqual([user.name]);
  });

  it("adds a member twice with one audit entry", async () => {
    const user = await createUser("repeat");
    const name = await createGroup("repeat");

    expect((await adminRequest("PUT", `/api/v1/groups/${name}/members/${user.name}`)).status).toBe(204);
    expect((await adminRequest("PUT", `/api/v1/groups/${name}/members/${user.name}`)).status).toBe(204);

    expect((await showGroup(name)).members).toEqual([user.name]);
    const rows = await auditRows(name);
    expect(rows.map((row) => row.action)).toEqual(["group.create", "group.member.add"]);
    expect(JSON.parse(rows[1]!.detail!)).toEqual({ user: user.name });
  });

  it("removes a member with 204", async () => {
    const [leaving, staying] = [await createUser("leaving"), await createUser("staying")];
    const name = await createGroup("shrinking", { members: [leaving.name, staying.name] });

    const response = await adminRequest("DELETE", `/api/v1/groups/${name}/members/${leaving.name}`);

    expect(response.status).toBe(204);
    expect((await showGroup(name)).members).toEqual([staying.name]);
    const rows = await auditRows(name);
    expect(rows.map((row) => row.action)).toEqual(["group.create", "group.member.remove"]);
    expect(JSON.parse(rows[1]!.detail!)).toEqual({ user: leaving.name });
  });

  it("returns 404 when adding to an unknown group", async () => {
    const user = await createUser("orphan");

    await expectRegistryError(await adminRequest("PUT", `/api/v1/groups/no-such-group/members/${user.name}`), 404, "NOT_FOUND");
  });

  it("returns 404 when adding an unknown user", async () => {
    const name = await createGroup("lonely");

    const error = await expectRegistryError(await adminRequest("PUT", `/api/v1/groups/${name}/members/ghost`), 404, "NOT_FOUND");

    expect(error.detail).toEqual({ name: "ghost" });
  });

  it("returns 404 when removing a non-member", async () => {
    const user = await createUser("outsider");
    const name = await createGroup("closed");

    const error = await expectRegistryError(await adminRequest("DELETE", `/api/v1/groups/${name}/members/${user.name}`), 404, "NOT_FOUND");

    expect(error.detail).toEqual({ name, user: user.name });
  });

  it("returns 404 when removing an unknown user", async () => {
    const name = await createGroup("empty");

    await expectRegistryError(await adminRequest("DELETE", `/api/v1/groups/${name}/members/ghost`), 404, "NOT_FOUND");
  });

  it("returns 403 to a user adding themselves", async () => {
    const user = await createUser("gatecrasher");
    const name = await createGroup("vip", { admin: true });

    const response = await adminRequest("PUT", `/api/v1/groups/${name}/members/${user.name}`, undefined, user.authorization);

    await expectRegistryError(response, 403, "DENIED");
    expect((await showGroup(name)).members).toEqual([]);
  });

  it("returns 401 to the anonymous user", async () => {
    const user = await createUser("anon-target");
    const name = await createGroup("anon-group");

    await expectRegistryError(await anonymousAdminRequest("PUT", `/api/v1/groups/${name}/members/${user.name}`), 401, "UNAUTHORIZED");
  });
});

describe("group routes", () => {
  it("returns 405 for PUT on one group", async () => {
    const name = await createGroup("methods");

    const response = await adminRequest("PUT", `/api/v1/groups/${name}`, {});

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, PATCH, DELETE");
  });

  it("returns 405 for GET on a member", async () => {
    const response = await adminRequest("GET", "/api/v1/groups/any/members/admin");

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("PUT, DELETE");
  });
});
