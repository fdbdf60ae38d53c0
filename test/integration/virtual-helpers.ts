import { expect } from "vitest";
import { adminRequest, uniqueName } from "./admin-helpers";
import { registryFetch } from "./helpers";

/** A virtual repository as the admin API returns it. */
export interface VirtualRepository {
  key: string;
  type: string;
  description: string;
  members: string[];
  defaultDeploymentRepository: string | null;
}

/** Creates a virtual repository through the admin API and fails the test unless it returns 201. */
export async function createVirtualRepository(members: string[], defaultDeploymentRepository?: string): Promise<string> {
  const key = uniqueName("virtual");
  const body = { key, type: "virtual", members, ...(defaultDeploymentRepository ? { defaultDeploymentRepository } : {}) };
  const response = await adminRequest("POST", "/api/v1/repositories", body);
  expect(response.status, `creating virtual repository ${key}: ${await response.clone().text()}`).toBe(201);
  return key;
}

/** Returns an image path below a repository key that no other test uses, such as `team-1a2b3c4d/app`. */
export function uniquePath(label = "team"): string {
  return `${label}-${crypto.randomUUID().slice(0, 8)}/app`;
}

/** Returns the URL path and query of a `Link: <...>; rel="next"` header, or null without one. */
export function nextLink(response: Response): string | null {
  const link = response.headers.get("Link");
  if (link === null) return null;
  const match = /^<(?<target>[^>]+)>; rel="next"$/.exec(link);
  expect(match, `Link header ${link}`).not.toBeNull();
  return match!.groups!.target!;
}

/** Follows `rel="next"` links from `path` with the given Authorization header and returns every page's items in order. */
export async function walkPages<T>(path: string, items: (body: T) => string[], authorization?: string): Promise<string[][]> {
  const pages: string[][] = [];
  let next: string | null = path;
  while (next !== null) {
    const response = await registryFetch(next, authorization ? { headers: { Authorization: authorization } } : {});
    expect(response.status, `GET ${next}`).toBe(200);
    pages.push(items((await response.json()) as T));
    next = nextLink(response);
  }
  return pages;
}
