import { Hono } from "hono";
import { accessTokenAdmin } from "./admin/access-tokens";
import { auditLogAdmin } from "./admin/audit-log";
import { groupAdmin } from "./admin/groups";
import { oidcIssuerAdmin } from "./admin/oidc-issuers";
import { permissionTargetAdmin } from "./admin/permission-targets";
import { repositoryAdmin } from "./admin/repositories";
import { userAdmin } from "./admin/users";
import { addLogFields, findRequestRepository, type AppContext, type AppEnv } from "./context";
import { errorBody, RegistryError } from "./errors";
import { log } from "./log";
import { challengeHeader, requireAction, requireCredentials } from "./auth/authorize";
import { ensureAdministrator } from "./auth/bootstrap";
import { authenticate } from "./auth/credentials";
import { anonymousPrincipal } from "./auth/permissions";
import { parseImageName, type ImageName } from "./names";
import { matchRoute, type Method } from "./routes";
import { dispatchVirtual } from "./virtual/dispatch";

export const app = new Hono<AppEnv>();

app.use(async (c, next) => {
  const requestId = c.req.header("CF-Ray") ?? crypto.randomUUID();
  c.set("requestId", requestId);
  c.set("logFields", {});
  c.set("principal", anonymousPrincipal);
  c.set("tokenAccess", null);
  c.set("pushThrough", null);
  c.set("repositories", new Map());
  const started = Date.now();
  await next();

  c.res.headers.set("Docker-Distribution-API-Version", "registry/2.0");
  c.res.headers.set("X-Request-Id", requestId);
  const url = new URL(c.req.url);
  log.info("request", {
    requestId,
    method: c.req.method,
    path: url.pathname,
    status: c.res.status,
    durationMs: Date.now() - started,
    user: c.get("principal").name,
    ...c.get("logFields"),
  });
});

// Until an administrator exists, the registry serves no writes, because no
// user could be granted the right to make them.
app.use(async (c, next) => {
  if ((await ensureAdministrator(c.env)) || c.req.method === "GET" || c.req.method === "HEAD") return next();
  throw new RegistryError("UNAVAILABLE", "the registry has no administrator yet: set the ADMIN_PASSWORD secret and retry");
});

app.route("/api/v1/repositories", repositoryAdmin);
app.route("/api/v1/tokens", accessTokenAdmin);
app.route("/api/v1/oidc/issuers", oidcIssuerAdmin);
app.route("/api/v1/users", userAdmin);
app.route("/api/v1/groups", groupAdmin);
app.route("/api/v1/permissions", permissionTargetAdmin);
app.route("/api/v1/audit", auditLogAdmin);

app.all("/v2/*", async (c) => {
  const path = new URL(c.req.url).pathname;
  const match = matchRoute(path);
  if (!match) throw new RegistryError("NOT_FOUND", `no registry endpoint at ${path}`);

  const handler = match.route.methods[c.req.method as keyof typeof match.route.methods];
  if (!handler) {
    const allowed = Object.keys(match.route.methods).join(", ");
    throw new RegistryError("UNSUPPORTED", `method ${c.req.method} is not allowed on this endpoint; allowed: ${allowed}`, null, {
      Allow: allowed,
    });
  }
  addLogFields(c, { route: match.route.name });

  const access = match.route.access[c.req.method as Method];
  if (access !== "public") {
    const { principal, tokenAccess } = await authenticate(c);
    c.set("principal", principal);
    c.set("tokenAccess", tokenAccess);
  }
  if (access === undefined) throw new RegistryError("DENIED", "no access rule is defined for this endpoint");
  if (access === "credentials") requireCredentials(c);
  else if (access !== "public") await requireAction(c, parseImageName(match.params.name ?? ""), access);
  if (match.params.name === undefined) return handler(c, match.params);

  const image = parseImageName(match.params.name);
  const repository = await findRequestRepository(c, image.repositoryKey);
  if (repository?.type === "virtual") return dispatchVirtual(c, match.route, match.params, image);
  if (repository?.type === "remote" && c.req.method !== "GET" && c.req.method !== "HEAD") rejectWriteToRemote(image, c.req.method);
  return handler(c, match.params);
});

app.notFound((c) => errorResponse(c, new RegistryError("NOT_FOUND", `no endpoint at ${new URL(c.req.url).pathname}`)));

app.onError((error, c) => {
  if (error instanceof RegistryError) return errorResponse(c, error);

  log.error("unhandled error", { requestId: c.get("requestId"), ...c.get("logFields"), error: String(error), stack: error.stack });
  return errorResponse(c, new RegistryError("INTERNAL_ERROR"));
});

/** Throws 405 UNSUPPORTED for a push, upload or delete in a remote repository, whose content only its upstream changes. */
function rejectWriteToRemote(image: ImageName, method: string): never {
  const advice = method === "DELETE" ? "its content changes only upstream" : "push to a local repository instead";
  throw new RegistryError(
    "UNSUPPORTED",
    `repository '${image.repositoryKey}' is a remote repository, a read-only cache of another registry; ${advice}`,
    { repository: image.repositoryKey },
    { Allow: "GET, HEAD" },
  );
}

function errorResponse(c: AppContext, error: RegistryError): Response {
  addLogFields(c, { errorCode: error.code });
  const headers = new Headers({ "Content-Type": "application/json", ...error.headers });
  headers.set("Docker-Distribution-API-Version", "registry/2.0");
  // Every 401 names the token endpoint, so clients know where to get a token.
  if (error.code === "UNAUTHORIZED" && !headers.has("WWW-Authenticate")) headers.set("WWW-Authenticate", challengeHeader(c));
  const body = c.req.method === "HEAD" ? null : errorBody(error.code, error.message, error.detail);
  return new Response(body, { status: error.status, headers });
}
