import { beforeAll, describe, expect, it } from "vitest";
import {
  adminRequest,
  anonymousAdminRequest,
  auditRows,
  createGroup,
  createUser,
  issuePaths,
  uniqueName,
  type TestUser,
} from "./admin-helpers";
import { expectRegistryError } from "./helpers";
import { testAudience, testIssuer } from "./oidc-helpers";

interface Issuer {
  name: string;
  issuer: string;
  audience: string;
  jwksUrl: string;
  rules: { claims: Record<string, string>; user?: string; group?: string }[];
  createdAt: string;
}

let ciUser: TestUser;
let ciGroup: string;

beforeAll(async () => {
  ciUser = await createUser("issuer-user");
  ciGroup = await createGroup("issuer-group");
});

/** Returns a valid issuer definition with a unique name and issuer URL. */
function definition(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const name = uniqueName("issuer");
  return {
    name,
    issuer: `${testIssuer.issuer}/${name}`,
    audience: testAudience,
    jwksUrl: testIssuer.jwksUrl,
    rules: [
      { claims: { repository: "acme/app", ref: "refs/heads/*" }, user: ciUser.name },
      { claims: { repository_owner: "acme" }, group: ciGroup },
    ],
    ...overrides,
  };
}

function createIssuer(body: unknown, authorization?: string): Promise<Response> {
  return adminRequest("POST", "/api/v1/oidc/issuers", body, authorization);
}

