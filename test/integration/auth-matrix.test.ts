import { env } from "cloudflare:workers";
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { permissionEvaluator, type Principal } from "../../src/auth/permissions";
import {
  basicFor,
  bearerFor,
  createAccessToken,
  createGroup,
  createPermissionTarget,
  createRepository,
  createUser,
  createUserWith,
  fetchAs,
  registrySigningKey,
  repositoryAccess,
  secondsFromNow,
  service,
  signToken,
  type TestUser,
} from "./auth-fixtures";
import {
  adminPassword,
  basicAuthorization,
  digestOf,
  expectRegistryError,
  origin,
  randomBytes,
  readBytes,
  registryFetch,
  uploadBlob,
} from "./helpers";
import { imageManifest, mediaTypes, oddlyFormatted, pushImageBlobs, putManifestOk, type Descriptor } from "./manifest-helpers";

/** The registry permissions that the registry API checks. */
type Permission = "read" | "deploy" | "delete";

/** An image the matrix runs against, pushed by the administrator. */
interface MatrixImage {
  name: string;
  config: Descriptor;
  layer: Descriptor & { bytes: Uint8Array };
  manifest: { digest: string; bytes: Uint8Array };
  referrerDigest: string;
}

/** Sends a request with the Authorization header of the subject under test. */
type Send = (path: string, init?: RequestInit) => Promise<Response>;

/**
 * One registry operation. `steps` are the permission checks the registry
 * makes in order, each with the registry token action it needs.
 */
interface Operation {
  name: string;
  steps: { permission: Permission; tokenAction: string }[];
  status: number;
  /** Creates what the operation needs, as the administrator, and returns the argument of `run`. */
  prepare?: (image: MatrixImage) => Promise<string>;
  run: (send: Send, image: MatrixImage, prepared: string) => Promise<Response>;
  /** Checks the response and the stored state after a successful run. */
  succeeded: (response: Response, image: MatrixImage, prepared: string) => Promise<void>;
  /** Checks that a rejected run changed nothing. */
  unchanged?: (image: MatrixImage, prepared: string) => Promise<void>;
}

const read = { permission: "read", tokenAction: "pull" } as const;
const deploy = { permission: "deploy", tokenAction: "push" } as const;
const remove = { permission: "delete", tokenAction: "delete" } as const;
// Moving a tag to other content needs delete, but only push in a registry token.
const overwrite = { permission: "delete", tokenAction: "push" } as const;

/** The Docker actions of the scope in a challenge for each permission. */
const challengeActions: Record<Permission, string> = { read: "pull", deploy: "pull,push", delete: "delete" };

/** Builds the WWW-Authenticate value that the registry sends with a 401. */
function expectedChallenge(scope?: string, error?: string): string {
  let value = `Bearer realm="${origin}/v2/token",service="${service}"`;
  if (scope) value += `,scope="${scope}"`;
  if (error) value += `,error="${error}"`;
  return value;
}

/** Builds a manifest over the image's blobs that differs from every other one by an annotation. */
function variantManifest(image: MatrixImage): Uint8Array {
  return oddlyFormatted(imageManifest(image.config, [image.layer], { annotations: { "org.example.variant": crypto.randomUUID() } }));
}

/** Blob contents that "upload blob" sends, by digest. */
const blobsToUpload = new Map<string, Uint8Array>();

async function adminHead(path: string): Promise<Response> {
  return registryFetch(path, { method: "HEAD" });
}

