import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { adminRequest, anonymousAdminRequest, createUser, issuePaths, uniqueName, userPassword, type TestUser } from "./admin-helpers";
import { expectRegistryError, registryFetch } from "./helpers";

interface Entry {
  id: number;
  time: string;
  actor: string;
  action: string;
  target: string;
  clientAddress: string;
  detail: unknown;
}

const entryKeys = ["action", "actor", "clientAddress", "detail", "id", "target", "time"];

function auditRequest(query: Record<string, string>, authorization?: string): Promise<Response> {
  return adminRequest("GET", `/api/v1/audit?${new URLSearchParams(query).toString()}`, undefined, authorization);
}

async function entriesOf(response: Response): Promise<Entry[]> {
  expect(response.status, await response.clone().text()).toBe(200);
  return ((await response.json()) as { entries: Entry[] }).entries;
}

/** Creates an administrator whose name, as the actor filter, selects only this test's entries. */
function createActor(): Promise<TestUser> {
  return createUser("auditor", { admin: true });
}

/** Creates `count` users as `actor` and returns their names in creation order. */
async function createUsersAs(actor: TestUser, count: number): Promise<string[]> {
  const names: string[] = [];
  for (let index = 0; index < count; index += 1) {
    const name = uniqueName("made");
    const response = await adminRequest("POST", "/api/v1/users", { name, password: userPassword }, actor.authorization);
    expect(response.status).toBe(201);
    names.push(name);
  }
  return names;
}

