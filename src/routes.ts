import type { Action } from "./auth/permissions";
import * as token from "./auth/token-endpoint";
import type { AppContext } from "./context";
import * as base from "./handlers/base";
import * as blobs from "./handlers/blobs";
import * as catalog from "./handlers/catalog";
import * as manifests from "./handlers/manifests";
import * as referrers from "./handlers/referrers";
import * as tags from "./handlers/tags";
import * as uploads from "./handlers/uploads";

export type RouteParams = Record<string, string>;
export type Handler = (c: AppContext, params: RouteParams) => Promise<Response> | Response;

export type Method = "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE";

/**
 * The access rule of a route method: a permission on the image named in the
 * path, any valid credentials or registry token, or nothing.
 */
export type Access = Action | "credentials" | "public";

/** One endpoint of the registry API: its path pattern, and a handler and access rule per method. */
export interface Route {
  name: string;
  /** Matched against the raw, undecoded path, so encoded slashes never split a name. */
  pattern: RegExp;
  methods: Partial<Record<Method, Handler>>;
  /** A method without an entry here is denied to everyone, so a forgotten rule fails closed. */
  access: Partial<Record<Method, Access>>;
}

const name = "(?<name>[^?#]+?)";

/**
 * Every endpoint of the Docker Registry HTTP API v2 and the OCI Distribution
 * Specification 1.1. The router, the 405 responses and the route coverage test
 * all read this table. Order matters: the first matching pattern wins.
 */
export const routes: Route[] = [
  {
    name: "base",
    pattern: /^\/v2\/?$/,
    methods: { GET: base.check, HEAD: base.check },
    access: { GET: "credentials", HEAD: "credentials" },
  },
  {
    name: "token",
    pattern: /^\/v2\/token$/,
    methods: { GET: token.getToken, POST: token.postToken },
    access: { GET: "public", POST: "public" },
  },
  {
    name: "catalog",
    pattern: /^\/v2\/_catalog$/,
    methods: { GET: catalog.list, HEAD: catalog.list },
    access: { GET: "credentials", HEAD: "credentials" },
  },
  {
    name: "tags",
    pattern: new RegExp(`^/v2/${name}/tags/list$`),
    methods: { GET: tags.list, HEAD: tags.list },
    access: { GET: "read", HEAD: "read" },
  },
  {
    name: "manifest",
    pattern: new RegExp(`^/v2/${name}/manifests/(?<reference>[^/]+)$`),
    methods: { GET: manifests.get, HEAD: manifests.get, PUT: manifests.put, DELETE: manifests.remove },
    access: { GET: "read", HEAD: "read", PUT: "deploy", DELETE: "delete" },
  },
  {
    name: "upload",
    pattern: new RegExp(`^/v2/${name}/blobs/uploads/(?<uploadId>[^/]+)$`),
    methods: { GET: uploads.status, PATCH: uploads.append, PUT: uploads.commit, DELETE: uploads.cancel },
    access: { GET: "deploy", PATCH: "deploy", PUT: "deploy", DELETE: "deploy" },
  },
  {
    name: "upload-start",
    pattern: new RegExp(`^/v2/${name}/blobs/uploads/?$`),
    methods: { POST: uploads.start },
    access: { POST: "deploy" },
  },
  {
    name: "blob",
    pattern: new RegExp(`^/v2/${name}/blobs/(?<digest>[^/]+)$`),
    methods: { GET: blobs.get, HEAD: blobs.get, DELETE: blobs.remove },
    access: { GET: "read", HEAD: "read", DELETE: "delete" },
  },
  {
    name: "referrers",
    pattern: new RegExp(`^/v2/${name}/referrers/(?<digest>[^/]+)$`),
    methods: { GET: referrers.list, HEAD: referrers.list },
    access: { GET: "read", HEAD: "read" },
  },
];

export type RouteMatch = { route: Route; params: RouteParams };

/** Finds the route whose pattern matches the path, whatever the method. */
export function matchRoute(path: string): RouteMatch | null {
  for (const route of routes) {
    const match = route.pattern.exec(path);
    if (match) return { route, params: { ...match.groups } };
  }
  return null;
}
