import type { TestProject } from "vitest/node";
import { UpstreamRegistry } from "./server.ts";

/**
 * Vitest global setup: starts the test upstream registry on 127.0.0.1 for
 * the whole run and provides its URL and image as `upstreamRegistry`.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const registry = await UpstreamRegistry.start();
  project.provide("upstreamRegistry", registry.info);
  return () => registry.stop();
}