const operations: Operation[] = [
  {
    name: "GET manifest",
    steps: [read],
    status: 200,
    run: (send, image) => send(`/v2/${image.name}/manifests/v1`),
    succeeded: async (response, image) => {
      expect(await readBytes(response)).toEqual(image.manifest.bytes);
    },
  },
  {
    name: "HEAD manifest",
    steps: [read],
    status: 200,
    run: (send, image) => send(`/v2/${image.name}/manifests/${image.manifest.digest}`, { method: "HEAD" }),
    succeeded: async (response, image) => {
      expect(response.headers.get("Docker-Content-Digest")).toBe(image.manifest.digest);
    },
  },
  {
    name: "GET blob",
    steps: [read],
    status: 200,
    run: (send, image) => send(`/v2/${image.name}/blobs/${image.layer.digest}`),
    succeeded: async (response, image) => {
      expect(await readBytes(response)).toEqual(image.layer.bytes);
    },
  },
  {
    name: "HEAD blob",
    steps: [read],
    status: 200,
    run: (send, image) => send(`/v2/${image.name}/blobs/${image.layer.digest}`, { method: "HEAD" }),
    succeeded: async (response, image) => {
      expect(response.headers.get("Content-Length")).toBe(String(image.layer.size));
    },
  },
  {
    name: "tags list",
    steps: [read],
    status: 200,
    run: (send, image) => send(`/v2/${image.name}/tags/list`),
    succeeded: async (response) => {
      expect(((await response.json()) as { tags: string[] }).tags).toContain("v1");
    },
  },
  {
    name: "referrers",
    steps: [read],
    status: 200,
    run: (send, image) => send(`/v2/${image.name}/referrers/${image.manifest.digest}`),
    succeeded: async (response, image) => {
      const index = (await response.json()) as { manifests: { digest: string }[] };
      expect(index.manifests.map((descriptor) => descriptor.digest)).toEqual([image.referrerDigest]);
    },
  },
  {
    name: "upload blob",
    steps: [deploy],
    status: 201,
    prepare: async () => {
      const bytes = randomBytes(32);
      const digest = await digestOf(bytes);
      blobsToUpload.set(digest, bytes);
      return digest;
    },
    run: async (send, image, digest) => {
      const bytes = blobsToUpload.get(digest)!;
      const opened = await send(`/v2/${image.name}/blobs/uploads/`, { method: "POST" });
      if (opened.status !== 202) return opened;
      return send(`${opened.headers.get("Location")}?digest=${digest}`, { method: "PUT", body: bytes });
    },
    succeeded: async (_response, image, digest) => {
      expect((await adminHead(`/v2/${image.name}/blobs/${digest}`)).status).toBe(200);
    },
    unchanged: async (image, digest) => {
      expect((await adminHead(`/v2/${image.name}/blobs/${digest}`)).status).toBe(404);
    },
  },
  {
    name: "push new tag",
    steps: [deploy],
    status: 201,
    prepare: async () => `new-${crypto.randomUUID()}`,
    run: (send, image, tag) =>
      send(`/v2/${image.name}/manifests/${tag}`, {
        method: "PUT",
        headers: { "Content-Type": mediaTypes.ociManifest },
        body: variantManifest(image),
      }),
    succeeded: async (_response, image, tag) => {
      expect((await adminHead(`/v2/${image.name}/manifests/${tag}`)).status).toBe(200);
    },
    unchanged: async (image, tag) => {
      expect((await adminHead(`/v2/${image.name}/manifests/${tag}`)).status).toBe(404);
    },
  },
  {
    name: "overwrite tag",
    steps: [deploy, overwrite],
    status: 201,
    prepare: async (image) => {
      const tag = `moved-${crypto.randomUUID()}`;
      const { digest } = await putManifestOk(image.name, tag, variantManifest(image), mediaTypes.ociManifest);
      return JSON.stringify({ tag, digest });
    },
    run: (send, image, prepared) =>
      send(`/v2/${image.name}/manifests/${JSON.parse(prepared).tag}`, {
        method: "PUT",
        headers: { "Content-Type": mediaTypes.ociManifest },
        body: variantManifest(image),
      }),
    succeeded: async (response, image, prepared) => {
      const { tag, digest } = JSON.parse(prepared);
      const current = await adminHead(`/v2/${image.name}/manifests/${tag}`);
      expect(current.headers.get("Docker-Content-Digest")).toBe(response.headers.get("Docker-Content-Digest"));
      expect(current.headers.get("Docker-Content-Digest")).not.toBe(digest);
    },
    unchanged: async (image, prepared) => {
      const { tag, digest } = JSON.parse(prepared);
      expect((await adminHead(`/v2/${image.name}/manifests/${tag}`)).headers.get("Docker-Content-Digest")).toBe(digest);
    },
  },
  {
    name: "delete manifest",
    steps: [remove],
    status: 202,
    prepare: async (image) => {
      const bytes = variantManifest(image);
      return (await putManifestOk(image.name, await digestOf(bytes), bytes, mediaTypes.ociManifest)).digest;
    },
    run: (send, image, digest) => send(`/v2/${image.name}/manifests/${digest}`, { method: "DELETE" }),
    succeeded: async (_response, image, digest) => {
      expect((await adminHead(`/v2/${image.name}/manifests/${digest}`)).status).toBe(404);
    },
    unchanged: async (image, digest) => {
      expect((await adminHead(`/v2/${image.name}/manifests/${digest}`)).status).toBe(200);
    },
  },
  {
    name: "delete tag",
    steps: [remove],
    status: 202,
    prepare: async (image) => {
      const tag = `doomed-${crypto.randomUUID()}`;
      await putManifestOk(image.name, tag, image.manifest.bytes, mediaTypes.ociManifest);
      return tag;
    },
    run: (send, image, tag) => send(`/v2/${image.name}/manifests/${tag}`, { method: "DELETE" }),
    succeeded: async (_response, image, tag) => {
      expect((await adminHead(`/v2/${image.name}/manifests/${tag}`)).status).toBe(404);
      expect((await adminHead(`/v2/${image.name}/manifests/${image.manifest.digest}`)).status).toBe(200);
    },
    unchanged: async (image, tag) => {
      expect((await adminHead(`/v2/${image.name}/manifests/${tag}`)).status).toBe(200);
    },
  },
  {
    name: "delete blob",
    steps: [remove],
    status: 202,
    prepare: (image) => uploadBlob(image.name, randomBytes(48)),
    run: (send, image, digest) => send(`/v2/${image.name}/blobs/${digest}`, { method: "DELETE" }),
    succeeded: async (_response, image, digest) => {
      expect((await adminHead(`/v2/${image.name}/blobs/${digest}`)).status).toBe(404);
    },
    unchanged: async (image, digest) => {
      expect((await adminHead(`/v2/${image.name}/blobs/${digest}`)).status).toBe(200);
    },
  },
];

