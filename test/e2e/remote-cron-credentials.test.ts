import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UpstreamRegistry } from "../upstream-registry/server.ts";
import type { UpstreamBehaviour } from "../upstream-registry/types.ts";
import { authorizationHeaders, requireTools, WranglerDev } from "./harness.ts";
import { printLogsOnFailure } from "./failure-logs.ts";

let registry: WranglerDev | undefined;
let upstream: UpstreamRegistry | undefined;

beforeAll(async () => {
  requireTools("npx");
  upstream = await UpstreamRegistry.start();
  registry = await WranglerDev.start({ testScheduled: true });
});

afterAll(async () => {
  await registry?.dispose();
  await upstream?.stop();
});

printLogsOnFailure(() => ({ "wrangler dev": registry }));

/** Sends a request to `wrangler dev` as its administrator. */
function registryFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const headers = { ...authorizationHeaders(registry!.adminCredentials), "Content-Type": "application/json", ...init.headers };
  return fetch(`${registry!.url}${path}`, { ...init, headers });
}

async function setBehaviour(path: string, behaviour: UpstreamBehaviour): Promise<void> {
  const response = await fetch(`${upstream!.info.url}/_behaviour/${path}`, { method: "POST", body: JSON.stringify(behaviour) });
  expect(response.status).toBe(200);
}

async function upstreamCounts(path: string): Promise<Record<string, number>> {
  const response = await fetch(`${upstream!.info.url}/_counts/${path}/`);
  return (await response.json()) as Record<string, number>;
}

describe("Cron Trigger under wrangler dev", () => {
  it("refreshes a pulled tag with credentials", async () => {
    const info = upstream!.info;
    const key = "hub-refresh";
    const path = "login-refresh/app";
    const created = await registryFetch("/api/v1/repositories", {
      method: "POST",
      body: JSON.stringify({ key, type: "remote", url: info.url, username: info.username, password: info.password, tagCacheSeconds: 0 }),
    });
    expect(created.status, await created.clone().text()).toBe(201);
    const first = await registryFetch(`/v2/${key}/${path}/manifests/latest`);
    expect(first.status).toBe(200);
    expect(await first.text()).toBe(info.manifest);
    await setBehaviour(path, { moved: true });

    const scheduled = await fetch(`${registry!.url}/__scheduled?cron=*/5+*+*+*+*`);
    await scheduled.arrayBuffer();
    const countsAfterRun = await upstreamCounts(path);
    await setBehaviour(path, { moved: true, down: true });
    const after = await registryFetch(`/v2/${key}/${path}/manifests/latest`);

    expect(scheduled.status).toBe(200);
    expect(countsAfterRun[`HEAD ${path}/manifests/latest`]).toBe(1);
    expect(after.status).toBe(200);
    expect(after.headers.get("Docker-Content-Digest")).toBe(info.movedManifestDigest);
    expect(after.headers.get("Warning")).toBe('110 - "Response is stale"');
  });
});
