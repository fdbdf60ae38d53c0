import { memberAllows } from "../auth/authorize";
import { findRequestRepository, type AppContext } from "../context";
import { RegistryError, unwrapRpcResult } from "../errors";
import { imageStore } from "../handlers/shared";
import type { ParsedManifest } from "../manifests/schema";
import type { ImageName } from "../names";
import { findLinkedBlob, getVirtualSettings, type BlobRow, type VirtualSettings } from "../storage/metadata";
import { membersAllowing, memberImage } from "./members";
import { findMemberBlob } from "./reads";

/**
 * Returns the image in the default deployment repository that a write to
 * `<virtual key>/<path>` goes to. Throws 405 UNSUPPORTED when the virtual
 * repository has no default deployment repository, and DENIED when the
 * caller may not deploy to that image.
 */
export async function deploymentImage(c: AppContext, virtualImage: ImageName, settings: VirtualSettings): Promise<ImageName> {
  const deploymentKey = settings.defaultDeploymentKey;
  if (deploymentKey === null) {
    const locals = settings.members.filter((member) => member.type === "local").map((member) => member.key);
    const advice =
      locals.length > 0
        ? `push to one of its local members (${locals.join(", ")}) or set defaultDeploymentRepository`
        : "add a local member and set it as defaultDeploymentRepository";
    throw new RegistryError(
      "UNSUPPORTED",
      `virtual repository '${virtualImage.repositoryKey}' has no default deployment repository, so it accepts no pushes; ${advice}`,
      { repository: virtualImage.repositoryKey },
      { Allow: "GET, HEAD" },
    );
  }

  const target = memberImage(deploymentKey, virtualImage);
  if (!(await memberAllows(c, target, "deploy"))) {
    const principal = c.get("principal");
    throw new RegistryError(
      "DENIED",
      `user '${principal.name}' may not deploy to ${target.full}, where pushes to ${virtualImage.full} are stored`,
      { user: principal.name, action: "deploy", name: target.full },
    );
  }
  return target;
}

/**
 * Links to the deployment image each blob of a manifest pushed through a
 * virtual repository that the image lacks but a readable member stores, with
 * the size the manifest declares. A client that found the blob with a HEAD
 * through the virtual name skips its upload, so without the link the manifest
 * would be rejected with MANIFEST_BLOB_UNKNOWN. Nothing is linked unless every
 * missing blob is found with its declared size, so a manifest rejected for a
 * missing blob or a wrong size leaves no links.
 */
export async function linkMemberBlobs(c: AppContext, target: ImageName, manifest: ParsedManifest): Promise<void> {
  const pushThrough = c.get("pushThrough")!;
  const settings = await getVirtualSettings(c.env.DB, pushThrough.virtualKey);
  if (!settings) return;
  const virtualImage = { full: `${pushThrough.virtualKey}/${target.path}`, repositoryKey: pushThrough.virtualKey, path: target.path };
  const members = await membersAllowing(c, virtualImage, settings);
  const sizes = new Map(manifest.blobDescriptors.map((descriptor) => [descriptor.digest, descriptor.size]));

  // NOTE: child manifests of an index are not linked this way, so an index whose children only another member stores is rejected.
  const found: string[] = [];
  for (const digest of new Set(manifest.blobDigests)) {
    if (await findLinkedBlob(c.env.DB, target.full, digest)) continue;
    const blob = await findMemberBlob(c, members, digest);
    if (!blob || (sizes.has(digest) && sizes.get(digest) !== blob.size)) return;
    found.push(digest);
  }
  for (const digest of found) {
    unwrapRpcResult(await imageStore(c.env, target).linkExistingBlob(target.full, target.repositoryKey, digest));
  }
}

/**
 * Finds the blob that a cross-repository mount from `source` would link. A
 * virtual source is searched in the members that the caller may read, in
 * resolution order, and never fetches upstream. The caller has checked
 * `read` on the source name.
 */
export async function findBlobToMount(c: AppContext, source: ImageName, digest: string): Promise<BlobRow | null> {
  const repository = await findRequestRepository(c, source.repositoryKey);
  if (repository?.type !== "virtual") return findLinkedBlob(c.env.DB, source.full, digest);
  const settings = await getVirtualSettings(c.env.DB, source.repositoryKey);
  if (!settings) return null;
  return findMemberBlob(c, await membersAllowing(c, source, settings), digest);
}