describe("OIDC issuer create", () => {
  it("creates an issuer with 201", async () => {
    const body = definition();

    const response = await createIssuer(body);

    expect(response.status).toBe(201);
    expect(response.headers.get("Location")).toBe(`/api/v1/oidc/issuers/${body.name}`);
    const created = (await response.json()) as Issuer;
    expect(created).toMatchObject(body);
    expect(created.createdAt).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  it("shows the issuer by name", async () => {
    const body = definition();
    const created = await (await createIssuer(body)).json();

    const response = await adminRequest("GET", `/api/v1/oidc/issuers/${body.name}`);

    expect(response.status).toBe(200);
    expect(await response.json()).toEqual(created);
  });

  it("lists the issuer", async () => {
    const body = definition();
    await createIssuer(body);

    const response = await adminRequest("GET", "/api/v1/oidc/issuers");

    expect(response.status).toBe(200);
    const { issuers } = (await response.json()) as { issuers: Issuer[] };
    expect(issuers.map((issuer) => issuer.name)).toContain(body.name);
  });

  it("audits the creation", async () => {
    const body = definition();
    await createIssuer(body);

    const rows = await auditRows(body.name as string);

    expect(rows.map((row) => row.action)).toEqual(["oidc-issuer.create"]);
    expect(rows[0]!.actor).toBe("admin");
  });

  it("rejects a duplicate name with 409", async () => {
    const body = definition();
    expect((await createIssuer(body)).status).toBe(201);

    const response = await createIssuer({ ...definition(), name: body.name });

    await expectRegistryError(response, 409, "CONFLICT");
  });

  it("rejects a duplicate issuer URL with 409", async () => {
    const body = definition();
    expect((await createIssuer(body)).status).toBe(201);

    const response = await createIssuer({ ...definition(), issuer: body.issuer });

    await expectRegistryError(response, 409, "CONFLICT");
  });

  const invalid: [string, Record<string, unknown>, string][] = [
    ["an uppercase name", { name: "GitHub" }, "name"],
    ["an ftp issuer", { issuer: "ftp://issuer.example" }, "issuer"],
    ["a relative issuer", { issuer: "/issuer" }, "issuer"],
    ["an empty audience", { audience: "" }, "audience"],
    ["a file jwksUrl", { jwksUrl: "file:///etc/keys.json" }, "jwksUrl"],
    ["no rules", { rules: [] }, "rules"],
    ["a rule with both targets", { rules: [{ claims: { repository: "a/b" }, user: "x", group: "y" }] }, "rules.0"],
    ["a rule without a target", { rules: [{ claims: { repository: "a/b" } }] }, "rules.0"],
    ["a rule without claims", { rules: [{ claims: {}, group: "y" }] }, "rules.0.claims"],
    ["a rule matching every token", { rules: [{ claims: { sub: "*" }, group: "y" }] }, "rules.0.claims"],
    ["an empty claim value", { rules: [{ claims: { sub: "" }, group: "y" }] }, "rules.0.claims.sub"],
    ["a non-string claim value", { rules: [{ claims: { sub: 1 }, group: "y" }] }, "rules.0.claims.sub"],
    ["an unknown rule field", { rules: [{ claims: { sub: "a" }, group: "y", admin: true }] }, "rules.0"],
    ["an unknown field", { discovery: true }, ""],
  ];
  for (const [label, overrides, path] of invalid) {
    it(`rejects ${label}`, async () => {
      const error = await expectRegistryError(await createIssuer(definition(overrides)), 400, "INVALID_REQUEST");

      expect(issuePaths(error.detail)).toContain(path);
    });
  }

  it("rejects an unknown user", async () => {
    const body = definition({ rules: [{ claims: { repository: "acme/app" }, user: "nobody-at-all" }] });

    const error = await expectRegistryError(await createIssuer(body), 400, "INVALID_REQUEST");

    expect(issuePaths(error.detail)).toEqual(["rules.0.user"]);
  });

  it("rejects an unknown group", async () => {
    const body = definition({
      rules: [
        { claims: { repository: "acme/app" }, user: ciUser.name },
        { claims: { repository: "acme/app" }, group: "no-such-group" },
      ],
    });

    const error = await expectRegistryError(await createIssuer(body), 400, "INVALID_REQUEST");

    expect(issuePaths(error.detail)).toEqual(["rules.1.group"]);
  });

  it("rejects a body that is not JSON", async () => {
    await expectRegistryError(await createIssuer("{"), 400, "INVALID_REQUEST");
  });
});

describe("OIDC issuer delete", () => {
  it("deletes with 204", async () => {
    const body = definition();
    await createIssuer(body);

    const response = await adminRequest("DELETE", `/api/v1/oidc/issuers/${body.name}`);

    expect(response.status).toBe(204);
    await expectRegistryError(await adminRequest("GET", `/api/v1/oidc/issuers/${body.name}`), 404, "NOT_FOUND");
  });

  it("audits the deletion", async () => {
    const body = definition();
    await createIssuer(body);
    await adminRequest("DELETE", `/api/v1/oidc/issuers/${body.name}`);

    const rows = await auditRows(body.name as string);

    expect(rows.map((row) => row.action)).toEqual(["oidc-issuer.create", "oidc-issuer.delete"]);
  });

  it("reports an unknown issuer", async () => {
    await expectRegistryError(await adminRequest("DELETE", "/api/v1/oidc/issuers/missing"), 404, "NOT_FOUND");
  });
});

describe("OIDC issuer access", () => {
  let user: TestUser;
  beforeAll(async () => {
    user = await createUser("issuer-viewer");
  });

  it("denies listing to non-administrators", async () => {
    await expectRegistryError(await adminRequest("GET", "/api/v1/oidc/issuers", undefined, user.authorization), 403, "DENIED");
  });

  it("denies creation to non-administrators", async () => {
    await expectRegistryError(await createIssuer(definition(), user.authorization), 403, "DENIED");
  });

  it("denies deletion to non-administrators", async () => {
    const body = definition();
    await createIssuer(body);

    const response = await adminRequest("DELETE", `/api/v1/oidc/issuers/${body.name}`, undefined, user.authorization);

    await expectRegistryError(response, 403, "DENIED");
    expect((await adminRequest("GET", `/api/v1/oidc/issuers/${body.name}`)).status).toBe(200);
  });

  it("requires authentication", async () => {
    await expectRegistryError(await anonymousAdminRequest("GET", "/api/v1/oidc/issuers"), 401, "UNAUTHORIZED");
  });

  it("rejects PUT with 405", async () => {
    const body = definition();
    await createIssuer(body);

    const response = await adminRequest("PUT", `/api/v1/oidc/issuers/${body.name}`, body);

    await expectRegistryError(response, 405, "UNSUPPORTED");
    expect(response.headers.get("Allow")).toBe("GET, HEAD, DELETE");
  });
});
