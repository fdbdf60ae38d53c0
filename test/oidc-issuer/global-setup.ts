import type { TestProject } from "vitest/node";
import { TestIssuer } from "./server.ts";

/**
 * Vitest global setup: starts the test OpenID Connect issuer on 127.0.0.1
 * for the whole run and provides its URLs and keys as `oidcIssuer`.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const issuer = await TestIssuer.start();
  project.provide("oidcIssuer", issuer.info);
  return () => issuer.stop();
}