/** Pushes an image with a config, a layer, the tag v1 and one referrer. */
async function seedImage(name: string): Promise<MatrixImage> {
  const { config } = await pushImageBlobs(name);
  const layerBytes = randomBytes(200);
  const layer = {
    mediaType: mediaTypes.ociLayer,
    digest: await uploadBlob(name, layerBytes),
    size: layerBytes.byteLength,
    bytes: layerBytes,
  };
  const manifest = await putManifestOk(name, "v1", oddlyFormatted(imageManifest(config, [layer])), mediaTypes.ociManifest);

  const subject = { mediaType: mediaTypes.ociManifest, digest: manifest.digest, size: manifest.bytes.byteLength };
  const referrerBytes = oddlyFormatted(imageManifest(config, [layer], { subject, artifactType: "application/vnd.example.signature" }));
  const referrer = await putManifestOk(name, await digestOf(referrerBytes), referrerBytes, mediaTypes.ociManifest);
  return { name, config, layer, manifest: { digest: manifest.digest, bytes: manifest.bytes }, referrerDigest: referrer.digest };
}

/** How the registry rejects a subject that lacks a permission. */
type Rejection =
  /** The anonymous user: 401 with a challenge naming the scope. */
  | "challenge"
  /** A user: 403 DENIED. */
  | "denied"
  /** Credentials that are invalid, expired or revoked: 401 with a challenge without scope. */
  | "invalid";

/** Who sends the requests of one row of the matrix, and what the model lets them do. */
interface Subject {
  label: string;
  image: "private" | "public";
  rejection: Rejection;
  permissions: Permission[];
  /** The actions of the registry token the subject sends, or undefined without one. */
  tokenActions?: string[];
  catalog: "listed" | "hidden" | "challenge" | "insufficient_scope" | "invalid";
  authorization: (context: MatrixContext) => Promise<string | null>;
}

interface MatrixContext {
  privateImage: MatrixImage;
  publicImage: MatrixImage;
  /** A user with read, deploy and delete on the private image. */
  fullUser: TestUser;
  otherRepository: string;
}

const allPermissions: Permission[] = ["read", "deploy", "delete"];

async function userWith(label: string, actions: ("read" | "annotate" | "deploy" | "delete" | "manage")[]): Promise<string> {
  return basicFor(await createUserWith(label, actions, ["matrix/**"]));
}

