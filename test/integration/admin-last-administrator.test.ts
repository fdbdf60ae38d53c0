import { env } from "cloudflare:workers";
import { beforeEach, describe, expect, it } from "vitest";
import { adminRequest, createGroup, createTarget, createUser } from "./admin-helpers";
import { adminPassword, basicAuthorization, expectRegistryError, registryFetch } from "./helpers";

const admin = basicAuthorization("admin", adminPassword);

/** Names of the enabled users who are administrators directly or through a group, read from D1. */
async function enabledAdministrators(): Promise<string[]> {
  const { results } = await env.DB.prepare(
    `SELECT u.name FROM users u
      WHERE u.disabled = 0
        AND (u.admin = 1 OR EXISTS (SELECT 1 FROM group_members m JOIN groups g ON g.id = m.group_id WHERE m.user_id = u.id AND g.admin = 1))
      ORDER BY u.name`,
  ).all<{ name: string }>();
  return results.map((row) => row.name);
}

// Every test starts and ends with `admin` as the only enabled administrator.
// The first request of the file creates `admin` from ADMIN_PASSWORD.
beforeEach(async () => {
  expect((await registryFetch("/v2/")).status).toBe(200);
  expect(await enabledAdministrators()).toEqual(["admin"]);
});

describe("last administrator user", () => {
  it("rejects demoting them with 409", async () => {
    const error = await expectRegistryError(await adminRequest("PATCH", "/api/v1/users/admin", { admin: false }), 409, "CONFLICT");

    expect(error.detail).toEqual({ name: "admin" });
    expect(await enabledAdministrators()).toEqual(["admin"]);
  });

  it("rejects disabling them with 409", async () => {
    await expectRegistryError(await adminRequest("PATCH", "/api/v1/users/admin", { disabled: true }), 409, "CONFLICT");

    expect(await enabledAdministrators()).toEqual(["admin"]);
  });

  it("rejects deleting them with 409", async () => {
    await expectRegistryError(await adminRequest("DELETE", "/api/v1/users/admin"), 409, "CONFLICT");

    expect((await adminRequest("GET", "/api/v1/users/admin")).status).toBe(200);
  });

  it("keeps their grants after a rejected delete", async () => {
    const target = await createTarget({ repositories: ["docker-local"], users: { admin: ["read"] } });

    await expectRegistryError(await adminRequest("DELETE", "/api/v1/users/admin"), 409, "CONFLICT");

    const shown = (await (await adminRequest("GET", `/api/v1/permissions/${target}`)).json()) as { users: object };
    expect(shown.users).toEqual({ admin: ["read"] });
  });

  it("keeps other fields of a rejected update", async () => {
    await expectRegistryError(
      await adminRequest("PATCH", "/api/v1/users/admin", { email: "lost@example.com", admin: false }),
      409,
      "CONFLICT",
    );

    const shown = (await (await adminRequest("GET", "/api/v1/users/admin")).json()) as { email: string };
    expect(shown.email).toBe("");
  });

  it("allows changing their email", async () => {
    const response = await adminRequest("PATCH", "/api/v1/users/admin", { email: "admin@example.com" });

    expect(response.status).toBe(200);
  });
});

