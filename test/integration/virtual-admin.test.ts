import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { adminRequest, auditRows, createRepository, createUser, issueMessages, issuePaths, uniqueName } from "./admin-helpers";
import { expectRegistryError } from "./helpers";
import { createRemoteRepository } from "./remote-helpers";
import { createVirtualRepository, type VirtualRepository } from "./virtual-helpers";

/** POSTs a virtual repository definition and returns the response. */
function postVirtual(fields: Record<string, unknown>): Promise<Response> {
  return adminRequest("POST", "/api/v1/repositories", { key: uniqueName("virtual"), type: "virtual", ...fields });
}

/** Checks that a response is INVALID_REQUEST with exactly one issue at `path`, and returns that issue's message. */
async function expectOneIssue(response: Response, path: string): Promise<string> {
  const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
  expect(issuePaths(error.detail)).toEqual([path]);
  return issueMessages(error.detail)[0]!;
}

async function showVirtual(key: string): Promise<VirtualRepository & { imageCount: number }> {
  const response = await adminRequest("GET", `/api/v1/repositories/${key}`);
  expect(response.status).toBe(200);
  return (await response.json()) as VirtualRepository & { imageCount: number };
}

async function repositoryRowExists(key: string): Promise<boolean> {
  return (await env.DB.prepare("SELECT 1 AS found FROM repositories WHERE key = ?").bind(key).first()) !== null;
}

