import type { Principal } from "../auth/permissions";
import { permissionEvaluator } from "../auth/permissions";
import { getVirtualSettings, listMemberImages, listVirtualKeys } from "../storage/metadata";
import { resolutionOrder } from "./members";

/** Rows read from D1 per round while listing the images of a virtual repository's members. */
const memberBatchSize = 1000;

/**
 * Lists up to `limit` names `<virtual key>/<path>` after `last` in byte
 * order, one for each path that a member of a virtual repository has and the
 * caller may read both through the virtual name and in that member.
 */
export async function readableVirtualImages(db: D1Database, principal: Principal, last: string, limit: number): Promise<string[]> {
  // NOTE: every catalog page reads up to `limit` names of each virtual repository, so its cost grows with their number.
  const evaluate = await permissionEvaluator(db, principal);
  const names: string[] = [];
  for (const virtualKey of await listVirtualKeys(db)) {
    const prefix = `${virtualKey}/`;
    // Every name under the prefix sorts after a `last` below the prefix and before one above it.
    if (last >= prefix && !last.startsWith(prefix)) continue;
    const afterPath = last.startsWith(prefix) ? last.slice(prefix.length) : "";

    const settings = await getVirtualSettings(db, virtualKey);
    const members = new Map(resolutionOrder(settings!).map((member) => [member.key, member]));
    let cursor: { path: string; key: string | null } = { path: afterPath, key: null };
    let found = 0;
    for (;;) {
      const rows = await listMemberImages(db, [...members.keys()], cursor.path, cursor.key, memberBatchSize);
      for (const row of rows) {
        const name = `${prefix}${row.path}`;
        const readable =
          names.at(-1) !== name &&
          evaluate({ key: virtualKey, type: "virtual" }, row.path).has("read") &&
          evaluate(members.get(row.repository_key)!, row.path).has("read");
        if (readable) {
          names.push(name);
          found += 1;
        }
        if (found === limit) break;
      }
      if (found === limit || rows.length < memberBatchSize) break;
      const end = rows[rows.length - 1]!;
      cursor = { path: end.path, key: end.repository_key };
    }
  }
  return names.sort().slice(0, limit);
}
