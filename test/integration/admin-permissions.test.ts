import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import {
  adminRequest,
  anonymousAdminRequest,
  auditRows,
  createGroup,
  createRepository,
  createTarget,
  createUser,
  insertAccessToken,
  issueMessages,
  issuePaths,
  uniqueName,
  type TestUser,
} from "./admin-helpers";
import { expectRegistryError } from "./helpers";

interface Target {
  name: string;
  repositories: string[];
  includePatterns: string[];
  excludePatterns: string[];
  users: Record<string, string[]>;
  groups: Record<string, string[]>;
  anonymous: string[];
  createdAt: string;
  updatedAt: string;
}

const targetKeys = ["anonymous", "createdAt", "excludePatterns", "groups", "includePatterns", "name", "repositories", "updatedAt", "users"];

function createTargetRequest(body: unknown, authorization?: string): Promise<Response> {
  return adminRequest("POST", "/api/v1/permissions", body, authorization);
}

async function showTarget(name: string): Promise<Target> {
  const response = await adminRequest("GET", `/api/v1/permissions/${name}`);
  expect(response.status).toBe(200);
  return (await response.json()) as Target;
}

async function grantRows(target: string): Promise<{ principal_type: string; principal_name: string; actions: string }[]> {
  const { results } = await env.DB.prepare(
    `SELECT g.principal_type, g.principal_name, g.actions FROM permission_grants g
       JOIN permission_targets t ON t.id = g.target_id WHERE t.name = ? ORDER BY g.principal_type, g.principal_name`,
  )
    .bind(target)
    .all<{ principal_type: string; principal_name: string; actions: string }>();
  return results;
}

/** Creates a user who manages the whole of a new repository, and returns both. */
async function repositoryManager(): Promise<{ manager: TestUser; repository: string }> {
  const repository = await createRepository("managed");
  const manager = await createUser("manager");
  await createTarget({ repositories: [repository], users: { [manager.name]: ["manage"] } }, "manage-grant");
  return { manager, repository };
}