describe("another administrator", () => {
  it("can be demoted", async () => {
    const other = await createUser("second", { admin: true });

    expect((await adminRequest("PATCH", `/api/v1/users/${other.name}`, { admin: false })).status).toBe(200);
  });

  it("can be deleted", async () => {
    const other = await createUser("second", { admin: true });

    expect((await adminRequest("DELETE", `/api/v1/users/${other.name}`)).status).toBe(204);
  });

  it("lets the first administrator step down", async () => {
    const other = await createUser("successor", { admin: true });

    expect((await adminRequest("PATCH", "/api/v1/users/admin", { admin: false }, other.authorization)).status).toBe(200);
    expect(await enabledAdministrators()).toEqual([other.name]);

    await expectRegistryError(await adminRequest("DELETE", `/api/v1/users/${other.name}`, undefined, other.authorization), 409, "CONFLICT");
    expect((await adminRequest("PATCH", "/api/v1/users/admin", { admin: true }, other.authorization)).status).toBe(200);
    expect((await adminRequest("DELETE", `/api/v1/users/${other.name}`)).status).toBe(204);
  });

  it("survives two administrators demoting each other at once", async () => {
    const other = await createUser("rival", { admin: true });

    const responses = await Promise.all([
      adminRequest("PATCH", `/api/v1/users/${other.name}`, { admin: false }, admin),
      adminRequest("PATCH", "/api/v1/users/admin", { admin: false }, other.authorization),
    ]);

    const statuses = responses.map((response) => response.status);
    expect(statuses.filter((status) => status === 200)).toHaveLength(1);
    const remaining = await enabledAdministrators();
    expect(remaining).toHaveLength(1);

    const survivor = remaining[0] === "admin" ? admin : other.authorization;
    expect((await adminRequest("PATCH", "/api/v1/users/admin", { admin: true }, survivor)).status).toBe(200);
    expect((await adminRequest("DELETE", `/api/v1/users/${other.name}`)).status).toBe(204);
  });
});

describe("last administrator through a group", () => {
  /**
   * Makes a new user the only enabled administrator, through an admin group,
   * and returns their Authorization header and the group. `restore` gives
   * `admin` the flag back and deletes the user.
   */
  async function onlyGroupAdministrator() {
    const user = await createUser("grouped");
    const group = await createGroup("owners", { admin: true, members: [user.name] });
    expect((await adminRequest("PATCH", "/api/v1/users/admin", { admin: false }, user.authorization)).status).toBe(200);
    expect(await enabledAdministrators()).toEqual([user.name]);

    const restore = async () => {
      expect((await adminRequest("PATCH", "/api/v1/users/admin", { admin: true }, user.authorization)).status).toBe(200);
      expect((await adminRequest("DELETE", `/api/v1/users/${user.name}`)).status).toBe(204);
      expect((await adminRequest("DELETE", `/api/v1/groups/${group}`)).status).toBe(204);
    };
    return { user, group, restore };
  }

  it("rejects clearing the group's admin flag", async () => {
    const { user, group, restore } = await onlyGroupAdministrator();

    await expectRegistryError(
      await adminRequest("PATCH", `/api/v1/groups/${group}`, { admin: false }, user.authorization),
      409,
      "CONFLICT",
    );

    expect(await enabledAdministrators()).toEqual([user.name]);
    await restore();
  });

  it("rejects deleting the group", async () => {
    const { user, group, restore } = await onlyGroupAdministrator();

    await expectRegistryError(await adminRequest("DELETE", `/api/v1/groups/${group}`, undefined, user.authorization), 409, "CONFLICT");

    expect(await enabledAdministrators()).toEqual([user.name]);
    await restore();
  });

  it("rejects removing the member", async () => {
    const { user, group, restore } = await onlyGroupAdministrator();

    const response = await adminRequest("DELETE", `/api/v1/groups/${group}/members/${user.name}`, undefined, user.authorization);

    await expectRegistryError(response, 409, "CONFLICT");
    expect(await enabledAdministrators()).toEqual([user.name]);
    await restore();
  });

  it("rejects replacing the members", async () => {
    const { user, group, restore } = await onlyGroupAdministrator();

    await expectRegistryError(await adminRequest("PATCH", `/api/v1/groups/${group}`, { members: [] }, user.authorization), 409, "CONFLICT");

    expect(await enabledAdministrators()).toEqual([user.name]);
    await restore();
  });

  it("rejects disabling the member", async () => {
    const { user, restore } = await onlyGroupAdministrator();

    await expectRegistryError(
      await adminRequest("PATCH", `/api/v1/users/${user.name}`, { disabled: true }, user.authorization),
      409,
      "CONFLICT",
    );

    expect(await enabledAdministrators()).toEqual([user.name]);
    await restore();
  });

  it("allows clearing the member's own flag", async () => {
    const { user, restore } = await onlyGroupAdministrator();

    const response = await adminRequest("PATCH", `/api/v1/users/${user.name}`, { admin: false }, user.authorization);

    expect(response.status).toBe(200);
    expect(await enabledAdministrators()).toEqual([user.name]);
    await restore();
  });
});