const subjects: Subject[] = [
  {
    label: "administrator",
    image: "private",
    rejection: "denied",
    permissions: allPermissions,
    catalog: "listed",
    authorization: async () => basicAuthorization("admin", adminPassword),
  },
  {
    label: "reader",
    image: "private",
    rejection: "denied",
    permissions: ["read"],
    catalog: "listed",
    authorization: () => userWith("reader", ["read"]),
  },
  {
    label: "deployer",
    image: "private",
    rejection: "denied",
    permissions: ["deploy"],
    catalog: "hidden",
    authorization: () => userWith("deployer", ["deploy"]),
  },
  {
    label: "deleter",
    image: "private",
    rejection: "denied",
    permissions: ["delete"],
    catalog: "hidden",
    authorization: () => userWith("deleter", ["delete"]),
  },
  {
    label: "annotator",
    image: "private",
    rejection: "denied",
    permissions: [],
    catalog: "hidden",
    authorization: () => userWith("annotator", ["annotate"]),
  },
  {
    label: "manager",
    image: "private",
    rejection: "denied",
    permissions: [],
    catalog: "hidden",
    authorization: () => userWith("manager", ["manage"]),
  },
  {
    label: "group reader",
    image: "private",
    rejection: "denied",
    permissions: ["read"],
    catalog: "listed",
    authorization: async () => {
      const user = await createUser("group-reader");
      const group = await createGroup("readers", [user]);
      await createPermissionTarget("readers-target", { includes: ["matrix/**"], grants: [{ to: { group }, actions: ["read"] }] });
      return basicFor(user);
    },
  },
  {
    label: "group writer",
    image: "private",
    rejection: "denied",
    permissions: allPermissions,
    catalog: "listed",
    authorization: async () => {
      const user = await createUser("group-writer");
      const group = await createGroup("writers", [user]);
      await createPermissionTarget("writers-target", {
        includes: ["matrix/**"],
        grants: [{ to: { group }, actions: ["read", "deploy", "delete"] }],
      });
      return basicFor(user);
    },
  },
  {
    label: "administrator group member",
    image: "private",
    rejection: "denied",
    permissions: allPermissions,
    catalog: "listed",
    authorization: async () => {
      const user = await createUser("group-admin");
      await createGroup("administrators", [user], { admin: true });
      return basicFor(user);
    },
  },
  {
    label: "anonymous",
    image: "private",
    rejection: "challenge",
    permissions: [],
    catalog: "challenge",
    authorization: async () => null,
  },
  {
    label: "anonymous with a grant",
    image: "public",
    rejection: "challenge",
    permissions: ["read"],
    catalog: "challenge",
    authorization: async () => null,
  },
  {
    label: "anonymous registry token",
    image: "public",
    rejection: "challenge",
    permissions: ["read"],
    tokenActions: ["pull"],
    catalog: "insufficient_scope",
    authorization: async ({ publicImage }) => bearerFor(null, [`repository:${publicImage.name}:pull,push,delete`, "registry:catalog:*"]),
  },
  {
    label: "read-scoped access token as Basic",
    image: "private",
    rejection: "denied",
    permissions: ["read"],
    catalog: "listed",
    authorization: async ({ fullUser }) => {
      const secret = await createAccessToken(fullUser, { scope: { repositories: ["docker-local"], actions: ["read"] } });
      return `Basic ${btoa(`${fullUser.name}:${secret}`)}`;
    },
  },
  {
    label: "read-scoped access token as Bearer",
    image: "private",
    rejection: "denied",
    permissions: ["read"],
    catalog: "listed",
    authorization: async ({ fullUser }) => {
      const secret = await createAccessToken(fullUser, { scope: { actions: ["read"] }, expiresAt: secondsFromNow(3600) });
      return `Bearer ${secret}`;
    },
  },
  {
    label: "access token for another repository",
    image: "private",
    rejection: "denied",
    permissions: [],
    catalog: "hidden",
    authorization: async ({ fullUser, otherRepository }) =>
      `Bearer ${await createAccessToken(fullUser, { scope: { repositories: [otherRepository] } })}`,
  },
  {
    label: "pull registry token",
    image: "private",
    rejection: "denied",
    permissions: allPermissions,
    tokenActions: ["pull"],
    catalog: "insufficient_scope",
    authorization: async ({ fullUser, privateImage }) => bearerFor(basicFor(fullUser), [`repository:${privateImage.name}:pull`]),
  },
  {
    label: "push registry token",
    image: "private",
    rejection: "denied",
    permissions: allPermissions,
    tokenActions: ["pull", "push"],
    catalog: "insufficient_scope",
    authorization: async ({ fullUser, privateImage }) => bearerFor(basicFor(fullUser), [`repository:${privateImage.name}:pull,push`]),
  },
  {
    label: "full registry token",
    image: "private",
    rejection: "denied",
    permissions: allPermissions,
    tokenActions: ["pull", "push", "delete"],
    catalog: "listed",
    authorization: async ({ fullUser, privateImage }) =>
      bearerFor(basicFor(fullUser), [`repository:${privateImage.name}:*`, "registry:catalog:*"]),
  },
  {
    label: "reader's registry token",
    image: "private",
    rejection: "denied",
    permissions: ["read"],
    tokenActions: ["pull"],
    catalog: "listed",
    authorization: async ({ privateImage }) => {
      const reader = await createUserWith("token-reader", ["read"], ["matrix/**"]);
      return bearerFor(basicFor(reader), [`repository:${privateImage.name}:pull,push,delete`, "registry:catalog:*"]);
    },
  },
  {
    label: "registry token of a scoped access token",
    image: "private",
    rejection: "denied",
    permissions: ["read", "deploy"],
    tokenActions: ["pull", "push"],
    catalog: "insufficient_scope",
    authorization: async ({ fullUser, privateImage }) => {
      const secret = await createAccessToken(fullUser, { scope: { actions: ["read", "deploy"] } });
      return bearerFor(`Basic ${btoa(`${fullUser.name}:${secret}`)}`, [`repository:${privateImage.name}:pull,push,delete`]);
    },
  },
  {
    label: "expired registry token",
    image: "private",
    rejection: "invalid",
    permissions: [],
    catalog: "invalid",
    authorization: async ({ fullUser, privateImage }) => {
      const now = Math.floor(Date.now() / 1000);
      const token = await signToken(await registrySigningKey(), {
        sub: fullUser.name,
        iat: now - 600,
        nbf: now - 600,
        exp: now - 300,
        access: [repositoryAccess(privateImage.name, ["pull", "push", "delete"]), { type: "registry", name: "catalog", actions: ["*"] }],
      });
      return `Bearer ${token}`;
    },
  },
  {
    label: "revoked access token as Basic",
    image: "private",
    rejection: "invalid",
    permissions: [],
    catalog: "invalid",
    authorization: async ({ fullUser }) => {
      const secret = await createAccessToken(fullUser, { revokedAt: secondsFromNow(-60) });
      return `Basic ${btoa(`${fullUser.name}:${secret}`)}`;
    },
  },
  {
    label: "revoked access token as Bearer",
    image: "private",
    rejection: "invalid",
    permissions: [],
    catalog: "invalid",
    authorization: async ({ fullUser }) => `Bearer ${await createAccessToken(fullUser, { revokedAt: secondsFromNow(-60) })}`,
  },
  {
    label: "expired access token",
    image: "private",
    rejection: "invalid",
    permissions: [],
    catalog: "invalid",
    authorization: async ({ fullUser }) => `Bearer ${await createAccessToken(fullUser, { expiresAt: secondsFromNow(-1) })}`,
  },
];

