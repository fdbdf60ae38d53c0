import { memberAllows } from "../auth/authorize";
import { addLogFields, type AppContext } from "../context";
import { RegistryError } from "../errors";
import { blobResponse, upstreamBlobResponse } from "../handlers/blobs";
import { assertReference, decodeReference, findStoredManifest, manifestResponse, manifestUnknown } from "../handlers/manifests";
import { referrersResponse } from "../handlers/referrers";
import { parsePage } from "../handlers/shared";
import { tagsResponse } from "../handlers/tags";
import { log } from "../log";
import { isDigestReference, parseDigestFromPath, type ImageName } from "../names";
import { isUpstreamOffline, nowSeconds } from "../remote/cache-state";
import { fillManifest } from "../remote/fill";
import type { CachedTag } from "../remote/revalidate-tag";
import type { RouteParams } from "../routes";
import {
  findLinkedBlob,
  getRemoteSettings,
  imageExists,
  type BlobRow,
  type RemoteSettingsRow,
  type VirtualSettings,
} from "../storage/metadata";
import { membersAllowing, type MemberImage } from "./members";

/** A read handler for a virtual repository, given the validated virtual image and the repository's settings. */
export type VirtualReadHandler = (c: AppContext, params: RouteParams, image: ImageName, settings: VirtualSettings) => Promise<Response>;

/**
 * `GET` and `HEAD` of a manifest through a virtual repository. A tag resolves
 * in resolution order and the first member that has it wins, a remote member
 * fetching it upstream when it lacks it. A digest is looked up in every
 * member's storage first and fetched upstream only when none stores it.
 */
export const getManifest: VirtualReadHandler = async (c, params, image, settings) => {
  const reference = decodeReference(params.reference ?? "");
  assertReference(reference);
  const members = await membersAllowing(c, image, settings);
  const fetcher = new UpstreamFetcher(c);

  for (const member of members) {
    const stored = await findStoredManifest(c.env, member.image, await fetcher.remoteSettings(member), reference);
    if (stored) return respondFrom(c, member, reference, stored);
    if (isDigestReference(reference)) continue;
    const fetched = await fetcher.fetchManifest(member, reference);
    if (fetched) return respondFrom(c, member, reference, fetched);
  }
  if (isDigestReference(reference)) {
    for (const member of members) {
      const fetched = await fetcher.fetchManifest(member, reference);
      if (fetched) return respondFrom(c, member, reference, fetched);
    }
  }
  throw fetcher.failure ?? manifestUnknown(image.full, reference);
};

/** `GET` and `HEAD` of a blob through a virtual repository: any member's stored blob, else an upstream fetch by a remote member. */
export const getBlob: VirtualReadHandler = async (c, params, image, settings) => {
  const digest = parseDigestFromPath(params.digest ?? "");
  addLogFields(c, { digest });
  const members = await membersAllowing(c, image, settings);

  const stored = await findMemberBlob(c, members, digest);
  if (stored) return blobResponse(c, stored);

  const fetcher = new UpstreamFetcher(c);
  for (const member of members) {
    const fetched = await fetcher.fetchBlob(member, digest);
    if (fetched) {
      addLogFields(c, { member: member.image.full });
      return fetched;
    }
  }
  throw fetcher.failure ?? new RegistryError("BLOB_UNKNOWN", `blob ${digest} is not in repository ${image.full}`, { digest });
};

/**
 * `GET` and `HEAD` of the tag list through a virtual repository: the tags of
 * every readable member that has the image, merged without duplicates. A
 * remote member lists only the tags it has cached.
 */
export const listTags: VirtualReadHandler = async (c, _params, image, settings) => {
  const page = parsePage(c);
  const names: string[] = [];
  for (const { image: member } of await membersAllowing(c, image, settings)) {
    if (await imageExists(c.env.DB, member.full)) names.push(member.full);
  }
  if (names.length === 0) {
    throw new RegistryError("NAME_UNKNOWN", `repository ${image.full} has no content in any member you may read`, { name: image.full });
  }
  return tagsResponse(c, page, image.full, names);
};

/** `GET` and `HEAD` of the referrers of a digest through a virtual repository, merged across the readable members. */
export const listReferrers: VirtualReadHandler = async (c, params, image, settings) => {
  const members = await membersAllowing(c, image, settings);
  return referrersResponse(
    c,
    members.map((member) => member.image.full),
    params.digest ?? "",
  );
};

/** Returns the first blob with `digest` that one of the members stores, in resolution order, or null. */
export async function findMemberBlob(c: AppContext, members: MemberImage[], digest: string): Promise<BlobRow | null> {
  for (const member of members) {
    const blob = await findLinkedBlob(c.env.DB, member.image.full, digest);
    if (blob) {
      addLogFields(c, { member: member.image.full });
      return blob;
    }
  }
  return null;
}

function respondFrom(c: AppContext, member: MemberImage, reference: string, found: CachedTag): Promise<Response> {
  addLogFields(c, { member: member.image.full });
  return manifestResponse(c, reference, found);
}

/**
 * Fetches manifests and blobs upstream through the remote members of a
 * virtual repository. A member whose upstream the caller may not fetch from
 * (no `deploy` on its image) is skipped as if it lacked the item. An upstream
 * failure is logged and kept, so that when no other member has the item the
 * client gets that 503 rather than a 404.
 */
class UpstreamFetcher {
  /** The first upstream failure, if any. */
  failure: RegistryError | null = null;
  readonly #c: AppContext;
  readonly #settings = new Map<string, RemoteSettingsRow | null>();

  constructor(c: AppContext) {
    this.#c = c;
  }

  /** Returns the remote settings of a member, or null for a local member. */
  async remoteSettings(member: MemberImage): Promise<RemoteSettingsRow | null> {
    if (member.member.type !== "remote") return null;
    if (!this.#settings.has(member.member.key)) {
      this.#settings.set(member.member.key, await getRemoteSettings(this.#c.env.DB, member.member.key));
    }
    return this.#settings.get(member.member.key)!;
  }

  async fetchManifest(member: MemberImage, reference: string): Promise<CachedTag | null> {
    const settings = await this.#fetchableSettings(member);
    if (!settings) return null;
    const manifest = await this.#attempt(member, () => fillManifest(this.#c.env, member.image, settings, reference));
    return manifest ? { manifest, stale: false } : null;
  }

  /** Returns the response of a blob that the member fetches upstream (see `upstreamBlobResponse`), or null. */
  async fetchBlob(member: MemberImage, digest: string): Promise<Response | null> {
    const settings = await this.#fetchableSettings(member);
    if (!settings) return null;
    return this.#attempt(member, () => upstreamBlobResponse(this.#c, member.image, settings, digest));
  }

  /** Returns the member's remote settings when the caller may fetch from its upstream, else null. */
  async #fetchableSettings(member: MemberImage): Promise<RemoteSettingsRow | null> {
    const settings = await this.remoteSettings(member);
    if (!settings) return null;
    // An offline member fetches nothing, so it needs no more than read, as for a pull from the remote repository itself.
    if (!isUpstreamOffline(settings, nowSeconds()) && !(await memberAllows(this.#c, member.image, "deploy"))) return null;
    return settings;
  }

  async #attempt<T>(member: MemberImage, fetch: () => Promise<T | null>): Promise<T | null> {
    try {
      return await fetch();
    } catch (error) {
      if (!(error instanceof RegistryError)) throw error;
      log.warn("upstream fetch through a virtual repository failed", {
        requestId: this.#c.get("requestId"),
        member: member.image.full,
        errorCode: error.code,
        error: error.message,
      });
      this.failure ??= error;
      return null;
    }
  }
}
