import { createAccessToken, createPermissionTarget, createRepository, createUser, type Credentials, type WranglerDev } from "./harness.ts";

/** A user who may read every image in docker-local and write none. */
export const reader: Credentials = { username: "reader", password: "reader-e2e-password" };

/** A user who may read and push images under docker-local/e2e/deploy/ only. */
export const deployer: Credentials = { username: "deployer", password: "deployer-e2e-password" };

/** The image path below which `deployer` may push. */
export const deployerPath = "docker-local/e2e/deploy";

/** A repository whose images the anonymous user may read. */
export const publicRepository = "e2e-public";

export interface AuthFixtures {
  /** `deployer` with an access token of theirs as the password. */
  deployerToken: Credentials;
}

/**
 * Creates the users, permission targets and access token that the tests of
 * logins and permissions use, and the public repository.
 */
export async function createAuthFixtures(registry: WranglerDev): Promise<AuthFixtures> {
  await createRepository(registry, publicRepository);
  await createUser(registry, reader);
  await createUser(registry, deployer);

  await createPermissionTarget(registry, { name: "e2e-readers", repositories: ["docker-local"], users: { [reader.username]: ["read"] } });
  await createPermissionTarget(registry, {
    name: "e2e-deployers",
    repositories: ["docker-local"],
    includePatterns: [`${deployerPath.slice("docker-local/".length)}/**`],
    users: { [deployer.username]: ["read", "deploy"] },
  });
  await createPermissionTarget(registry, { name: "e2e-public", repositories: [publicRepository], anonymous: ["read"] });

  const token = await createAccessToken(registry, deployer, "e2e");
  return { deployerToken: { username: deployer.username, password: token } };
}