/** The response the model expects: success, or the rejection by the first check that fails. */
type Expected =
  | { outcome: "success" }
  | { outcome: "challenge"; scope: string }
  | { outcome: "denied" }
  | { outcome: "insufficient_scope"; scope: string }
  | { outcome: "invalid" };

function expectedOutcome(subject: Subject, operation: Operation, imageName: string): Expected {
  if (subject.rejection === "invalid") return { outcome: "invalid" };
  for (const step of operation.steps) {
    const scope = `repository:${imageName}:${challengeActions[step.permission]}`;
    if (!subject.permissions.includes(step.permission)) {
      return subject.rejection === "challenge" ? { outcome: "challenge", scope } : { outcome: "denied" };
    }
    if (subject.tokenActions && !subject.tokenActions.includes(step.tokenAction)) return { outcome: "insufficient_scope", scope };
  }
  return { outcome: "success" };
}

/** Checks a 401 or 403 from the registry: its code, and its challenge header when it has one. */
async function expectRejection(response: Response, status: 401 | 403, challenge: string | null, method: string): Promise<void> {
  expect(response.status).toBe(status);
  expect(response.headers.get("WWW-Authenticate")).toBe(challenge);
  if (method === "HEAD") {
    expect(response.headers.get("Content-Length") ?? "0").toBe("0");
    return;
  }
  await expectRegistryError(response, status, status === 401 ? "UNAUTHORIZED" : "DENIED");
}