describe("audit log", () => {
  it("lists entries newest first", async () => {
    const actor = await createActor();
    const names = await createUsersAs(actor, 3);

    const entries = await entriesOf(await auditRequest({ actor: actor.name }));

    expect(entries.map((entry) => entry.target)).toEqual([...names].reverse());
    for (const entry of entries) expect(Object.keys(entry).sort()).toEqual(entryKeys);
    expect(entries[0]).toMatchObject({ actor: actor.name, action: "user.create", detail: { email: "", admin: false, disabled: false } });
    expect(entries[0]!.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(entries[0]!.id).toBeGreaterThan(entries[1]!.id);
  });

  it("records every kind of change", async () => {
    const actor = await createActor();
    const user = uniqueName("subject");
    const group = uniqueName("team");
    const target = uniqueName("grant");
    const steps: [string, string, unknown][] = [
      ["POST", "/api/v1/users", { name: user, password: userPassword }],
      ["PATCH", `/api/v1/users/${user}`, { email: "s@example.com" }],
      ["POST", "/api/v1/groups", { name: group }],
      ["PATCH", `/api/v1/groups/${group}`, { description: "team" }],
      ["PUT", `/api/v1/groups/${group}/members/${user}`, undefined],
      ["DELETE", `/api/v1/groups/${group}/members/${user}`, undefined],
      ["POST", "/api/v1/permissions", { name: target, repositories: ["docker-local"], users: { [user]: ["read"] } }],
      ["PUT", `/api/v1/permissions/${target}`, { repositories: ["docker-local"] }],
      ["DELETE", `/api/v1/permissions/${target}`, undefined],
      ["DELETE", `/api/v1/groups/${group}`, undefined],
      ["DELETE", `/api/v1/users/${user}`, undefined],
    ];
    for (const [method, path, body] of steps) {
      const response = await adminRequest(method, path, body, actor.authorization);
      expect(response.status, `${method} ${path}`).toBeLessThan(300);
    }

    const entries = await entriesOf(await auditRequest({ actor: actor.name }));

    expect(entries.map((entry) => [entry.action, entry.target]).reverse()).toEqual([
      ["user.create", user],
      ["user.update", user],
      ["group.create", group],
      ["group.update", group],
      ["group.member.add", group],
      ["group.member.remove", group],
      ["permission.create", target],
      ["permission.update", target],
      ["permission.delete", target],
      ["group.delete", group],
      ["user.delete", user],
    ]);
  });

  it("records a password change", async () => {
    const user = await createUser("changer");
    const response = await registryFetch("/api/v1/users/me/password", {
      method: "PUT",
      headers: { Authorization: user.authorization, "Content-Type": "application/json" },
      body: JSON.stringify({ currentPassword: user.password, newPassword: "changed-password-1" }),
    });
    expect(response.status).toBe(204);

    const entries = await entriesOf(await auditRequest({ actor: user.name }));

    expect(entries.map((entry) => [entry.action, entry.target, entry.detail])).toEqual([["user.password.change", user.name, {}]]);
  });

  it("records the client address", async () => {
    const actor = await createActor();
    const name = uniqueName("addressed");
    await registryFetch("/api/v1/users", {
      method: "POST",
      headers: { Authorization: actor.authorization, "Content-Type": "application/json", "CF-Connecting-IP": "203.0.113.7" },
      body: JSON.stringify({ name, password: userPassword }),
    });

    const [entry] = await entriesOf(await auditRequest({ actor: actor.name }));

    expect(entry).toMatchObject({ target: name, clientAddress: "203.0.113.7" });
  });

  it("filters by action", async () => {
    const actor = await createActor();
    const [name] = await createUsersAs(actor, 1);
    expect((await adminRequest("DELETE", `/api/v1/users/${name}`, undefined, actor.authorization)).status).toBe(204);

    const entries = await entriesOf(await auditRequest({ actor: actor.name, action: "user.delete" }));

    expect(entries.map((entry) => [entry.action, entry.target])).toEqual([["user.delete", name]]);
  });

  it("filters by time", async () => {
    const actor = await createActor();
    const [older] = await createUsersAs(actor, 1);
    const [olderEntry] = await entriesOf(await auditRequest({ actor: actor.name }));
    await new Promise((resolve) => setTimeout(resolve, 5));
    const [newer] = await createUsersAs(actor, 1);
    const [newerEntry] = await entriesOf(await auditRequest({ actor: actor.name }));

    const fromOlder = await entriesOf(await auditRequest({ actor: actor.name, since: olderEntry!.time }));
    const fromNewer = await entriesOf(await auditRequest({ actor: actor.name, since: newerEntry!.time }));

    expect(fromOlder.map((entry) => entry.target)).toEqual([newer, older]);
    expect(fromNewer.map((entry) => entry.target)).toEqual([newer]);
  });

  it("accepts a time with an offset", async () => {
    const actor = await createActor();
    await createUsersAs(actor, 1);

    const inFuture = await entriesOf(await auditRequest({ actor: actor.name, since: "2999-01-01T02:00:00+02:00" }));
    const inPast = await entriesOf(await auditRequest({ actor: actor.name, since: "2000-01-01T02:00:00+02:00" }));

    expect(inFuture).toEqual([]);
    expect(inPast).toHaveLength(1);
  });

  it("pages with a Link header", async () => {
    const actor = await createActor();
    const names = await createUsersAs(actor, 5);

    const pages: string[][] = [];
    let path: string | null = `/api/v1/audit?actor=${actor.name}&limit=2`;
    while (path !== null) {
      const response = await adminRequest("GET", path);
      pages.push((await entriesOf(response)).map((entry) => entry.target));
      const link = response.headers.get("Link");
      path = link === null ? null : /^<([^>]+)>; rel="next"$/.exec(link)![1]!;
    }

    const newestFirst = [...names].reverse();
    expect(pages).toEqual([newestFirst.slice(0, 2), newestFirst.slice(2, 4), newestFirst.slice(4)]);
  });

  it("keeps the filters in the Link header", async () => {
    const actor = await createActor();
    await createUsersAs(actor, 2);

    const response = await auditRequest({ actor: actor.name, action: "user.create", since: "2000-01-01T00:00:00Z", limit: "1" });

    const link = new URL(/^<([^>]+)>/.exec(response.headers.get("Link")!)![1]!, "http://registry.test");
    expect(link.pathname).toBe("/api/v1/audit");
    expect(link.searchParams.get("actor")).toBe(actor.name);
    expect(link.searchParams.get("action")).toBe("user.create");
    expect(link.searchParams.get("since")).toBe("2000-01-01T00:00:00.000Z");
    expect(link.searchParams.get("limit")).toBe("1");
    expect(Number(link.searchParams.get("before"))).toBeGreaterThan(0);
  });

  it("sends no Link header on the last page", async () => {
    const actor = await createActor();
    await createUsersAs(actor, 2);

    const response = await auditRequest({ actor: actor.name, limit: "2" });

    expect(await entriesOf(response)).toHaveLength(2);
    expect(response.headers.get("Link")).toBeNull();
  });

  it("shows the initial administrator's creation", async () => {
    const entries = await entriesOf(await auditRequest({ actor: "system" }));

    expect(entries.map((entry) => [entry.action, entry.target, entry.detail])).toEqual([["user.create", "admin", null]]);
  });

  it("holds no password or hash", async () => {
    const actor = await createActor();
    const [name] = await createUsersAs(actor, 1);
    await adminRequest("PATCH", `/api/v1/users/${name}`, { password: "another-long-password" }, actor.authorization);
    const stored = await env.DB.prepare("SELECT password_hash, password_salt FROM users WHERE name = ?")
      .bind(name!)
      .first<{ password_hash: string; password_salt: string }>();

    const text = await (await auditRequest({ actor: actor.name })).text();

    expect(text).not.toContain(userPassword);
    expect(text).not.toContain("another-long-password");
    expect(text).not.toContain(stored!.password_hash);
    expect(text).not.toContain(stored!.password_salt);
  });

  const invalidQueries: [string, Record<string, string>, string[]][] = [
    ["a limit of 0", { limit: "0" }, ["limit"]],
    ["a limit over 1000", { limit: "1001" }, ["limit"]],
    ["a limit that is not a number", { limit: "ten" }, ["limit"]],
    ["a negative cursor", { before: "-1" }, ["before"]],
    ["a time that is not ISO 8601", { since: "yesterday" }, ["since"]],
    ["an empty actor", { actor: "" }, ["actor"]],
    ["an unknown parameter", { target: "admin" }, [""]],
  ];
  for (const [label, query, paths] of invalidQueries) {
    it(`rejects ${label}`, async () => {
      const error = await expectRegistryError(await auditRequest(query), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toEqual(paths);
    });
  }

  it("accepts a limit of 1000", async () => {
    expect((await auditRequest({ limit: "1000" })).status).toBe(200);
  });

  it("returns 401 to the anonymous user", async () => {
    await expectRegistryError(await anonymousAdminRequest("GET", "/api/v1/audit"), 401, "UNAUTHORIZED");
  });

  it("returns 403 to a non-administrator", async () => {
    const user = await createUser("snoop");

    await expectRegistryError(await auditRequest({}, user.authorization), 403, "DENIED");
  });

  it("returns 405 for POST", async () => {
    const response = await adminRequest("POST", "/api/v1/audit", {});

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD");
  });
});
