import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { expectRegistryError, registryFetch } from "./helpers";
import { pushImage } from "./manifest-helpers";

interface Repository {
  key: string;
  type: string;
  description: string;
  createdAt: string;
}

function createRepository(body: unknown): Promise<Response> {
  return registryFetch("/api/v1/repositories", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

function uniqueKey(label: string): string {
  return `${label}-${crypto.randomUUID().slice(0, 8)}`;
}

async function catalog(): Promise<string[]> {
  const response = await registryFetch("/v2/_catalog");
  expect(response.status).toBe(200);
  return ((await response.json()) as { repositories: string[] }).repositories;
}

describe("default repository", () => {
  it("has docker-local after the migrations", async () => {
    const response = await registryFetch("/api/v1/repositories/docker-local");

    expect(response.status).toBe(200);
    const body = (await response.json()) as Repository & { imageCount: number };
    expect(body).toMatchObject({ key: "docker-local", type: "local", description: "Default local Docker repository" });
    expect(body.createdAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(typeof body.imageCount).toBe("number");
  });

  it("lists docker-local", async () => {
    const response = await registryFetch("/api/v1/repositories");

    expect(response.status).toBe(200);
    const { repositories } = (await response.json()) as { repositories: Repository[] };
    expect(repositories.map((repository) => repository.key)).toContain("docker-local");
  });
});

describe("repository create", () => {
  it("creates a repository with 201 and a Location", async () => {
    const key = uniqueKey("team");

    const response = await createRepository({ key, type: "local", description: "Team images" });

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/api/v1/repositories/${key}`);
    const created = (await response.json()) as Repository;
    expect(created).toMatchObject({ key, type: "local", description: "Team images" });

    const shown = await registryFetch(`/api/v1/repositories/${key}`);
    expect(shown.status).toBe(200);
    expect(await shown.json()).toEqual({ ...created, imageCount: 0 });
  });

  it("defaults the description to empty", async () => {
    const key = uniqueKey("plain");

    const response = await createRepository({ key, type: "local" });

    expect(response.status).toBe(201);
    expect(((await response.json()) as Repository).description).toBe("");
  });

  it("rejects a duplicate key with 409", async () => {
    const key = uniqueKey("twice");
    expect((await createRepository({ key, type: "local" })).status).toBe(201);

    const error = await expectRegistryError(await createRepository({ key, type: "local", description: "again" }), 409, "CONFLICT");

    expect(error.detail).toEqual({ key });
    const shown = (await (await registryFetch(`/api/v1/repositories/${key}`)).json()) as Repository;
    expect(shown.description).toBe("");
  });

  it("rejects docker-local as a duplicate", async () => {
    await expectRegistryError(await createRepository({ key: "docker-local", type: "local" }), 409, "CONFLICT");
  });

  const invalidKeys: [string, string][] = [
    ["uppercase", "Team"],
    ["a slash", "team/app"],
    ["an empty key", ""],
    ["65 characters", "a".repeat(65)],
    ["a leading dash", "-team"],
    ["a trailing dot", "team."],
    ["a space", "my team"],
  ];
  for (const [label, key] of invalidKeys) {
    it(`rejects a key with ${label} and lists the issue`, async () => {
      const error = await expectRegistryError(await createRepository({ key, type: "local" }), 400, "INVALID_REQUEST");

      const { issues } = error.detail as { issues: { path: string; message: string }[] };
      expect(issues.map((issue) => issue.path)).toEqual(["key"]);
      expect(issues[0]!.message).toContain("lowercase");
    });
  }

  it("accepts a key of 64 characters", async () => {
    const key = `k${crypto.randomUUID().replaceAll("-", "")}`.padEnd(64, "0");

    expect((await createRepository({ key, type: "local" })).status).toBe(201);
  });

  const invalidBodies: [string, unknown, string[]][] = [
    ["a missing key", { type: "local" }, ["key"]],
    ["a missing type", { key: "no-type" }, ["type"]],
    ["an unknown type", { key: "federated-one", type: "federated" }, ["type"]],
    ["a numeric key", { key: 42, type: "local" }, ["key"]],
    ["a description over 1024 characters", { key: "long-description", type: "local", description: "d".repeat(1025) }, ["description"]],
    ["an unknown field", { key: "extra-field", type: "local", url: "https://example.com" }, [""]],
    ["several problems", { key: "Bad", type: "remote" }, ["key", "url"]],
    ["a JSON array", [], [""]],
    ["JSON null", null, [""]],
  ];
  for (const [label, body, paths] of invalidBodies) {
    it(`rejects ${label} and lists the zod issues`, async () => {
      const error = await expectRegistryError(await createRepository(body), 400, "INVALID_REQUEST");

      const { issues } = error.detail as { issues: { path: string; message: string }[] };
      expect(issues.map((issue) => issue.path).sort()).toEqual(paths);
      for (const issue of issues) expect(issue.message.length).toBeGreaterThan(0);
    });
  }

  it("rejects a body that is not JSON", async () => {
    const error = await expectRegistryError(await createRepository("key=team&type=local"), 400, "INVALID_REQUEST");

    expect(error.message).toContain("JSON");
  });

  it("creates nothing when the body is invalid", async () => {
    await expectRegistryError(await createRepository({ key: "half-valid", type: "remote" }), 400, "INVALID_REQUEST");

    await expectRegistryError(await registryFetch("/api/v1/repositories/half-valid"), 404, "NAME_UNKNOWN");
  });
});

describe("repository list and show", () => {
  it("lists repositories sorted by key", async () => {
    const keys = [uniqueKey("zeta"), uniqueKey("alpha"), uniqueKey("mid")];
    for (const key of keys) expect((await createRepository({ key, type: "local" })).status).toBe(201);

    const response = await registryFetch("/api/v1/repositories");

    const listed = ((await response.json()) as { repositories: Repository[] }).repositories.map((repository) => repository.key);
    for (const key of keys) expect(listed).toContain(key);
    expect(listed).toEqual([...listed].sort());
  });

  it("counts the images of a repository", async () => {
    const key = uniqueKey("counted");
    expect((await createRepository({ key, type: "local" })).status).toBe(201);
    await pushImage(`${key}/one`, "latest");
    await pushImage(`${key}/two/nested`, "latest");

    const response = await registryFetch(`/api/v1/repositories/${key}`);

    expect(((await response.json()) as { imageCount: number }).imageCount).toBe(2);
  });

  it("returns 404 for an unknown key", async () => {
    await expectRegistryError(await registryFetch("/api/v1/repositories/never-created"), 404, "NAME_UNKNOWN");
  });
});

describe("repository delete", () => {
  it("deletes with 204, then returns 404", async () => {
    const key = uniqueKey("doomed");
    expect((await createRepository({ key, type: "local" })).status).toBe(201);

    const response = await registryFetch(`/api/v1/repositories/${key}`, { method: "DELETE" });

    expect(response.status).toBe(204);
    expect(await response.text()).toBe("");
    await expectRegistryError(await registryFetch(`/api/v1/repositories/${key}`), 404, "NAME_UNKNOWN");
    const listed = ((await (await registryFetch("/api/v1/repositories")).json()) as { repositories: Repository[] }).repositories;
    expect(listed.map((repository) => repository.key)).not.toContain(key);
  });

  it("returns 404 for an unknown key", async () => {
    await expectRegistryError(await registryFetch("/api/v1/repositories/never-created", { method: "DELETE" }), 404, "NAME_UNKNOWN");
  });

  it("removes the repository's images from the catalog and the registry", async () => {
    const key = uniqueKey("pushed");
    expect((await createRepository({ key, type: "local" })).status).toBe(201);
    const name = `${key}/team/app`;
    const pushed = await pushImage(name, "latest");
    const kept = await pushImage(`docker-local/${key}-kept`, "latest");
    expect(await catalog()).toContain(name);

    expect((await registryFetch(`/api/v1/repositories/${key}`, { method: "DELETE" })).status).toBe(204);

    const names = await catalog();
    expect(names).not.toContain(name);
    expect(names).toContain(`docker-local/${key}-kept`);
    await expectRegistryError(await registryFetch(`/v2/${name}/manifests/latest`), 404, "NAME_UNKNOWN");
    await expectRegistryError(await registryFetch(`/v2/${name}/tags/list`), 404, "NAME_UNKNOWN");
    expect((await registryFetch(`/v2/docker-local/${key}-kept/manifests/${kept.digest}`)).status).toBe(200);

    const leftovers = await env.DB.prepare(
      `SELECT
         (SELECT COUNT(*) FROM images WHERE repository_key = ?1) AS images,
         (SELECT COUNT(*) FROM manifests WHERE digest = ?2) AS manifests,
         (SELECT COUNT(*) FROM tags WHERE digest = ?2) AS tags`,
    )
      .bind(key, pushed.digest)
      .first();
    expect(leftovers).toEqual({ images: 0, manifests: 0, tags: 0 });
  });

  it("does not bring old images back when the key is created again", async () => {
    const key = uniqueKey("reborn");
    expect((await createRepository({ key, type: "local" })).status).toBe(201);
    const name = `${key}/app`;
    await pushImage(name, "latest");
    expect((await registryFetch(`/api/v1/repositories/${key}`, { method: "DELETE" })).status).toBe(204);

    expect((await createRepository({ key, type: "local" })).status).toBe(201);

    await expectRegistryError(await registryFetch(`/v2/${name}/tags/list`), 404, "NAME_UNKNOWN");
    expect(await catalog()).not.toContain(name);
    const shown = (await (await registryFetch(`/api/v1/repositories/${key}`)).json()) as { imageCount: number };
    expect(shown.imageCount).toBe(0);
  });
});