describe("virtual repository create", () => {
  it("returns members in configured order", async () => {
    const local = await createRepository("local");
    const remote = await createRemoteRepository();
    const key = uniqueName("virtual");

    const response = await adminRequest("POST", "/api/v1/repositories", {
      key,
      type: "virtual",
      description: "everything",
      members: [remote, local],
      defaultDeploymentRepository: local,
    });

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/api/v1/repositories/${key}`);
    const created = (await response.json()) as VirtualRepository;
    expect(created).toMatchObject({ key, type: "virtual", description: "everything", members: [remote, local] });
    expect(created.defaultDeploymentRepository).toBe(local);
  });

  it("defaults to no deployment repository", async () => {
    const local = await createRepository("local");

    const response = await postVirtual({ members: [local] });

    expect(response.status).toBe(201);
    const created = (await response.json()) as VirtualRepository;
    expect(created.defaultDeploymentRepository).toBeNull();
    expect(created.description).toBe("");
  });

  it("accepts an empty member list", async () => {
    const response = await postVirtual({ members: [] });

    expect(response.status).toBe(201);
    expect(((await response.json()) as VirtualRepository).members).toEqual([]);
  });

  it("shows and lists the settings", async () => {
    const local = await createRepository("local");
    const key = await createVirtualRepository([local], local);

    const shown = await showVirtual(key);
    const listed = await adminRequest("GET", "/api/v1/repositories");

    expect(shown).toMatchObject({ key, type: "virtual", members: [local], defaultDeploymentRepository: local, imageCount: 0 });
    const { repositories } = (await listed.json()) as { repositories: VirtualRepository[] };
    expect(repositories.find((repository) => repository.key === key)).toMatchObject({
      type: "virtual",
      members: [local],
      defaultDeploymentRepository: local,
    });
  });

  it("writes an audit entry", async () => {
    const local = await createRepository("local");
    const key = await createVirtualRepository([local]);

    const rows = await auditRows(key);

    expect(rows.map((row) => row.action)).toEqual(["repository.create"]);
    expect(JSON.parse(rows[0]!.detail!)).toEqual({ type: "virtual", members: [local], defaultDeploymentRepository: null });
  });

  it("rejects itself as a member", async () => {
    const local = await createRepository("local");
    const key = uniqueName("virtual");

    const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "virtual", members: [local, key] });

    expect(await expectOneIssue(response, "members.1")).toContain("cannot be a member of itself");
    expect(await repositoryRowExists(key)).toBe(false);
  });

  it("rejects an unknown member", async () => {
    const key = uniqueName("virtual");

    const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "virtual", members: ["no-such-repository"] });

    expect(await expectOneIssue(response, "members.0")).toBe("member 'no-such-repository' does not exist; create it first");
    expect(await repositoryRowExists(key)).toBe(false);
  });

  it("rejects a member listed twice", async () => {
    const local = await createRepository("local");

    const response = await postVirtual({ members: [local, local] });

    expect(await expectOneIssue(response, "members.1")).toBe(`member '${local}' is listed more than once`);
  });

  it("rejects a virtual member", async () => {
    const inner = await createVirtualRepository([]);

    const response = await postVirtual({ members: [inner] });

    expect(await expectOneIssue(response, "members.0")).toContain("is a virtual repository; members must be local or remote");
  });

  it("rejects a deployment repository outside the members", async () => {
    const member = await createRepository("local");
    const outside = await createRepository("local");

    const response = await postVirtual({ members: [member], defaultDeploymentRepository: outside });

    expect(await expectOneIssue(response, "defaultDeploymentRepository")).toBe(
      `defaultDeploymentRepository '${outside}' must be a local repository listed in members`,
    );
  });

  it("rejects a remote deployment repository", async () => {
    const remote = await createRemoteRepository();

    const response = await postVirtual({ members: [remote], defaultDeploymentRepository: remote });

    expect(await expectOneIssue(response, "defaultDeploymentRepository")).toContain("must be a local repository listed in members");
  });

  it("rejects a missing member list", async () => {
    const response = await postVirtual({});

    await expectOneIssue(response, "members");
  });

  it("rejects a member that is not a key", async () => {
    const response = await postVirtual({ members: ["Not A Key"] });

    expect(await expectOneIssue(response, "members.0")).toContain("each member must be a repository key");
  });

  it("rejects more than 50 members", async () => {
    const members = Array.from({ length: 51 }, (_, index) => `member-${index}`);

    const response = await postVirtual({ members });

    expect(await expectOneIssue(response, "members")).toBe("a virtual repository may list at most 50 members");
  });

  it("rejects remote fields", async () => {
    const response = await postVirtual({ members: [], url: "http://127.0.0.1:1" });

    await expectOneIssue(response, "");
  });

  it("rejects an existing key", async () => {
    const existing = await createRepository("local");

    const response = await adminRequest("POST", "/api/v1/repositories", { key: existing, type: "virtual", members: [] });

    await expectRegistryError(response, 409, "CONFLICT");
    expect(await env.DB.prepare("SELECT 1 AS found FROM virtual_repositories WHERE repository_key = ?").bind(existing).first()).toBeNull();
  });
});

describe("virtual repository update", () => {
  it("replaces the members", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const key = await createVirtualRepository([first]);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [second, first], description: "both" });

    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ key, type: "virtual", description: "both", members: [second, first] });
    expect((await showVirtual(key)).members).toEqual([second, first]);
  });

  it("sets and clears the deployment repository", async () => {
    const local = await createRepository("local");
    const key = await createVirtualRepository([local]);

    const set = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { defaultDeploymentRepository: local });
    const setBody = (await set.json()) as VirtualRepository;
    const cleared = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { defaultDeploymentRepository: null });
    const clearedBody = (await cleared.json()) as VirtualRepository;

    expect(set.status).toBe(200);
    expect(setBody.defaultDeploymentRepository).toBe(local);
    expect(cleared.status).toBe(200);
    expect(clearedBody.defaultDeploymentRepository).toBeNull();
    expect(clearedBody.members).toEqual([local]);
  });

  it("rejects members without the deployment repository", async () => {
    const deployment = await createRepository("local");
    const other = await createRepository("local");
    const key = await createVirtualRepository([deployment], deployment);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [other] });

    await expectOneIssue(response, "defaultDeploymentRepository");
    expect(await showVirtual(key)).toMatchObject({ members: [deployment], defaultDeploymentRepository: deployment });
  });

  it("rejects itself as a member", async () => {
    const key = await createVirtualRepository([]);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [key] });

    expect(await expectOneIssue(response, "members.0")).toContain("cannot be a member of itself");
    expect((await showVirtual(key)).members).toEqual([]);
  });

  it("rejects an unknown member", async () => {
    const local = await createRepository("local");
    const key = await createVirtualRepository([local]);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [local, "no-such-repository"] });

    await expectOneIssue(response, "members.1");
    expect((await showVirtual(key)).members).toEqual([local]);
  });

  it("rejects a member listed twice", async () => {
    const local = await createRepository("local");
    const key = await createVirtualRepository([]);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [local, local] });

    await expectOneIssue(response, "members.1");
    expect((await showVirtual(key)).members).toEqual([]);
  });

  it("rejects a virtual member", async () => {
    const inner = await createVirtualRepository([]);
    const key = await createVirtualRepository([]);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [inner] });

    await expectOneIssue(response, "members.0");
    expect((await showVirtual(key)).members).toEqual([]);
  });

  it("rejects a non-local deployment repository", async () => {
    const remote = await createRemoteRepository();
    const key = await createVirtualRepository([remote]);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { defaultDeploymentRepository: remote });

    await expectOneIssue(response, "defaultDeploymentRepository");
    expect((await showVirtual(key)).defaultDeploymentRepository).toBeNull();
  });

  it("rejects an empty change", async () => {
    const key = await createVirtualRepository([]);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, {});

    expect(await expectOneIssue(response, "")).toBe("the request changes nothing; set at least one field");
  });

  it("rejects remote settings", async () => {
    const key = await createVirtualRepository([]);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { offline: true });

    await expectRegistryError(response, 400, "INVALID_REQUEST");
  });

  it("rejects a non-administrator", async () => {
    const key = await createVirtualRepository([]);
    const user = await createUser("plain");

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [] }, user.authorization);

    await expectRegistryError(response, 403, "DENIED");
  });
});

describe("virtual repository delete", () => {
  it("removes the virtual repository", async () => {
    const local = await createRepository("local");
    const key = await createVirtualRepository([local], local);

    const response = await adminRequest("DELETE", `/api/v1/repositories/${key}`);

    expect(response.status).toBe(204);
    await expectRegistryError(await adminRequest("GET", `/api/v1/repositories/${key}`), 404, "NAME_UNKNOWN");
    const members = await env.DB.prepare("SELECT COUNT(*) AS count FROM virtual_repository_members WHERE virtual_key = ?")
      .bind(key)
      .first<{ count: number }>();
    expect(members?.count).toBe(0);
    expect((await adminRequest("GET", `/api/v1/repositories/${local}`)).status).toBe(200);
  });

  it("drops a deleted member from the list", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const third = await createRepository("local");
    const key = await createVirtualRepository([first, second, third], third);

    const response = await adminRequest("DELETE", `/api/v1/repositories/${second}`);

    expect(response.status).toBe(204);
    expect(await showVirtual(key)).toMatchObject({ members: [first, third], defaultDeploymentRepository: third });
  });

  it("clears a deleted deployment repository", async () => {
    const deployment = await createRepository("local");
    const other = await createRepository("local");
    const key = await createVirtualRepository([deployment, other], deployment);

    await adminRequest("DELETE", `/api/v1/repositories/${deployment}`);

    expect(await showVirtual(key)).toMatchObject({ members: [other], defaultDeploymentRepository: null });
  });

  it("rejects a deleted member", async () => {
    const first = await createRepository("local");
    const second = await createRepository("local");
    const key = await createVirtualRepository([first, second]);
    await adminRequest("DELETE", `/api/v1/repositories/${first}`);

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { members: [second, first] });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["members.1"]);
    expect((await showVirtual(key)).members).toEqual([second]);
  });
});
