/**
 * Remote and virtual repositories of a running `wrangler dev`, created and
 * changed through the admin API as its administrator.
 */
import { sendAdminJson } from "./access-control.ts";
import { authorizationHeaders } from "./registry-client.ts";
import type { WranglerDev } from "./wrangler.ts";

/** The settings of a remote repository that `POST` and `PATCH /api/v1/repositories` take. */
export interface RemoteSettings {
  /** Base URL of the upstream registry, such as http://127.0.0.1:24817. */
  url?: string;
  username?: string | null;
  /** Password for Basic authentication upstream and at the upstream's token endpoint; write-only. */
  password?: string;
  tagCacheSeconds?: number;
  negativeCacheSeconds?: number;
  /** Tags pulled within this many seconds are refreshed by the Cron Trigger; 0 turns refresh off. */
  recentPullSeconds?: number;
  offline?: boolean;
}

/** The body of `POST /api/v1/repositories` for a virtual repository. */
export interface VirtualRepository {
  key: string;
  /** Keys of the local and remote member repositories, searched in this order. */
  members: string[];
  /** The member that receives pushes to the virtual key. */
  defaultDeploymentRepository?: string;
}

/** A repository as the admin API returns it; fields beyond `key` and `type` depend on the type. */
export interface RepositoryInfo {
  key: string;
  type: string;
  [field: string]: unknown;
}

/** Creates a remote repository and returns the admin API's view of it. Raises unless the status is 201. */
export async function createRemoteRepository(registry: WranglerDev, key: string, settings: RemoteSettings): Promise<RepositoryInfo> {
  const body = { key, type: "remote", ...settings };
  return (await sendAdminJson(registry, "POST", "/api/v1/repositories", registry.adminCredentials, body, 201)) as RepositoryInfo;
}

/** Creates a virtual repository and returns the admin API's view of it. Raises unless the status is 201. */
export async function createVirtualRepository(registry: WranglerDev, repository: VirtualRepository): Promise<RepositoryInfo> {
  const body = { ...repository, type: "virtual" };
  return (await sendAdminJson(registry, "POST", "/api/v1/repositories", registry.adminCredentials, body, 201)) as RepositoryInfo;
}

/** Changes the settings of a remote repository. Raises unless the status is 200. */
export async function updateRemoteRepository(registry: WranglerDev, key: string, patch: RemoteSettings): Promise<RepositoryInfo> {
  const path = `/api/v1/repositories/${key}`;
  return (await sendAdminJson(registry, "PATCH", path, registry.adminCredentials, patch, 200)) as RepositoryInfo;
}

/** Returns a repository with its settings and `imageCount`. Raises unless the status is 200. */
export async function getRepositoryInfo(registry: WranglerDev, key: string): Promise<RepositoryInfo> {
  const response = await fetch(`${registry.url}/api/v1/repositories/${key}`, { headers: authorizationHeaders(registry.adminCredentials) });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`GET /api/v1/repositories/${key} returned ${response.status}, expected 200: ${text}`);
  return JSON.parse(text) as RepositoryInfo;
}
