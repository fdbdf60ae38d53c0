import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it } from "vitest";
import { errorBody, errorCodes, RegistryError, toRpcResult, unwrapRpcResult, type ErrorCode } from "../../src/errors";
import { matchRoute, routes } from "../../src/routes";
import { app } from "../../src/app";
import { actions } from "../../src/auth/permissions";
import { maxFailedLogins } from "../../src/auth/rate-limit";
import { basicFor, createUser, uniqueAddress } from "./auth-fixtures";
import {
  adminPassword,
  anonymousFetch,
  basicAuthorization,
  digestOf,
  expectRegistryError,
  openUpload,
  randomBytes,
  readBytes,
  registryFetch,
  streamOf,
  uniqueImage,
  uploadBlob,
} from "./helpers";
import {
  imageManifest,
  mediaTypes,
  oddlyFormatted,
  pushEmptyConfig,
  pushImage,
  pushImageBlobs,
  putManifestOk,
  utf8,
} from "./manifest-helpers";

type Method = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";
const allMethods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;

/** A request that reaches one route and method, with the status its handler sends on success. */
interface RouteCall {
  path: string;
  init?: RequestInit;
  status: number;
}

/**
 * Builds a request for every route and method in the route table, against
 * state that lets each handler succeed. Each call is built when it runs,
 * because some of them consume what they are given (an upload, a tag).
 */
function routeCalls(
  name: string,
  pushed: { digest: string; bytes: Uint8Array },
): Record<string, Partial<Record<Method, () => Promise<RouteCall>>>> {
  const blobPath = async () => `/v2/${name}/blobs/${await uploadBlob(name, randomBytes(64))}`;
  const uploadPath = async () => (await openUpload(name)).location;

  return {
    base: {
      GET: async () => ({ path: "/v2/", status: 200 }),
      HEAD: async () => ({ path: "/v2/", init: { method: "HEAD" }, status: 200 }),
    },
    token: {
      GET: async () => ({ path: `/v2/token?service=registry.test&scope=repository:${name}:pull`, status: 200 }),
      POST: async () => ({
        path: "/v2/token",
        init: {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ grant_type: "password", username: "admin", password: adminPassword, service: "registry.test" }),
        },
        status: 200,
      }),
    },
    catalog: {
      GET: async () => ({ path: "/v2/_catalog", status: 200 }),
      HEAD: async () => ({ path: "/v2/_catalog", init: { method: "HEAD" }, status: 200 }),
    },
    tags: {
      GET: async () => ({ path: `/v2/${name}/tags/list`, status: 200 }),
      HEAD: async () => ({ path: `/v2/${name}/tags/list`, init: { method: "HEAD" }, status: 200 }),
    },
    manifest: {
      GET: async () => ({ path: `/v2/${name}/manifests/latest`, status: 200 }),
      HEAD: async () => ({ path: `/v2/${name}/manifests/${pushed.digest}`, init: { method: "HEAD" }, status: 200 }),
      PUT: async () => ({
        path: `/v2/${name}/manifests/put-${crypto.randomUUID()}`,
        init: { method: "PUT", headers: { "Content-Type": mediaTypes.ociManifest }, body: pushed.bytes },
        status: 201,
      }),
      DELETE: async () => {
        const tag = `delete-${crypto.randomUUID()}`;
        await putManifestOk(name, tag, pushed.bytes, mediaTypes.ociManifest);
        return { path: `/v2/${name}/manifests/${tag}`, init: { method: "DELETE" }, status: 202 };
      },
    },
    "upload-start": { POST: async () => ({ path: `/v2/${name}/blobs/uploads/`, init: { method: "POST" }, status: 202 }) },
    upload: {
      GET: async () => ({ path: await uploadPath(), status: 204 }),
      PATCH: async () => ({ path: await uploadPath(), init: { method: "PATCH", body: randomBytes(16) }, status: 202 }),
      PUT: async () => {
        const bytes = randomBytes(16);
        return { path: `${await uploadPath()}?digest=${await digestOf(bytes)}`, init: { method: "PUT", body: bytes }, status: 201 };
      },
      DELETE: async () => ({ path: await uploadPath(), init: { method: "DELETE" }, status: 204 }),
    },
    blob: {
      GET: async () => ({ path: await blobPath(), status: 200 }),
      HEAD: async () => ({ path: await blobPath(), init: { method: "HEAD" }, status: 200 }),
      DELETE: async () => ({ path: await blobPath(), init: { method: "DELETE" }, status: 202 }),
    },
    referrers: {
      GET: async () => ({ path: `/v2/${name}/referrers/${pushed.digest}`, status: 200 }),
      HEAD: async () => ({ path: `/v2/${name}/referrers/${pushed.digest}`, init: { method: "HEAD" }, status: 200 }),
    },
  };
}

