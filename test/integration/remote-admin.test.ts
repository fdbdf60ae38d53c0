import { describe, expect, it } from "vitest";
import { adminRequest, auditRows, createRepository, createUser, issueMessages, issuePaths, uniqueName } from "./admin-helpers";
import { expectRegistryError } from "./helpers";
import { createRemoteRepository, upstream } from "./remote-helpers";

interface RemoteRepository {
  key: string;
  type: string;
  url: string;
  username: string | null;
  passwordSet: boolean;
  tagCacheSeconds: number;
  negativeCacheSeconds: number;
  offline: boolean;
  offlineUntil: string | null;
  failureThreshold: number;
  offlineSeconds: number;
  recentPullSeconds: number;
  dockerHub: boolean;
}

/** Settings of a remote repository that must each be rejected on create and PATCH, with the field named in the error. */
const invalidSettings: [string, unknown][] = [
  ["failureThreshold", 0],
  ["failureThreshold", 101],
  ["failureThreshold", 2.5],
  ["failureThreshold", "3"],
  ["offlineSeconds", -1],
  ["offlineSeconds", 86_401],
  ["offlineSeconds", 1.5],
  ["recentPullSeconds", -1],
  ["recentPullSeconds", 31_536_001],
  ["recentPullSeconds", null],
  ["tagCacheSeconds", -1],
];

describe("remote repository create", () => {
  it("applies the defaults", async () => {
    const key = uniqueName("remote");

    const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "remote", url: upstream.url });

    expect(response.status).toBe(201);
    const created = (await response.json()) as RemoteRepository;
    expect(created).toMatchObject({
      key,
      type: "remote",
      url: upstream.url,
      username: null,
      passwordSet: false,
      tagCacheSeconds: 600,
      negativeCacheSeconds: 60,
      offline: false,
      offlineUntil: null,
      failureThreshold: 3,
      offlineSeconds: 300,
      recentPullSeconds: 86_400,
      dockerHub: false,
    });
  });

  it("accepts the offline and refresh settings", async () => {
    const key = await createRemoteRepository({ failureThreshold: 100, offlineSeconds: 0, recentPullSeconds: 0 });

    const shown = (await (await adminRequest("GET", `/api/v1/repositories/${key}`)).json()) as RemoteRepository;

    expect(shown).toMatchObject({ failureThreshold: 100, offlineSeconds: 0, recentPullSeconds: 0 });
  });

  for (const [field, value] of invalidSettings) {
    it(`rejects ${field} ${JSON.stringify(value)}`, async () => {
      const key = uniqueName("remote");

      const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "remote", url: upstream.url, [field]: value });

      const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
      expect(issuePaths(error.detail)).toEqual([field]);
      expect((await adminRequest("GET", `/api/v1/repositories/${key}`)).status).toBe(404);
    });
  }

  it("shows the settings on GET", async () => {
    const key = await createRemoteRepository({ username: "puller", tagCacheSeconds: 30, negativeCacheSeconds: 5, dockerHub: true });

    const response = await adminRequest("GET", `/api/v1/repositories/${key}`);

    expect(response.status).toBe(200);
    const shown = (await response.json()) as RemoteRepository & Record<string, unknown>;
    expect(shown).toMatchObject({ type: "remote", username: "puller", tagCacheSeconds: 30, negativeCacheSeconds: 5, dockerHub: true });
    expect(Object.keys(shown)).not.toContain("password");
  });

  it("lists the remote type", async () => {
    const key = await createRemoteRepository();

    const response = await adminRequest("GET", "/api/v1/repositories");

    const { repositories } = (await response.json()) as { repositories: { key: string; type: string }[] };
    expect(repositories.find((repository) => repository.key === key)?.type).toBe("remote");
  });

  it("rejects a remote without url", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", { key: uniqueName("remote"), type: "remote" });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["url"]);
    expect(issueMessages(error.detail)[0]).toContain("a remote repository needs url");
  });

  it("rejects an ftp url", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", {
      key: uniqueName("remote"),
      type: "remote",
      url: "ftp://127.0.0.1/",
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["url"]);
    expect(issueMessages(error.detail)[0]).toContain("http or https");
  });

  it("rejects credentials in the url", async () => {
    const key = uniqueName("remote");
    const url = upstream.url.replace("http://", "http://puller:secret@");

    const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "remote", url });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["url"]);
    expect(issueMessages(error.detail)[0]).toContain("set username and password instead");
    expect(JSON.stringify(error)).not.toContain("secret");
  });

  it("rejects a url with a query", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", {
      key: uniqueName("remote"),
      type: "remote",
      url: `${upstream.url}/?a=b`,
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["url"]);
    expect(issueMessages(error.detail)[0]).toContain("must not contain a query or fragment");
  });

  it("rejects a url with a fragment", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", {
      key: uniqueName("remote"),
      type: "remote",
      url: `${upstream.url}/#top`,
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["url"]);
    expect(issueMessages(error.detail)[0]).toContain("must not contain a query or fragment");
  });

  it("rejects a url ending in /v2", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", {
      key: uniqueName("remote"),
      type: "remote",
      url: `${upstream.url}/v2/`,
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["url"]);
    expect(issueMessages(error.detail)[0]).toContain("without /v2");
  });

  it("rejects a username with a colon", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", {
      key: uniqueName("remote"),
      type: "remote",
      url: upstream.url,
      username: "puller:extra",
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["username"]);
    expect(issueMessages(error.detail)[0]).toContain("must not contain ':'");
  });

  it("names the types for an unknown type", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", { key: uniqueName("remote"), type: "weird" });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["type"]);
    expect(issueMessages(error.detail)[0]).toBe("type must be local, remote or virtual");
  });

  it("rejects negative cache seconds", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", {
      key: uniqueName("remote"),
      type: "remote",
      url: upstream.url,
      tagCacheSeconds: -1,
    });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["tagCacheSeconds"]);
  });

  it("rejects remote fields on a local repository", async () => {
    const response = await adminRequest("POST", "/api/v1/repositories", { key: uniqueName("local"), type: "local", url: upstream.url });

    await expectRegistryError(response, 400, "INVALID_REQUEST");
  });

  it("rejects an existing key", async () => {
    const key = await createRemoteRepository();

    const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "remote", url: upstream.url });

    await expectRegistryError(response, 409, "CONFLICT");
  });

  it("needs an administrator", async () => {
    const user = await createUser("creator");

    const response = await adminRequest(
      "POST",
      "/api/v1/repositories",
      { key: uniqueName("remote"), type: "remote", url: upstream.url },
      user.authorization,
    );

    await expectRegistryError(response, 403, "DENIED");
  });

  it("writes an audit entry", async () => {
    const key = await createRemoteRepository();

    const rows = await auditRows(key);

    expect(rows.map((row) => row.action)).toEqual(["repository.create"]);
    expect(JSON.parse(rows[0]!.detail!)).toMatchObject({ type: "remote", url: upstream.url });
  });
});