describe("authorisation matrix", () => {
  let context: MatrixContext;
  const authorizations = new Map<string, string | null>();

  beforeAll(async () => {
    const privateImage = await seedImage("docker-local/matrix/app");
    const publicImage = await seedImage("docker-local/public/app");
    await createPermissionTarget("public", { includes: ["public/**"], grants: [{ to: "anonymous", actions: ["read"] }] });
    const fullUser = await createUserWith("full", ["read", "deploy", "delete"], ["matrix/**"]);
    context = { privateImage, publicImage, fullUser, otherRepository: await createRepository("other") };
  });

  // Rejected Basic logins count as failed logins, and the rate limit has its own tests.
  afterEach(async () => {
    await env.DB.prepare("DELETE FROM login_failures").run();
  });

  function sender(subject: Subject): Send {
    return (path, init) => fetchAs(authorizations.get(subject.label) ?? null, path, init);
  }

  for (const subject of subjects) {
    describe(subject.label, () => {
      // Registry tokens live 300 s, so each subject gets its credentials just before its own tests.
      beforeAll(async () => {
        authorizations.set(subject.label, await subject.authorization(context));
      });

      for (const operation of operations) {
        it(operation.name, async () => {
          const image = subject.image === "private" ? context.privateImage : context.publicImage;
          const prepared = operation.prepare ? await operation.prepare(image) : "";
          const method = operation.name.startsWith("HEAD") ? "HEAD" : "other";
          const expected = expectedOutcome(subject, operation, image.name);

          const response = await operation.run(sender(subject), image, prepared);

          switch (expected.outcome) {
            case "success":
              expect(response.status, await response.clone().text()).toBe(operation.status);
              await operation.succeeded(response, image, prepared);
              return;
            case "challenge":
              await expectRejection(response, 401, expectedChallenge(expected.scope), method);
              break;
            case "insufficient_scope":
              await expectRejection(response, 401, expectedChallenge(expected.scope, "insufficient_scope"), method);
              break;
            case "denied":
              await expectRejection(response, 403, null, method);
              break;
            case "invalid":
              await expectRejection(response, 401, expectedChallenge(), method);
              break;
          }
          await operation.unchanged?.(image, prepared);
        });
      }

      it("catalog", async () => {
        const response = await sender(subject)("/v2/_catalog");

        switch (subject.catalog) {
          case "listed":
          case "hidden": {
            expect(response.status).toBe(200);
            const { repositories } = (await response.json()) as { repositories: string[] };
            if (subject.catalog === "listed") expect(repositories).toContain(context.privateImage.name);
            else expect(repositories).not.toContain(context.privateImage.name);
            return;
          }
          case "challenge":
            await expectRejection(response, 401, expectedChallenge(), "GET");
            return;
          case "insufficient_scope":
            await expectRejection(response, 401, expectedChallenge("registry:catalog:*", "insufficient_scope"), "GET");
            return;
          case "invalid":
            await expectRejection(response, 401, expectedChallenge(), "GET");
            return;
        }
      });
    });
  }
});

