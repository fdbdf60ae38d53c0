/**
 * A minimal client of the OCI Distribution API over plain http, for setting
 * up content and checking results without a container tool in between.
 * Each function sends Basic credentials when it gets them, and no
 * Authorization header otherwise.
 */
import { allContent, manifestMediaTypes, type Content, type GeneratedIndex } from "./images.ts";

/** A user name with a password or an access token, as clients send them in Basic authentication. */
export interface Credentials {
  username: string;
  password: string;
}

/** Returns the value of an Authorization header with Basic credentials. */
export function basicAuthorization(credentials: Credentials): string {
  return `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;
}

/** Returns the headers that carry `credentials`, or no headers for an anonymous request. */
export function authorizationHeaders(credentials?: Credentials): Record<string, string> {
  return credentials ? { Authorization: basicAuthorization(credentials) } : {};
}

/** Uploads a blob with a POST that opens a session and one PUT that carries the bytes and the digest. */
export async function pushBlob(baseUrl: string, name: string, blob: Content, credentials?: Credentials): Promise<void> {
  const opened = await fetch(`${baseUrl}/v2/${name}/blobs/uploads/`, { method: "POST", headers: authorizationHeaders(credentials) });
  await expectStatus(opened, 202, `POST ${name}/blobs/uploads/`);
  await opened.body?.cancel();
  const location = opened.headers.get("Location");
  if (!location) throw new Error(`POST ${baseUrl}/v2/${name}/blobs/uploads/ returned 202 without a Location header`);

  const uploadUrl = new URL(location, baseUrl);
  uploadUrl.searchParams.set("digest", blob.digest);
  const committed = await fetch(uploadUrl, {
    method: "PUT",
    headers: { "Content-Type": "application/octet-stream", ...authorizationHeaders(credentials) },
    body: blob.bytes,
  });
  await expectStatus(committed, 201, `PUT blob ${blob.digest} to ${name}`);
  await committed.body?.cancel();
}

/** Stores a manifest under a tag or its digest. Returns the Docker-Content-Digest header. */
export async function pushManifest(
  baseUrl: string,
  name: string,
  reference: string,
  manifest: Content,
  credentials?: Credentials,
): Promise<string | null> {
  const response = await fetch(`${baseUrl}/v2/${name}/manifests/${reference}`, {
    method: "PUT",
    headers: { "Content-Type": manifest.mediaType, ...authorizationHeaders(credentials) },
    body: manifest.bytes,
  });
  await expectStatus(response, 201, `PUT manifest ${name}:${reference}`);
  await response.body?.cancel();
  return response.headers.get("Docker-Content-Digest");
}

/** Uploads every blob of the index, its image manifests by digest, then the index under `tag`. */
export async function pushIndex(
  baseUrl: string,
  name: string,
  tag: string,
  generated: GeneratedIndex,
  credentials?: Credentials,
): Promise<void> {
  for (const item of allContent(generated)) {
    if (item === generated.index) continue;
    if (manifestMediaTypes.includes(item.mediaType)) await pushManifest(baseUrl, name, item.digest, item, credentials);
    else await pushBlob(baseUrl, name, item, credentials);
  }
  await pushManifest(baseUrl, name, tag, generated.index, credentials);
}

export interface FetchedManifest {
  status: number;
  contentType: string | null;
  digestHeader: string | null;
  /** The Warning header, which a remote repository sets on a stale cached manifest. */
  warning: string | null;
  bytes: Buffer;
}

/** `GET /v2/<name>/manifests/<reference>` accepting every manifest media type. */
export async function fetchManifest(baseUrl: string, name: string, reference: string, credentials?: Credentials): Promise<FetchedManifest> {
  const response = await fetch(`${baseUrl}/v2/${name}/manifests/${reference}`, {
    headers: { Accept: manifestMediaTypes.join(", "), ...authorizationHeaders(credentials) },
  });
  return {
    status: response.status,
    contentType: response.headers.get("Content-Type"),
    digestHeader: response.headers.get("Docker-Content-Digest"),
    warning: response.headers.get("Warning"),
    bytes: Buffer.from(await response.arrayBuffer()),
  };
}

/** Returns the tags of an image from `GET /v2/<name>/tags/list`. */
export async function listTags(baseUrl: string, name: string, credentials?: Credentials): Promise<string[]> {
  const response = await fetch(`${baseUrl}/v2/${name}/tags/list`, { headers: authorizationHeaders(credentials) });
  await expectStatus(response, 200, `GET ${name}/tags/list`);
  const body = (await response.json()) as { tags: string[] | null };
  return body.tags ?? [];
}

/** Returns the image names from `GET /v2/_catalog`. */
export async function listCatalog(baseUrl: string, credentials?: Credentials): Promise<string[]> {
  const response = await fetch(`${baseUrl}/v2/_catalog`, { headers: authorizationHeaders(credentials) });
  await expectStatus(response, 200, "GET _catalog");
  const body = (await response.json()) as { repositories: string[] | null };
  return body.repositories ?? [];
}

/** Raises with the response body unless the status is `expected`; on success the body is left unread. */
async function expectStatus(response: Response, expected: number, request: string): Promise<void> {
  if (response.status === expected) return;
  const body = await response.text().catch((error: unknown) => `(body unreadable: ${String(error)})`);
  throw new Error(`${request} returned ${response.status}, expected ${expected}: ${body.slice(0, 2_000)}`);
}