describe("permission target create", () => {
  it("returns 201 with the defaults", async () => {
    const name = uniqueName("readers");

    const response = await createTargetRequest({ name, repositories: ["docker-local"] });

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/api/v1/permissions/${name}`);
    const target = (await response.json()) as Target;
    expect(Object.keys(target).sort()).toEqual(targetKeys);
    expect(target).toMatchObject({
      name,
      repositories: ["docker-local"],
      includePatterns: ["**"],
      excludePatterns: [],
      users: {},
      groups: {},
      anonymous: [],
    });
    expect(await showTarget(name)).toEqual(target);
  });

  it("stores grants to users, groups and anonymous", async () => {
    const user = await createUser("grantee");
    const group = await createGroup("grantees");
    const name = uniqueName("full");

    const response = await createTargetRequest({
      name,
      repositories: ["docker-local"],
      includePatterns: ["team/**", "tools/*"],
      excludePatterns: ["team/secret/**"],
      users: { [user.name]: ["deploy", "read", "read"] },
      groups: { [group]: ["delete"] },
      anonymous: ["read"],
    });

    expect(response.status).toBe(201);
    expect(await response.json()).toMatchObject({
      includePatterns: ["team/**", "tools/*"],
      excludePatterns: ["team/secret/**"],
      users: { [user.name]: ["read", "deploy"] },
      groups: { [group]: ["delete"] },
      anonymous: ["read"],
    });
    expect(await grantRows(name)).toEqual([
      { principal_type: "anonymous", principal_name: "", actions: '["read"]' },
      { principal_type: "group", principal_name: group, actions: '["delete"]' },
      { principal_type: "user", principal_name: user.name, actions: '["read","deploy"]' },
    ]);
  });

  it("stores no grant for an empty action list", async () => {
    const user = await createUser("nothing");
    const name = uniqueName("empty-actions");

    const response = await createTargetRequest({ name, repositories: ["docker-local"], users: { [user.name]: [] }, anonymous: [] });

    expect(((await response.json()) as Target).users).toEqual({});
    expect(await grantRows(name)).toEqual([]);
  });

  it("accepts ANY and ANY LOCAL", async () => {
    for (const selector of ["ANY", "ANY LOCAL"]) {
      const response = await createTargetRequest({ name: uniqueName("wide"), repositories: [selector] });

      expect(response.status).toBe(201);
      expect(((await response.json()) as Target).repositories).toEqual([selector]);
    }
  });

  it("writes an audit entry", async () => {
    const user = await createUser("audited");
    const name = uniqueName("audited");

    await createTargetRequest({ name, repositories: ["docker-local"], users: { [user.name]: ["read"] } });

    const rows = await auditRows(name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([["admin", "permission.create"]]);
    expect(JSON.parse(rows[0]!.detail!)).toEqual({
      repositories: ["docker-local"],
      includePatterns: ["**"],
      excludePatterns: [],
      users: { [user.name]: ["read"] },
      groups: {},
      anonymous: [],
    });
  });

  it("rejects a duplicate name with 409", async () => {
    const name = await createTarget({ repositories: ["docker-local"], anonymous: [] });

    const response = await createTargetRequest({ name, repositories: ["docker-local"], anonymous: ["read"] });

    const error = await expectRegistryError(response, 409, "CONFLICT");
    expect(error.detail).toEqual({ name });
    expect(await grantRows(name)).toEqual([]);
  });

  it("rejects unknown users with their names", async () => {
    const response = await createTargetRequest({
      name: uniqueName("ghost-user"),
      repositories: ["docker-local"],
      users: { ghost: ["read"] },
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(error.detail).toEqual({ repositories: [], users: ["ghost"], groups: [] });
  });

  it("rejects unknown groups with their names", async () => {
    const response = await createTargetRequest({
      name: uniqueName("ghost-group"),
      repositories: ["docker-local"],
      groups: { phantoms: ["read"] },
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(error.detail).toEqual({ repositories: [], users: [], groups: ["phantoms"] });
  });

  it("rejects an unknown repository", async () => {
    const response = await createTargetRequest({ name: uniqueName("ghost-repo"), repositories: ["never-created"] });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(error.detail).toEqual({ repositories: ["never-created"], users: [], groups: [] });
  });

  it("rejects the anonymous user as a user grant", async () => {
    const response = await createTargetRequest({
      name: uniqueName("anon-user"),
      repositories: ["docker-local"],
      users: { anonymous: ["read"] },
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(error.detail).toEqual({ repositories: [], users: ["anonymous"], groups: [] });
  });

  it("rejects the reserved name effective", async () => {
    const error = await expectRegistryError(
      await createTargetRequest({ name: "effective", repositories: ["docker-local"] }),
      400,
      "INVALID_REQUEST",
    );

    expect(issuePaths(error.detail)).toEqual(["name"]);
  });

  const invalidBodies: [string, Record<string, unknown>, string[]][] = [
    ["an uppercase name", { name: "Readers", repositories: ["docker-local"] }, ["name"]],
    ["missing repositories", { name: "no-repos" }, ["repositories"]],
    ["empty repositories", { name: "empty-repos", repositories: [] }, ["repositories"]],
    ["ANY beside a key", { name: "mixed", repositories: ["ANY", "docker-local"] }, ["repositories"]],
    ["an invalid repository key", { name: "bad-key", repositories: ["Docker"] }, ["repositories"]],
    ["an unknown action", { name: "bad-action", repositories: ["docker-local"], anonymous: ["write"] }, ["anonymous.0"]],
    ["actions that are not a list", { name: "bad-list", repositories: ["docker-local"], users: { admin: "read" } }, ["users.admin"]],
    ["users as a list", { name: "users-list", repositories: ["docker-local"], users: ["admin"] }, ["users"]],
    ["no include pattern", { name: "no-include", repositories: ["docker-local"], includePatterns: [] }, ["includePatterns"]],
    ["an empty pattern", { name: "empty-pattern", repositories: ["docker-local"], includePatterns: [""] }, ["includePatterns.0"]],
    ["a leading slash", { name: "rooted", repositories: ["docker-local"], includePatterns: ["/team/**"] }, ["includePatterns.0"]],
    ["an empty component", { name: "gap", repositories: ["docker-local"], excludePatterns: ["team//app"] }, ["excludePatterns.0"]],
    ["a trailing slash", { name: "trailing", repositories: ["docker-local"], excludePatterns: ["team/"] }, ["excludePatterns.0"]],
    ["an uppercase pattern", { name: "upper", repositories: ["docker-local"], includePatterns: ["Team/**"] }, ["includePatterns.0"]],
    ["an unknown field", { name: "extra", repositories: ["docker-local"], owner: "admin" }, [""]],
  ];
  for (const [label, body, paths] of invalidBodies) {
    it(`rejects ${label}`, async () => {
      const error = await expectRegistryError(await createTargetRequest(body), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toEqual(paths);
    });
  }

  it("explains a leading slash", async () => {
    const body = { name: "explained", repositories: ["docker-local"], includePatterns: ["/team"] };

    const error = await expectRegistryError(await createTargetRequest(body), 400, "INVALID_REQUEST");

    expect(issueMessages(error.detail).join(" ")).toContain("must not start with '/'");
  });

  it("returns 401 to the anonymous user", async () => {
    const response = await anonymousAdminRequest("POST", "/api/v1/permissions", {
      name: uniqueName("anon"),
      repositories: ["docker-local"],
    });

    await expectRegistryError(response, 401, "UNAUTHORIZED");
  });

  it("returns 403 to a user without manage", async () => {
    const caller = await createUser("reader");
    await createTarget({ repositories: ["docker-local"], users: { [caller.name]: ["read", "deploy", "delete"] } });
    const name = uniqueName("self-grant");

    const response = await createTargetRequest(
      { name, repositories: ["docker-local"], users: { [caller.name]: ["manage"] } },
      caller.authorization,
    );

    const error = await expectRegistryError(response, 403, "DENIED");
    expect(error.detail).toEqual({ repositories: ["docker-local"] });
    await expectRegistryError(await adminRequest("GET", `/api/v1/permissions/${name}`), 404, "NOT_FOUND");
  });
});

describe("repository managers", () => {
  it("may create a target on their repository", async () => {
    const { manager, repository } = await repositoryManager();
    const reader = await createUser("reader");

    const response = await createTargetRequest(
      { name: uniqueName("delegated"), repositories: [repository], users: { [reader.name]: ["read"] } },
      manager.authorization,
    );

    expect(response.status).toBe(201);
  });

  it("are the actor of the audit entry", async () => {
    const { manager, repository } = await repositoryManager();
    const name = uniqueName("by-manager");

    await createTargetRequest({ name, repositories: [repository] }, manager.authorization);

    expect((await auditRows(name)).map((row) => [row.actor, row.action])).toEqual([[manager.name, "permission.create"]]);
  });

  it("may not add a repository they do not manage", async () => {
    const { manager, repository } = await repositoryManager();

    const response = await createTargetRequest(
      { name: uniqueName("overreach"), repositories: [repository, "docker-local"] },
      manager.authorization,
    );

    const error = await expectRegistryError(response, 403, "DENIED");
    expect(error.detail).toEqual({ repositories: ["docker-local"] });
  });

  it("may not create a target for ANY", async () => {
    const { manager } = await repositoryManager();

    await expectRegistryError(
      await createTargetRequest({ name: uniqueName("any"), repositories: ["ANY"] }, manager.authorization),
      403,
      "DENIED",
    );
  });

  it("may not create a target for ANY LOCAL", async () => {
    const { manager } = await repositoryManager();

    const response = await createTargetRequest({ name: uniqueName("any-local"), repositories: ["ANY LOCAL"] }, manager.authorization);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("need manage on the whole repository", async () => {
    const repository = await createRepository("partial");
    const manager = await createUser("partial");
    await createTarget({ repositories: [repository], excludePatterns: ["secret/**"], users: { [manager.name]: ["manage"] } });

    const response = await createTargetRequest({ name: uniqueName("partial"), repositories: [repository] }, manager.authorization);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("need manage on every path", async () => {
    const repository = await createRepository("narrow");
    const manager = await createUser("narrow");
    await createTarget({ repositories: [repository], includePatterns: ["team/**"], users: { [manager.name]: ["manage"] } });

    const response = await createTargetRequest({ name: uniqueName("narrow"), repositories: [repository] }, manager.authorization);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("may manage through a group", async () => {
    const repository = await createRepository("group-managed");
    const manager = await createUser("group-manager");
    const group = await createGroup("managers", { members: [manager.name] });
    await createTarget({ repositories: [repository], groups: { [group]: ["manage"] } });

    const response = await createTargetRequest({ name: uniqueName("via-group"), repositories: [repository] }, manager.authorization);

    expect(response.status).toBe(201);
  });

  it("may manage through an ANY LOCAL grant", async () => {
    const repository = await createRepository("any-local-managed");
    const manager = await createUser("wide-manager");
    await createTarget({ repositories: ["ANY LOCAL"], users: { [manager.name]: ["manage"] } });

    const response = await createTargetRequest({ name: uniqueName("via-any"), repositories: [repository] }, manager.authorization);

    expect(response.status).toBe(201);
  });

  it("see only the targets they manage", async () => {
    const { manager, repository } = await repositoryManager();
    const theirs = await createTarget({ repositories: [repository] });
    const other = await createTarget({ repositories: ["docker-local"] });

    const response = await adminRequest("GET", "/api/v1/permissions", undefined, manager.authorization);

    expect(response.status).toBe(200);
    const names = ((await response.json()) as { permissions: Target[] }).permissions.map((target) => target.name);
    expect(names).toContain(theirs);
    expect(names).not.toContain(other);
  });

  it("may read a target they manage", async () => {
    const { manager, repository } = await repositoryManager();
    const name = await createTarget({ repositories: [repository] });

    expect((await adminRequest("GET", `/api/v1/permissions/${name}`, undefined, manager.authorization)).status).toBe(200);
  });

  it("may not read another target", async () => {
    const { manager } = await repositoryManager();
    const name = await createTarget({ repositories: ["docker-local"] });

    await expectRegistryError(await adminRequest("GET", `/api/v1/permissions/${name}`, undefined, manager.authorization), 403, "DENIED");
  });

  it("may not move a target to another repository", async () => {
    const { manager, repository } = await repositoryManager();
    const name = await createTarget({ repositories: [repository] });

    const response = await adminRequest("PUT", `/api/v1/permissions/${name}`, { repositories: ["docker-local"] }, manager.authorization);

    await expectRegistryError(response, 403, "DENIED");
    expect((await showTarget(name)).repositories).toEqual([repository]);
  });

  it("may not take over another target", async () => {
    const { manager, repository } = await repositoryManager();
    const name = await createTarget({ repositories: ["docker-local"] });

    const response = await adminRequest("PUT", `/api/v1/permissions/${name}`, { repositories: [repository] }, manager.authorization);

    await expectRegistryError(response, 403, "DENIED");
    expect((await showTarget(name)).repositories).toEqual(["docker-local"]);
  });

  it("may delete a target they manage", async () => {
    const { manager, repository } = await repositoryManager();
    const name = await createTarget({ repositories: [repository] });

    expect((await adminRequest("DELETE", `/api/v1/permissions/${name}`, undefined, manager.authorization)).status).toBe(204);
  });

  it("may not delete another target", async () => {
    const { manager } = await repositoryManager();
    const name = await createTarget({ repositories: ["docker-local"] });

    await expectRegistryError(await adminRequest("DELETE", `/api/v1/permissions/${name}`, undefined, manager.authorization), 403, "DENIED");
    expect((await showTarget(name)).name).toBe(name);
  });
});

describe("narrowed administrator tokens", () => {
  it("may not create a target for ANY", async () => {
    const administrator = await createUser("scoped-admin", { admin: true });
    const secret = await insertAccessToken(administrator, { repositories: ["docker-local"] });

    const response = await createTargetRequest({ name: uniqueName("any"), repositories: ["ANY"] }, `Bearer ${secret}`);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("may create a target inside their scope", async () => {
    const administrator = await createUser("scoped-admin", { admin: true });
    const secret = await insertAccessToken(administrator, { repositories: ["docker-local"] });

    const response = await createTargetRequest({ name: uniqueName("in-scope"), repositories: ["docker-local"] }, `Bearer ${secret}`);

    expect(response.status).toBe(201);
  });

  it("may not create a target outside their scope", async () => {
    const repository = await createRepository("outside");
    const administrator = await createUser("scoped-admin", { admin: true });
    const secret = await insertAccessToken(administrator, { repositories: ["docker-local"] });

    const response = await createTargetRequest({ name: uniqueName("outside"), repositories: [repository] }, `Bearer ${secret}`);

    const error = await expectRegistryError(response, 403, "DENIED");
    expect(error.detail).toEqual({ repositories: [repository] });
  });

  it("may not create a target without manage", async () => {
    const administrator = await createUser("read-admin", { admin: true });
    const secret = await insertAccessToken(administrator, { actions: ["read", "deploy"] });

    const response = await createTargetRequest({ name: uniqueName("read-only"), repositories: ["docker-local"] }, `Bearer ${secret}`);

    await expectRegistryError(response, 403, "DENIED");
  });
});

describe("permission target list and show", () => {
  it("lists targets sorted by name", async () => {
    const names = [await createTarget({ repositories: ["docker-local"] }, "zz"), await createTarget({ repositories: ["ANY"] }, "aa")];

    const response = await adminRequest("GET", "/api/v1/permissions");

    expect(response.status).toBe(200);
    const { permissions } = (await response.json()) as { permissions: Target[] };
    const listed = permissions.map((target) => target.name);
    for (const name of names) expect(listed).toContain(name);
    expect(listed).toEqual([...listed].sort());
    for (const target of permissions) expect(Object.keys(target).sort()).toEqual(targetKeys);
  });

  it("returns an empty list to a user who manages nothing", async () => {
    const user = await createUser("nobody");
    await createTarget({ repositories: ["docker-local"] });

    const response = await adminRequest("GET", "/api/v1/permissions", undefined, user.authorization);

    expect(await response.json()).toEqual({ permissions: [] });
  });

  it("returns 404 for an unknown target", async () => {
    const error = await expectRegistryError(await adminRequest("GET", "/api/v1/permissions/no-such-target"), 404, "NOT_FOUND");

    expect(error.detail).toEqual({ name: "no-such-target" });
  });

  it("returns 401 to the anonymous user", async () => {
    await expectRegistryError(await anonymousAdminRequest("GET", "/api/v1/permissions"), 401, "UNAUTHORIZED");
  });
});

describe("permission target replace", () => {
  it("replaces the definition and the grants", async () => {
    const [before, after] = [await createUser("before"), await createUser("after")];
    const name = await createTarget({
      repositories: ["docker-local"],
      excludePatterns: ["x/**"],
      users: { [before.name]: ["read"] },
      anonymous: ["read"],
    });

    const response = await adminRequest("PUT", `/api/v1/permissions/${name}`, {
      repositories: ["ANY"],
      users: { [after.name]: ["deploy"] },
    });

    expect(response.status).toBe(200);
    const target = (await response.json()) as Target;
    expect(target).toMatchObject({
      name,
      repositories: ["ANY"],
      includePatterns: ["**"],
      excludePatterns: [],
      users: { [after.name]: ["deploy"] },
      groups: {},
      anonymous: [],
    });
    expect(await showTarget(name)).toEqual(target);
    expect(await grantRows(name)).toEqual([{ principal_type: "user", principal_name: after.name, actions: '["deploy"]' }]);
  });

  it("accepts the name from the path", async () => {
    const name = await createTarget({ repositories: ["docker-local"] });

    const response = await adminRequest("PUT", `/api/v1/permissions/${name}`, { name, repositories: ["ANY LOCAL"] });

    expect(response.status).toBe(200);
  });

  it("rejects another name", async () => {
    const name = await createTarget({ repositories: ["docker-local"] });

    const response = await adminRequest("PUT", `/api/v1/permissions/${name}`, { name: "renamed", repositories: ["docker-local"] });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["name"]);
  });

  it("writes an audit entry", async () => {
    const name = await createTarget({ repositories: ["docker-local"] });

    await adminRequest("PUT", `/api/v1/permissions/${name}`, { repositories: ["docker-local"], anonymous: ["read"] });

    const rows = await auditRows(name);
    expect(rows.map((row) => [row.actor, row.action])).toEqual([
      ["admin", "permission.create"],
      ["admin", "permission.update"],
    ]);
    expect(JSON.parse(rows[1]!.detail!)).toMatchObject({ repositories: ["docker-local"], anonymous: ["read"] });
  });

  it("rejects unknown users and keeps the old grants", async () => {
    const user = await createUser("kept");
    const name = await createTarget({ repositories: ["docker-local"], users: { [user.name]: ["read"] } });

    const response = await adminRequest("PUT", `/api/v1/permissions/${name}`, {
      repositories: ["docker-local"],
      users: { ghost: ["read"] },
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(error.detail).toEqual({ repositories: [], users: ["ghost"], groups: [] });
    expect((await showTarget(name)).users).toEqual({ [user.name]: ["read"] });
  });

  it("rejects an invalid pattern", async () => {
    const name = await createTarget({ repositories: ["docker-local"] });

    const response = await adminRequest("PUT", `/api/v1/permissions/${name}`, {
      repositories: ["docker-local"],
      includePatterns: ["/abs"],
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["includePatterns.0"]);
  });

  it("returns 404 for an unknown target", async () => {
    await expectRegistryError(
      await adminRequest("PUT", "/api/v1/permissions/no-such-target", { repositories: ["docker-local"] }),
      404,
      "NOT_FOUND",
    );
  });

  it("returns 403 to a user without manage", async () => {
    const caller = await createUser("intruder");
    const name = await createTarget({ repositories: ["docker-local"] });

    const response = await adminRequest(
      "PUT",
      `/api/v1/permissions/${name}`,
      { repositories: ["docker-local"], users: { [caller.name]: ["manage"] } },
      caller.authorization,
    );

    await expectRegistryError(response, 403, "DENIED");
    expect((await showTarget(name)).users).toEqual({});
  });

  it("returns 401 to the anonymous user", async () => {
    const name = await createTarget({ repositories: ["docker-local"] });

    await expectRegistryError(
      await anonymousAdminRequest("PUT", `/api/v1/permissions/${name}`, { repositories: ["ANY"] }),
      401,
      "UNAUTHORIZED",
    );
  });
});

describe("permission target delete", () => {
  it("deletes with 204 and removes the grants", async () => {
    const user = await createUser("ungranted");
    const name = await createTarget({ repositories: ["docker-local"], users: { [user.name]: ["read"] }, anonymous: ["read"] });

    const response = await adminRequest("DELETE", `/api/v1/permissions/${name}`);

    expect(response.status).toBe(204);
    await expectRegistryError(await adminRequest("GET", `/api/v1/permissions/${name}`), 404, "NOT_FOUND");
    expect(await grantRows(name)).toEqual([]);
    const orphans = await env.DB.prepare("SELECT COUNT(*) AS count FROM permission_grants WHERE principal_name = ?")
      .bind(user.name)
      .first<{ count: number }>();
    expect(orphans?.count).toBe(0);
  });

  it("writes an audit entry", async () => {
    const name = await createTarget({ repositories: ["docker-local"] });

    await adminRequest("DELETE", `/api/v1/permissions/${name}`);

    expect((await auditRows(name)).map((row) => row.action)).toEqual(["permission.create", "permission.delete"]);
  });

  it("returns 404 for an unknown target", async () => {
    await expectRegistryError(await adminRequest("DELETE", "/api/v1/permissions/no-such-target"), 404, "NOT_FOUND");
  });

  it("returns 403 to a user without manage", async () => {
    const caller = await createUser("vandal");
    const name = await createTarget({ repositories: ["docker-local"] });

    await expectRegistryError(await adminRequest("DELETE", `/api/v1/permissions/${name}`, undefined, caller.authorization), 403, "DENIED");
  });

  it("returns 401 to the anonymous user", async () => {
    const name = await createTarget({ repositories: ["docker-local"] });

    await expectRegistryError(await anonymousAdminRequest("DELETE", `/api/v1/permissions/${name}`), 401, "UNAUTHORIZED");
  });
});

describe("permission target routes", () => {
  it("returns 405 for PATCH on one target", async () => {
    const name = await createTarget({ repositories: ["docker-local"] });

    const response = await adminRequest("PATCH", `/api/v1/permissions/${name}`, {});

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, PUT, DELETE");
  });

  it("returns 405 for DELETE on the list", async () => {
    const response = await adminRequest("DELETE", "/api/v1/permissions");

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, POST");
  });

  it("returns 405 for POST on effective", async () => {
    const response = await adminRequest("POST", "/api/v1/permissions/effective", {});

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD");
  });
});