describe("path patterns", () => {
  let user: TestUser;
  let images: Record<string, MatrixImage>;

  beforeAll(async () => {
    images = {};
    for (const path of ["team/app", "team/secret/app", "team/secret", "team/secretive", "team", "other/app"]) {
      images[path] = await seedImage(`docker-local/${path}`);
    }
    user = await createUser("patterns");
    await createPermissionTarget("team", {
      includes: ["team/**"],
      excludes: ["team/secret/**"],
      grants: [{ to: { user }, actions: ["read", "deploy"] }],
    });
  });

  const cases: [string, boolean][] = [
    ["team/app", true],
    ["team", true],
    ["team/secretive", true],
    ["team/secret/app", false],
    ["team/secret", false],
    ["other/app", false],
  ];

  for (const [path, allowed] of cases) {
    it(`${allowed ? "allows" : "denies"} pull of ${path}`, async () => {
      const response = await fetchAs(basicFor(user), `/v2/docker-local/${path}/manifests/v1`);

      if (allowed) {
        expect(response.status).toBe(200);
        expect(await readBytes(response)).toEqual(images[path]!.manifest.bytes);
      } else {
        await expectRegistryError(response, 403, "DENIED");
      }
    });

    it(`${allowed ? "allows" : "denies"} push to ${path}`, async () => {
      const response = await fetchAs(basicFor(user), `/v2/docker-local/${path}/blobs/uploads/`, { method: "POST" });

      if (allowed) expect(response.status).toBe(202);
      else await expectRegistryError(response, 403, "DENIED");
    });
  }

  it("lets another target grant an excluded path", async () => {
    const insider = await createUser("insider");
    await createPermissionTarget("team-insider", {
      includes: ["team/**"],
      excludes: ["team/secret/**"],
      grants: [{ to: { user: insider }, actions: ["read"] }],
    });
    await createPermissionTarget("secret-insider", {
      includes: ["team/secret/**"],
      grants: [{ to: { user: insider }, actions: ["read"] }],
    });

    const response = await fetchAs(basicFor(insider), `/v2/docker-local/team/secret/app/manifests/v1`);

    expect(response.status).toBe(200);
  });

  it("lists only included paths in the catalog", async () => {
    const response = await fetchAs(basicFor(user), "/v2/_catalog");

    const { repositories } = (await response.json()) as { repositories: string[] };
    const seeded = Object.keys(images).map((path) => `docker-local/${path}`);
    expect(repositories.filter((name) => seeded.includes(name)).sort()).toEqual([
      "docker-local/team",
      "docker-local/team/app",
      "docker-local/team/secretive",
    ]);
  });
});

describe("repository selectors", () => {
  let otherRepository: string;
  let imageInOther: string;

  beforeAll(async () => {
    otherRepository = await createRepository("selectors");
    imageInOther = `${otherRepository}/app`;
    await seedImage(imageInOther);
    await seedImage("docker-local/selectors/app");
  });

  const selectorCases: [string, string[], { local: boolean; other: boolean }][] = [
    ["ANY", ["ANY"], { local: true, other: true }],
    ["ANY LOCAL", ["ANY LOCAL"], { local: true, other: true }],
    ["a repository key", ["docker-local"], { local: true, other: false }],
  ];

  for (const [label, repositories, expected] of selectorCases) {
    it(`grants through ${label}`, async () => {
      const user = await createUser("selector");
      await createPermissionTarget("selector", { repositories, grants: [{ to: { user }, actions: ["read"] }] });

      const local = await fetchAs(basicFor(user), "/v2/docker-local/selectors/app/manifests/v1");
      const other = await fetchAs(basicFor(user), `/v2/${imageInOther}/manifests/v1`);

      expect(local.status).toBe(expected.local ? 200 : 403);
      expect(other.status).toBe(expected.other ? 200 : 403);
    });
  }

  it("limits ANY LOCAL to local repositories", async () => {
    const user = await createUser("any-local");
    await createPermissionTarget("any-local", { repositories: ["ANY LOCAL"], grants: [{ to: { user }, actions: ["read"] }] });
    await createPermissionTarget("any", { repositories: ["ANY"], grants: [{ to: { user }, actions: ["deploy"] }] });
    const principal: Principal = {
      kind: "user",
      name: user.name,
      userId: user.id,
      admin: false,
      groups: [],
      tokenScope: null,
      via: "password",
    };

    // The schema allows only local repositories, so a remote one exists only as an argument here.
    const evaluate = await permissionEvaluator(env.DB, principal);
    const local = evaluate({ key: "docker-local", type: "local" }, "app");
    const remote = evaluate({ key: "docker-remote", type: "remote" }, "app");

    expect([...local.keys()].sort()).toEqual(["deploy", "read"]);
    expect([...remote.keys()]).toEqual(["deploy"]);
  });
});
