import { permissionEvaluator, type Action } from "../auth/permissions";
import type { AppContext } from "../context";
import type { ImageName } from "../names";
import type { VirtualMemberRow, VirtualSettings } from "../storage/metadata";

/** A member repository of a virtual repository, with the image that a request through the virtual name addresses in it. */
export interface MemberImage {
  member: VirtualMemberRow;
  image: ImageName;
}

/** Returns the image `<member key>/<path>` that `<virtual key>/<path>` addresses in a member. */
export function memberImage(memberKey: string, virtualImage: ImageName): ImageName {
  return { full: `${memberKey}/${virtualImage.path}`, repositoryKey: memberKey, path: virtualImage.path };
}

/**
 * Returns the members in resolution order, local repositories first and then
 * remote ones, each group in configured order.
 */
export function resolutionOrder(settings: VirtualSettings): VirtualMemberRow[] {
  const locals = settings.members.filter((member) => member.type === "local");
  const remotes = settings.members.filter((member) => member.type === "remote");
  return [...locals, ...remotes];
}

/**
 * Returns the members, in resolution order, whose image at the virtual
 * image's path the caller may perform `action` on. The others are left out
 * as if they did not exist, so a response never shows their content.
 */
export async function membersAllowing(
  c: AppContext,
  virtualImage: ImageName,
  settings: VirtualSettings,
  action: Action = "read",
): Promise<MemberImage[]> {
  // The same check as `memberAllows`, with the caller's grants loaded once for all members.
  const evaluate = await permissionEvaluator(c.env.DB, c.get("principal"));
  const allowed: MemberImage[] = [];
  for (const member of resolutionOrder(settings)) {
    if (!evaluate(member, virtualImage.path).has(action)) continue;
    allowed.push({ member, image: memberImage(member.key, virtualImage) });
  }
  return allowed;
}
