import { app } from "./app";
import type { Env } from "./env";
import { runScheduledRefresh } from "./remote/refresh";

export { ImageStore } from "../durable-objects/image-store";
export { UploadSession } from "../durable-objects/upload-session";
export { UpstreamFill } from "../durable-objects/upstream-fill";

/** The Worker: the Hono app serves HTTP, and the Cron Trigger refreshes recently pulled tags of remote repositories. */
export default {
  fetch: app.fetch,
  scheduled: (controller, env) => runScheduledRefresh(controller, env),
} satisfies ExportedHandler<Env>;