describe("route table coverage", () => {
  let name: string;
  let calls: ReturnType<typeof routeCalls>;

  beforeAll(async () => {
    name = uniqueImage("routes");
    const pushed = await pushImage(name, "latest");
    calls = routeCalls(name, pushed);
  });

  for (const route of routes) {
    for (const method of Object.keys(route.methods) as Method[]) {
      it(`reaches ${method} ${route.name}`, async () => {
        const build = calls[route.name]?.[method];
        expect(build, `the coverage test has no request for ${method} ${route.name}`).toBeDefined();

        const call = await build!();
        expect(matchRoute(new URL(call.path, "http://registry.test").pathname)?.route.name).toBe(route.name);
        const response = await registryFetch(call.path, { method, ...call.init });

        expect(response.status, await response.clone().text()).toBe(call.status);
        expect(response.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
        await response.arrayBuffer();
      });
    }

    for (const method of allMethods.filter((candidate) => !(candidate in route.methods))) {
      it(`rejects ${method} ${route.name} with 405 and Allow`, async () => {
        const build = Object.values(calls[route.name] ?? {})[0];
        expect(build, `the coverage test has no request for ${route.name}`).toBeDefined();
        const call = await build!();

        const response = await registryFetch(call.path, { method });

        const allowed = Object.keys(route.methods);
        expect(response.headers.get("Allow")?.split(", ").sort()).toEqual([...allowed].sort());
        if (method === "HEAD") {
          expect(response.status).toBe(405);
          expect(response.headers.get("Content-Type")).toBe("application/json");
          return;
        }
        const error = await expectRegistryError(response, 405, "UNSUPPORTED");
        expect(error.message).toContain(method);
      });
    }
  }
});

describe("route access rules", () => {
  const knownAccess: readonly string[] = [...actions, "credentials", "public"];

  for (const route of routes) {
    for (const method of Object.keys(route.methods) as Method[]) {
      it(`has a rule for ${method} ${route.name}`, () => {
        const access = route.access[method];

        expect(access, `${method} ${route.name} has no access rule`).toBeDefined();
        expect(knownAccess).toContain(access);
      });
    }

    it(`has no rule without a handler in ${route.name}`, () => {
      const unhandled = Object.keys(route.access).filter((method) => !(method in route.methods));

      expect(unhandled).toEqual([]);
    });
  }

  it("makes only the token route public", () => {
    const publicRoutes = routes.filter((route) => Object.values(route.access).includes("public")).map((route) => route.name);

    expect(publicRoutes).toEqual(["token"]);
  });

  it("denies a method without a rule", async () => {
    const catalog = routes.find((route) => route.name === "catalog")!;
    const rule = catalog.access.GET;
    delete catalog.access.GET;
    try {
      const response = await registryFetch("/v2/_catalog");

      const error = await expectRegistryError(response, 403, "DENIED");
      expect(error.message).toContain("no access rule");
    } finally {
      catalog.access.GET = rule;
    }
  });
});

describe("base endpoint", () => {
  for (const path of ["/v2/", "/v2"]) {
    it(`serves GET ${path} with the API version header`, async () => {
      const response = await registryFetch(path);

      expect(response.status).toBe(200);
      expect(response.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
      expect(response.headers.get("Content-Type")).toMatch(/^application\/json/);
      expect(await response.json()).toEqual({});
    });
  }

  it("serves HEAD with the API version header", async () => {
    const response = await registryFetch("/v2/", { method: "HEAD" });

    expect(response.status).toBe(200);
    expect(response.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
  });
});

describe("HEAD on list routes", () => {
  let name: string;
  let subject: string;

  beforeAll(async () => {
    name = uniqueImage("head-lists");
    subject = (await pushImage(name, "a")).digest;
    await putManifestOk(name, "b", (await pushImage(name, "c")).bytes, mediaTypes.ociManifest);
    const config = await pushEmptyConfig(name);
    for (const annotation of ["one", "two"]) {
      const referrer = oddlyFormatted(
        imageManifest(config, [config], {
          artifactType: "application/vnd.example.signature.v1",
          subject: { mediaType: mediaTypes.ociManifest, digest: subject, size: 1 },
          annotations: { annotation },
        }),
      );
      await putManifestOk(name, `referrer-${annotation}`, referrer, mediaTypes.ociManifest);
    }
  });

  /** Paths whose first page has one entry and links to the next, so Link is compared too. */
  const paths = () => ({
    catalog: "/v2/_catalog?n=1",
    tags: `/v2/${name}/tags/list?n=1`,
    referrers: `/v2/${name}/referrers/${subject}?n=1`,
  });

  for (const route of ["catalog", "tags", "referrers"] as const) {
    it(`serves HEAD ${route} like GET without a body`, async () => {
      const path = paths()[route];
      const get = await registryFetch(path);
      const getBody = await readBytes(get);

      const head = await registryFetch(path, { method: "HEAD" });

      expect(head.status).toBe(get.status);
      expect(head.status).toBe(200);
      expect(get.headers.get("Link")).not.toBeNull();
      expect(get.headers.get("Content-Length")).toBe(String(getBody.byteLength));
      const withoutRequestId = (response: Response) => [...response.headers].filter(([header]) => header !== "x-request-id");
      expect(withoutRequestId(head)).toEqual(withoutRequestId(get));
      expect((await readBytes(head)).byteLength).toBe(0);
    });
  }

  it("sends the HEAD error status without a body", async () => {
    const response = await registryFetch("/v2/docker-local/never-pushed/tags/list", { method: "HEAD" });

    expect(response.status).toBe(404);
    expect((await readBytes(response)).byteLength).toBe(0);
  });
});

describe("unknown routes", () => {
  const unknownPaths = [
    "/",
    "/favicon.ico",
    "/v1/",
    "/v3/",
    "/v2/docker-local/app",
    "/v2/docker-local/app/manifests/",
    "/v2/docker-local/app/manifests/latest/extra",
    "/v2/docker-local/app/blobs/",
    "/v2/docker-local/app/tags",
    "/v2/docker-local/app/tags/list/extra",
    "/v2/docker-local/app/referrers/",
    "/v2/docker-local/app/unknown/thing",
    "/v2/_catalog/extra",
    "/api/v1/unknown",
    "/api/v1/repositories/docker-local/extra",
  ];

  for (const path of unknownPaths) {
    for (const method of ["GET", "PUT"] as const) {
      it(`rejects ${method} ${path} with 404 JSON`, async () => {
        const response = await registryFetch(path, { method, body: method === "PUT" ? "{}" : undefined });

        const error = await expectRegistryError(response, 404, "NOT_FOUND");
        expect(error.message).toContain(new URL(path, "http://registry.test").pathname);
        expect(response.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
      });
    }
  }
});

describe("admin routes with a wrong method", () => {
  const cases: [string, string, string[]][] = [
    ["/api/v1/repositories", "PUT", ["GET", "HEAD", "POST"]],
    ["/api/v1/repositories", "DELETE", ["GET", "HEAD", "POST"]],
    ["/api/v1/repositories/docker-local", "PUT", ["DELETE", "GET", "HEAD", "PATCH"]],
    ["/api/v1/repositories/docker-local", "POST", ["DELETE", "GET", "HEAD", "PATCH"]],
  ];

  for (const [path, method, allowed] of cases) {
    it(`rejects ${method} ${path} with 405 and Allow`, async () => {
      const response = await registryFetch(path, { method, headers: { "Content-Type": "application/json" }, body: "{}" });

      await expectRegistryError(response, 405, "UNSUPPORTED");
      expect(response.headers.get("Allow")?.split(", ").sort()).toEqual(allowed);
    });
  }

  for (const path of ["/api/v1/repositories", "/api/v1/repositories/docker-local"]) {
    it(`serves HEAD ${path} like GET without a body`, async () => {
      const response = await registryFetch(path, { method: "HEAD" });

      expect(response.status).toBe(200);
      expect((await response.arrayBuffer()).byteLength).toBe(0);
    });
  }
});

describe("registered error codes", () => {
  const unreachable: Partial<Record<ErrorCode, string>> = {
    BLOB_UPLOAD_INVALID:
      "only a request body that fails mid-stream causes it, and inside the test runtime such a body reaches the session as a clean end",
  };

  /** A request that makes the registry send each reachable code, and the status the specification gives it. */
  const triggers: Partial<Record<ErrorCode, { status: number; request: () => Promise<Response> }>> = {
    BLOB_UNKNOWN: { status: 404, request: async () => registryFetch(`/v2/${await imageName()}/blobs/${await digestOf(utf8("absent"))}`) },
    BLOB_UPLOAD_UNKNOWN: {
      status: 404,
      request: async () => registryFetch(`/v2/${await imageName()}/blobs/uploads/${crypto.randomUUID()}`),
    },
    DIGEST_INVALID: { status: 400, request: async () => registryFetch(`/v2/${await imageName()}/manifests/sha256:${"A".repeat(64)}`) },
    MANIFEST_BLOB_UNKNOWN: {
      status: 400,
      request: async () => {
        const name = uniqueImage("errors");
        const { config } = await pushImageBlobs(uniqueImage("errors-other"));
        return registryFetch(`/v2/${name}/manifests/v1`, {
          method: "PUT",
          headers: { "Content-Type": mediaTypes.ociManifest },
          body: oddlyFormatted(imageManifest(config, [])),
        });
      },
    },
    MANIFEST_INVALID: {
      status: 400,
      request: async () =>
        registryFetch(`/v2/${await imageName()}/manifests/v1`, {
          method: "PUT",
          headers: { "Content-Type": mediaTypes.ociManifest },
          body: "{",
        }),
    },
    MANIFEST_UNKNOWN: { status: 404, request: async () => registryFetch(`/v2/${await imageName()}/manifests/missing`) },
    NAME_INVALID: { status: 400, request: async () => registryFetch("/v2/Docker-Local/app/tags/list") },
    NAME_UNKNOWN: { status: 404, request: async () => registryFetch("/v2/no-such-repository/app/tags/list") },
    SIZE_INVALID: {
      status: 400,
      request: async () => {
        // A Content-Range of 16 bytes with a streamed body of 8 and no Content-Length.
        const { location } = await openUpload(await imageName());
        return registryFetch(location, { method: "PATCH", headers: { "Content-Range": "0-15" }, body: streamOf(randomBytes(8)) });
      },
    },
    TAG_INVALID: { status: 400, request: async () => registryFetch(`/v2/${await imageName()}/manifests/.hidden`) },
    RANGE_INVALID: {
      status: 416,
      request: async () => {
        const name = await imageName();
        const digest = await uploadBlob(name, randomBytes(10));
        return registryFetch(`/v2/${name}/blobs/${digest}`, { headers: { Range: "bytes=100-" } });
      },
    },
    PAGINATION_NUMBER_INVALID: { status: 400, request: async () => registryFetch("/v2/_catalog?n=-1") },
    MANIFEST_TOO_LARGE: {
      status: 413,
      request: async () =>
        registryFetch(`/v2/${await imageName()}/manifests/v1`, {
          method: "PUT",
          headers: { "Content-Type": mediaTypes.ociManifest },
          body: new Uint8Array(4 * 1024 * 1024 + 1).fill(0x20),
        }),
    },
    UNAUTHORIZED: { status: 401, request: async () => anonymousFetch(`/v2/${await imageName()}/tags/list`) },
    DENIED: {
      status: 403,
      request: async () => {
        const user = await createUser("no-grants");
        return registryFetch(`/v2/${await imageName()}/tags/list`, { headers: { Authorization: basicFor(user) } });
      },
    },
    TOOMANYREQUESTS: {
      status: 429,
      request: async () => {
        const address = uniqueAddress();
        const wrong = { headers: { Authorization: basicAuthorization("nobody", "wrong"), "CF-Connecting-IP": address } };
        for (let attempt = 0; attempt < maxFailedLogins; attempt += 1) await registryFetch("/v2/", wrong);
        return registryFetch("/v2/", wrong);
      },
    },
    UNAVAILABLE: {
      status: 503,
      request: async () => {
        // The same Worker with the TOKEN_SIGNING_KEY secret unset.
        const unsigned = { ...env, TOKEN_SIGNING_KEY: undefined };
        return app.fetch(new Request("http://registry.test/v2/token?service=registry.test"), unsigned);
      },
    },
    UNSUPPORTED: { status: 405, request: async () => registryFetch("/v2/_catalog", { method: "POST" }) },
    NOT_FOUND: { status: 404, request: async () => registryFetch("/v2/docker-local/app/unknown/thing") },
    INVALID_REQUEST: {
      status: 400,
      request: async () =>
        registryFetch("/api/v1/repositories", { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" }),
    },
    CONFLICT: {
      status: 409,
      request: async () =>
        registryFetch("/api/v1/repositories", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ key: "docker-local", type: "local" }),
        }),
    },
    INTERNAL_ERROR: {
      status: 500,
      request: async () => {
        // A manifest whose bytes vanished from R2 is a fault of the registry, not of the client.
        const name = uniqueImage("errors");
        const pushed = await pushImage(name, "latest");
        await env.BLOBS.delete(`manifests/sha256/${pushed.digest.slice("sha256:".length)}`);
        return registryFetch(`/v2/${name}/manifests/latest`);
      },
    },
  };

  let image: string | null = null;
  async function imageName(): Promise<string> {
    if (image === null) {
      image = uniqueImage("errors");
      await pushImage(image, "latest");
    }
    return image;
  }

  it("has a trigger or a reason for every code", () => {
    const covered = [...Object.keys(triggers), ...Object.keys(unreachable)].sort();

    expect(covered).toEqual(Object.keys(errorCodes).sort());
    expect(Object.keys(triggers).filter((code) => code in unreachable)).toEqual([]);
  });

  for (const code of Object.keys(errorCodes) as ErrorCode[]) {
    const trigger = triggers[code];
    if (trigger) {
      it(`sends ${code} as a JSON error with status ${trigger.status}`, async () => {
        expect(errorCodes[code].status).toBe(trigger.status);

        const response = await trigger.request();

        const error = await expectRegistryError(response, trigger.status, code);
        expect(response.headers.get("Docker-Distribution-API-Version")).toBe("registry/2.0");
        if (code === "INTERNAL_ERROR") {
          expect(error.message).toBe(errorCodes.INTERNAL_ERROR.message);
          expect(error.detail).toBeNull();
        }
      });
      continue;
    }

    it(`keeps ${code} and its status across a Durable Object call`, async () => {
      const result = await toRpcResult(async () => {
        throw new RegistryError(code, undefined, { reason: unreachable[code] });
      });
      const crossed = structuredClone(result);

      let revived: unknown;
      try {
        unwrapRpcResult(crossed);
      } catch (error) {
        revived = error;
      }
      expect(revived).toBeInstanceOf(RegistryError);
      expect((revived as RegistryError).code).toBe(code);
      expect((revived as RegistryError).status).toBe(errorCodes[code].status);
      expect((revived as RegistryError).detail).toEqual({ reason: unreachable[code] });
      expect(JSON.parse(errorBody(code, errorCodes[code].message, null))).toEqual({
        errors: [{ code, message: errorCodes[code].message, detail: null }],
      });
    });
  }
});
