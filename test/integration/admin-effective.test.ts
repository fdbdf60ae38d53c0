import { describe, expect, it } from "vitest";
import {
  adminRequest,
  anonymousAdminRequest,
  createGroup,
  createRepository,
  createTarget,
  createUser,
  insertAccessToken,
  issuePaths,
  type TestUser,
} from "./admin-helpers";
import { expectRegistryError } from "./helpers";

interface Effective {
  repository: string;
  path: string;
  user: string;
  actions: Record<string, string[]>;
}

function effectiveRequest(query: Record<string, string>, authorization?: string): Promise<Response> {
  return adminRequest("GET", `/api/v1/permissions/effective?${new URLSearchParams(query).toString()}`, undefined, authorization);
}

/** Returns the caller's actions at a path, failing the test unless the endpoint returns 200. */
async function actionsOf(user: TestUser, repo: string, path: string): Promise<Record<string, string[]>> {
  const response = await effectiveRequest({ repo, path }, user.authorization);
  expect(response.status, await response.clone().text()).toBe(200);
  return ((await response.json()) as Effective).actions;
}

describe("effective permissions", () => {
  it("lists each action with its targets", async () => {
    const repository = await createRepository("effective");
    const user = await createUser("reader");
    const readers = await createTarget({ repositories: [repository], users: { [user.name]: ["read"] } }, "readers");
    const deployers = await createTarget({ repositories: [repository], users: { [user.name]: ["deploy", "read"] } }, "deployers");

    const response = await effectiveRequest({ repo: repository, path: "team/app" }, user.authorization);

    expect(response.status).toBe(200);
    const body = (await response.json()) as Effective;
    expect(Object.keys(body)).toEqual(["repository", "path", "user", "actions"]);
    expect(body).toEqual({
      repository,
      path: "team/app",
      user: user.name,
      actions: { read: [deployers, readers].sort(), deploy: [deployers] },
    });
  });

  it("lists actions in their standard order", async () => {
    const repository = await createRepository("ordered");
    const user = await createUser("ordered");
    await createTarget({ repositories: [repository], users: { [user.name]: ["manage", "read", "delete", "annotate", "deploy"] } });

    const actions = await actionsOf(user, repository, "app");

    expect(Object.keys(actions)).toEqual(["read", "annotate", "deploy", "delete", "manage"]);
  });

  it("returns no actions without a grant", async () => {
    const repository = await createRepository("ungranted");
    const user = await createUser("stranger");

    expect(await actionsOf(user, repository, "app")).toEqual({});
  });

  it("applies include patterns", async () => {
    const repository = await createRepository("included");
    const user = await createUser("team");
    const target = await createTarget({
      repositories: [repository],
      includePatterns: ["team/**", "tools/?ool"],
      users: { [user.name]: ["read"] },
    });

    expect(await actionsOf(user, repository, "team")).toEqual({ read: [target] });
    expect(await actionsOf(user, repository, "team/app")).toEqual({ read: [target] });
    expect(await actionsOf(user, repository, "team/sub/app")).toEqual({ read: [target] });
    expect(await actionsOf(user, repository, "tools/tool")).toEqual({ read: [target] });
    expect(await actionsOf(user, repository, "tools/tools")).toEqual({});
    expect(await actionsOf(user, repository, "teams/app")).toEqual({});
    expect(await actionsOf(user, repository, "other/app")).toEqual({});
  });

  it("lets an exclude pattern win", async () => {
    const repository = await createRepository("excluded");
    const user = await createUser("excluded");
    const target = await createTarget({
      repositories: [repository],
      includePatterns: ["team/**"],
      excludePatterns: ["team/secret/**", "*/private"],
      users: { [user.name]: ["read"] },
    });

    expect(await actionsOf(user, repository, "team/app")).toEqual({ read: [target] });
    expect(await actionsOf(user, repository, "team/secret")).toEqual({});
    expect(await actionsOf(user, repository, "team/secret/app")).toEqual({});
    expect(await actionsOf(user, repository, "team/private")).toEqual({});
  });

  it("keeps a grant from another target at an excluded path", async () => {
    const repository = await createRepository("overlap");
    const user = await createUser("overlap");
    await createTarget({ repositories: [repository], excludePatterns: ["secret/**"], users: { [user.name]: ["read", "deploy"] } });
    const secretReaders = await createTarget({
      repositories: [repository],
      includePatterns: ["secret/**"],
      users: { [user.name]: ["read"] },
    });

    expect(await actionsOf(user, repository, "secret/app")).toEqual({ read: [secretReaders] });
  });

  it("includes grants to the user's groups", async () => {
    const repository = await createRepository("grouped");
    const member = await createUser("member");
    const outsider = await createUser("outsider");
    const group = await createGroup("readers", { members: [member.name] });
    const target = await createTarget({ repositories: [repository], groups: { [group]: ["read", "annotate"] } });

    expect(await actionsOf(member, repository, "app")).toEqual({ read: [target], annotate: [target] });
    expect(await actionsOf(outsider, repository, "app")).toEqual({});
  });

  it("includes anonymous grants for every user", async () => {
    const repository = await createRepository("public");
    const user = await createUser("visitor");
    const target = await createTarget({ repositories: [repository], anonymous: ["read"] });

    expect(await actionsOf(user, repository, "app")).toEqual({ read: [target] });
  });

  it("shows the anonymous user's actions to an administrator", async () => {
    const repository = await createRepository("anonymous");
    const target = await createTarget({ repositories: [repository], anonymous: ["read"] });
    const other = await createUser("named");
    await createTarget({ repositories: [repository], users: { [other.name]: ["deploy"] } });

    const response = await effectiveRequest({ repo: repository, path: "app", user: "anonymous" });

    expect(await response.json()).toEqual({ repository, path: "app", user: "anonymous", actions: { read: [target] } });
  });

  it("applies ANY to every repository", async () => {
    const repository = await createRepository("any");
    const user = await createUser("any");
    const target = await createTarget({ repositories: ["ANY"], users: { [user.name]: ["read"] } });

    expect(await actionsOf(user, repository, "app")).toEqual({ read: [target] });
    expect(await actionsOf(user, "docker-local", "app")).toEqual({ read: [target] });
  });

  it("applies ANY LOCAL to local repositories", async () => {
    const repository = await createRepository("any-local");
    const user = await createUser("any-local");
    const target = await createTarget({ repositories: ["ANY LOCAL"], users: { [user.name]: ["deploy"] } });

    expect(await actionsOf(user, repository, "app")).toEqual({ deploy: [target] });
    expect(await actionsOf(user, "docker-local", "app")).toEqual({ deploy: [target] });
  });

  it("leaves other repositories out", async () => {
    const [granted, other] = [await createRepository("granted"), await createRepository("other")];
    const user = await createUser("scoped");
    await createTarget({ repositories: [granted], users: { [user.name]: ["read"] } });

    expect(await actionsOf(user, other, "app")).toEqual({});
  });

  it("gives an administrator every action", async () => {
    const repository = await createRepository("admin");

    const response = await effectiveRequest({ repo: repository, path: "app" });

    const body = (await response.json()) as Effective;
    expect(body.user).toBe("admin");
    expect(body.actions).toEqual({
      read: ["administrator"],
      annotate: ["administrator"],
      deploy: ["administrator"],
      delete: ["administrator"],
      manage: ["administrator"],
    });
  });

  it("gives an admin group member every action", async () => {
    const repository = await createRepository("admin-group");
    const user = await createUser("admin-member");
    await createGroup("admins", { admin: true, members: [user.name] });

    expect(Object.keys(await actionsOf(user, repository, "app"))).toEqual(["read", "annotate", "deploy", "delete", "manage"]);
  });

  it("shows another user's actions to an administrator", async () => {
    const repository = await createRepository("inspected");
    const user = await createUser("inspected");
    const target = await createTarget({ repositories: [repository], users: { [user.name]: ["delete"] } });

    const response = await effectiveRequest({ repo: repository, path: "app", user: user.name });

    expect(await response.json()).toEqual({ repository, path: "app", user: user.name, actions: { delete: [target] } });
  });

  it("shows no actions for a disabled user", async () => {
    const repository = await createRepository("disabled");
    const user = await createUser("disabled");
    await createTarget({ repositories: [repository], users: { [user.name]: ["read"] } });
    expect((await adminRequest("PATCH", `/api/v1/users/${user.name}`, { disabled: true })).status).toBe(200);

    const response = await effectiveRequest({ repo: repository, path: "app", user: user.name });

    expect(((await response.json()) as Effective).actions).toEqual({});
  });

  it("lets a user name themselves", async () => {
    const repository = await createRepository("self");
    const user = await createUser("self");
    const target = await createTarget({ repositories: [repository], users: { [user.name]: ["read"] } });

    const response = await effectiveRequest({ repo: repository, path: "app", user: user.name }, user.authorization);

    expect(((await response.json()) as Effective).actions).toEqual({ read: [target] });
  });

  it("narrows to the access token's scope", async () => {
    const repository = await createRepository("token");
    const user = await createUser("token");
    const target = await createTarget({ repositories: [repository], users: { [user.name]: ["read", "deploy"] } });
    const secret = await insertAccessToken(user, { actions: ["read"] });

    const response = await effectiveRequest({ repo: repository, path: "app" }, `Bearer ${secret}`);

    expect(((await response.json()) as Effective).actions).toEqual({ read: [target] });
  });

  it("returns 403 to a narrowed administrator token", async () => {
    const administrator = await createUser("scoped-admin", { admin: true });
    const other = await createUser("watched");
    const secret = await insertAccessToken(administrator, { actions: ["read"] });

    const response = await effectiveRequest({ repo: "docker-local", path: "app", user: other.name }, `Bearer ${secret}`);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("returns 403 when a user names another", async () => {
    const caller = await createUser("nosy");
    const other = await createUser("private");

    const response = await effectiveRequest({ repo: "docker-local", path: "app", user: other.name }, caller.authorization);

    await expectRegistryError(response, 403, "DENIED");
  });

  it("returns 403 when a user names anonymous", async () => {
    const caller = await createUser("nosy");

    await expectRegistryError(
      await effectiveRequest({ repo: "docker-local", path: "app", user: "anonymous" }, caller.authorization),
      403,
      "DENIED",
    );
  });

  it("returns 404 for an unknown user", async () => {
    const error = await expectRegistryError(await effectiveRequest({ repo: "docker-local", path: "app", user: "ghost" }), 404, "NOT_FOUND");

    expect(error.detail).toEqual({ name: "ghost" });
  });

  it("returns NAME_UNKNOWN for an unknown repository", async () => {
    const error = await expectRegistryError(await effectiveRequest({ repo: "never-created", path: "app" }), 404, "NAME_UNKNOWN");

    expect(error.detail).toEqual({ repository: "never-created" });
  });

  it("returns NAME_INVALID for an invalid path", async () => {
    await expectRegistryError(await effectiveRequest({ repo: "docker-local", path: "Team/App" }), 400, "NAME_INVALID");
  });

  const invalidQueries: [string, Record<string, string>, string[]][] = [
    ["a missing repo", { path: "app" }, ["repo"]],
    ["a missing path", { repo: "docker-local" }, ["path"]],
    ["an empty user", { repo: "docker-local", path: "app", user: "" }, ["user"]],
    ["an unknown parameter", { repo: "docker-local", path: "app", action: "read" }, [""]],
  ];
  for (const [label, query, paths] of invalidQueries) {
    it(`rejects ${label}`, async () => {
      const error = await expectRegistryError(await effectiveRequest(query), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toEqual(paths);
    });
  }

  it("rejects a repeated parameter", async () => {
    const response = await adminRequest("GET", "/api/v1/permissions/effective?repo=docker-local&path=a&path=b");

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["path"]);
  });

  it("returns 401 to the anonymous user", async () => {
    await expectRegistryError(
      await anonymousAdminRequest("GET", "/api/v1/permissions/effective?repo=docker-local&path=app"),
      401,
      "UNAUTHORIZED",
    );
  });
});
