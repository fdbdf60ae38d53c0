import { inject } from "vitest";
import { expect } from "vitest";
import type { UpstreamBehaviour } from "../upstream-registry/types";
import { adminRequest, uniqueName } from "./admin-helpers";

/** The test upstream registry that the vitest global setup started on 127.0.0.1. */
export const upstream = inject("upstreamRegistry");

/** Creates a remote repository of the test upstream registry and fails the test unless it returns 201. */
export async function createRemoteRepository(fields: Record<string, unknown> = {}): Promise<string> {
  const key = uniqueName("remote");
  const response = await adminRequest("POST", "/api/v1/repositories", { key, type: "remote", url: upstream.url, ...fields });
  expect(response.status, `creating remote repository ${key}: ${await response.clone().text()}`).toBe(201);
  return key;
}

/** Returns an upstream image path that no other test uses; `prefix` selects the upstream's behaviour, such as `private-`. */
export function uniqueUpstreamPath(prefix = ""): string {
  return `${prefix}${crypto.randomUUID().slice(0, 8)}/app`;
}

/** Reads how many requests the upstream has served per path under `/v2/<path>/`, such as `{"<path>/manifests/latest": 1}`. */
export async function upstreamCounts(path: string): Promise<Record<string, number>> {
  const response = await fetch(`${upstream.url}/_counts/${path}/`);
  expect(response.status).toBe(200);
  return (await response.json()) as Record<string, number>;
}

/** Reads how many tokens the upstream token endpoint has issued for pulling `path`. */
export async function upstreamTokenCount(path: string): Promise<number> {
  const response = await fetch(`${upstream.url}/_counts/token:repository:${path}:pull`);
  expect(response.status).toBe(200);
  const counts = (await response.json()) as Record<string, number>;
  return counts[`token:repository:${path}:pull`] ?? 0;
}

/** Changes how the test upstream responds for one image path from now on. */
export async function setUpstreamBehaviour(path: string, behaviour: UpstreamBehaviour): Promise<void> {
  const response = await fetch(`${upstream.url}/_behaviour/${path}`, { method: "POST", body: JSON.stringify(behaviour) });
  expect(response.status).toBe(200);
}

/** Releases the upstream responses that `hold` or `stallAfterBytes` keeps waiting for the path, and ends both behaviours. */
export async function resumeUpstream(path: string): Promise<void> {
  const response = await fetch(`${upstream.url}/_resume/${path}`, { method: "POST" });
  expect(response.status).toBe(200);
  await response.arrayBuffer();
}

/** Adds a blob of `content` that every upstream path serves, and returns its digest. */
export async function addUpstreamBlob(content: string): Promise<string> {
  const response = await fetch(`${upstream.url}/_blobs`, { method: "POST", body: content });
  expect(response.status).toBe(200);
  return ((await response.json()) as { digest: string }).digest;
}
