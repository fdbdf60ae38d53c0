/**
 * Test harness for Edge Registry: starts `wrangler dev` of this project, a
 * private Docker Engine, Debian's reference registry and isolated podman and
 * skopeo clients, each on free 127.0.0.1 ports and in its own temp folder.
 * It logs the clients in to `wrangler dev` as its administrator, creates
 * users, permission targets and access tokens for the permission tests, and
 * remote and virtual repositories whose upstream is the reference registry.
 * The e2e tests and the bench scripts import it; it does not depend on
 * vitest. Relative imports name their .ts files so that Node can run it
 * directly with type stripping (Node 22.18 and later).
 */
export * from "./harness/access-control.ts";
export { DockerEngine } from "./harness/docker-engine.ts";
export * from "./harness/images.ts";
export {
  answersWithStatus,
  CommandError,
  delay,
  freePort,
  makeTempDir,
  removeTempDir,
  respondsToHttp,
  run,
  runOk,
  Service,
  waitUntil,
} from "./harness/process.ts";
export type { RunOptions, RunResult, ServiceOptions } from "./harness/process.ts";
export { Podman } from "./harness/podman.ts";
export { parseAccessLogLine, ReferenceRegistry } from "./harness/reference-registry.ts";
export type { AccessLogEntry, ReferenceRegistryOptions } from "./harness/reference-registry.ts";
export * from "./harness/registry-client.ts";
export * from "./harness/repositories.ts";
export { Skopeo } from "./harness/skopeo.ts";
export type { CopyOptions } from "./harness/skopeo.ts";
export { dockerClientPath, findExecutable, MissingToolError, requireRoot, requireTools, tools } from "./harness/tools.ts";
export type { Tool, ToolName } from "./harness/tools.ts";
export { e2eAdminPassword, projectDir, WranglerDev } from "./harness/wrangler.ts";
export type { ScheduledRun, WranglerDevOptions } from "./harness/wrangler.ts";
