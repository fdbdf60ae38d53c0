import { Hono } from "hono";
import { repositoryAdmin } from "./admin/repositories";
import { addLogFields, type AppContext, type AppEnv } from "./context";
import { errorBody, RegistryError } from "./errors";
import { log } from "./log";
import { matchRoute } from "./routes";

export const app = new Hono<AppEnv>();

app.use(async (c, next) => {
  const requestId = c.req.header("CF-Ray") ?? crypto.randomUUID();
  c.set("requestId", requestId);
  c.set("logFields", {});
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
    ...c.get("logFields"),
  });
});

app.route("/api/v1/repositories", repositoryAdmin);

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
  return handler(c, match.params);
});

app.notFound((c) => errorResponse(c, new RegistryError("NOT_FOUND", `no endpoint at ${new URL(c.req.url).pathname}`)));

app.onError((error, c) => {
  if (error instanceof RegistryError) return errorResponse(c, error);

  log.error("unhandled error", { requestId: c.get("requestId"), ...c.get("logFields"), error: String(error), stack: error.stack });
  return errorResponse(c, new RegistryError("INTERNAL_ERROR"));
});

function errorResponse(c: AppContext, error: RegistryError): Response {
  addLogFields(c, { errorCode: error.code });
  const headers = new Headers({ "Content-Type": "application/json", ...error.headers });
  headers.set("Docker-Distribution-API-Version", "registry/2.0");
  const body = c.req.method === "HEAD" ? null : errorBody(error.code, error.message, error.detail);
  return new Response(body, { status: error.status, headers });
}