describe("remote repository update", () => {
  it("sets offline", async () => {
    const key = await createRemoteRepository();

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { offline: true });

    expect(response.status).toBe(200);
    expect(((await response.json()) as RemoteRepository).offline).toBe(true);
    const shown = (await (await adminRequest("GET", `/api/v1/repositories/${key}`)).json()) as RemoteRepository;
    expect(shown.offline).toBe(true);
  });

  it("changes url and cache seconds", async () => {
    const key = await createRemoteRepository();

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { url: "https://mirror.test", tagCacheSeconds: 0 });

    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ url: "https://mirror.test", tagCacheSeconds: 0, negativeCacheSeconds: 60 });
  });

  it("audits the changed fields", async () => {
    const key = await createRemoteRepository();

    await adminRequest("PATCH", `/api/v1/repositories/${key}`, { offline: true });

    const rows = await auditRows(key);
    expect(rows.map((row) => row.action)).toEqual(["repository.create", "repository.update"]);
    expect(JSON.parse(rows[1]!.detail!)).toEqual({ changed: ["offline"], offline: true });
  });

  it("changes the offline and refresh settings", async () => {
    const key = await createRemoteRepository();

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, {
      failureThreshold: 1,
      offlineSeconds: 86_400,
      recentPullSeconds: 31_536_000,
    });

    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ failureThreshold: 1, offlineSeconds: 86_400, recentPullSeconds: 31_536_000 });
  });

  for (const [field, value] of invalidSettings) {
    it(`rejects a PATCH of ${field} ${JSON.stringify(value)}`, async () => {
      const key = await createRemoteRepository();

      const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { [field]: value });

      const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
      expect(issuePaths(error.detail)).toEqual([field]);
      const shown = (await (await adminRequest("GET", `/api/v1/repositories/${key}`)).json()) as RemoteRepository;
      expect(shown).toMatchObject({ failureThreshold: 3, offlineSeconds: 300, recentPullSeconds: 86_400, tagCacheSeconds: 600 });
    });
  }

  it("rejects an empty change", async () => {
    const key = await createRemoteRepository();

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, {});

    await expectRegistryError(response, 400, "INVALID_REQUEST");
  });

  it("rejects an invalid url", async () => {
    const key = await createRemoteRepository();

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { url: "not a url" });

    const error = await expectRegistryError(response, 400, "INVALID_REQUEST");
    expect(issuePaths(error.detail)).toEqual(["url"]);
  });

  it("rejects a local repository", async () => {
    const key = await createRepository("local");

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { offline: true });

    await expectRegistryError(response, 400, "INVALID_REQUEST");
  });

  it("rejects an unknown repository", async () => {
    const response = await adminRequest("PATCH", `/api/v1/repositories/${uniqueName("missing")}`, { offline: true });

    await expectRegistryError(response, 404, "NAME_UNKNOWN");
  });

  it("needs an administrator", async () => {
    const key = await createRemoteRepository();
    const user = await createUser("editor");

    const response = await adminRequest("PATCH", `/api/v1/repositories/${key}`, { offline: true }, user.authorization);

    await expectRegistryError(response, 403, "DENIED");
  });
});
