import type { Env } from "../env";
import { log } from "../log";
import { parseImageName } from "../names";
import { findTaggedManifest, getRemoteSettings } from "../storage/metadata";
import { isUpstreamOffline, nowSeconds } from "./cache-state";
import { revalidateTag } from "./revalidate-tag";

/** Seconds between two runs of the Cron Trigger, which wrangler.toml schedules every five minutes. */
export const refreshIntervalSeconds = 300;

/** Tags checked in one run at the most; the oldest checks go first, so the rest wait for the next run. */
export const maxTagsPerRun = 100;

/** Milliseconds after which a run starts no further tag, so that a slow upstream cannot stretch it towards the next run. */
const runBudgetMs = 60_000;

/** A cached tag that the Cron Trigger refreshes. */
interface RefreshCandidate {
  image_name: string;
  tag: string;
}

/** Counts of one run, logged as its summary. */
export interface RefreshSummary {
  candidates: number;
  refreshed: number;
  moved: number;
  failed: number;
  skipped: number;
  budgetExhausted: boolean;
}

/**
 * Refreshes cached tags of remote repositories ahead of their expiry: each
 * tag pulled within its repository's recentPullSeconds whose upstream check
 * would expire before the next run (`checked_at + tagCacheSeconds <= now +
 * 300`), in repositories that are not offline. Each is revalidated with HEAD
 * upstream and moved when it moved upstream. A failing tag is counted and
 * logged, and the run goes on with the next one.
 */
export async function refreshRecentTags(env: Env, nowMs: number = Date.now()): Promise<RefreshSummary> {
  const started = Date.now();
  const now = Math.floor(nowMs / 1000);
  const { results: candidates } = await env.DB.prepare(
    `SELECT i.name AS image_name, rt.tag
       FROM remote_tags rt
       JOIN images i ON i.id = rt.image_id
       JOIN remote_repositories rr ON rr.repository_key = i.repository_key
      WHERE rr.offline = 0
        AND (rr.offline_until IS NULL OR rr.offline_until <= ?1)
        AND (rr.upstream_retry_at IS NULL OR rr.upstream_retry_at <= ?1)
        AND rr.recent_pull_seconds > 0
        AND rt.pulled_at IS NOT NULL AND rt.pulled_at >= ?1 - rr.recent_pull_seconds
        AND rt.checked_at + rr.tag_cache_seconds <= ?1 + ?2
      ORDER BY rt.checked_at, rt.image_id, rt.tag
      LIMIT ?3`,
  )
    .bind(now, refreshIntervalSeconds, maxTagsPerRun)
    .all<RefreshCandidate>();

  const summary: RefreshSummary = { candidates: candidates.length, refreshed: 0, moved: 0, failed: 0, skipped: 0, budgetExhausted: false };
  for (const candidate of candidates) {
    if (Date.now() - started > runBudgetMs) {
      summary.budgetExhausted = true;
      break;
    }
    try {
      const outcome = await refreshTag(env, candidate);
      summary[outcome] += 1;
      if (outcome === "moved") summary.refreshed += 1;
    } catch (error) {
      summary.failed += 1;
      log.error("refreshing a cached tag failed", { repository: candidate.image_name, tag: candidate.tag, error: String(error) });
    }
  }
  return summary;
}

/**
 * Revalidates one candidate. Settings are read again for each tag, so a
 * repository that went offline earlier in the run is skipped.
 */
async function refreshTag(env: Env, candidate: RefreshCandidate): Promise<"refreshed" | "moved" | "failed" | "skipped"> {
  const image = parseImageName(candidate.image_name);
  const settings = await getRemoteSettings(env.DB, image.repositoryKey);
  if (!settings || isUpstreamOffline(settings, nowSeconds())) return "skipped";
  const cached = await findTaggedManifest(env.DB, image.full, candidate.tag);
  if (!cached) return "skipped";

  const result = await revalidateTag(env, image, settings, candidate.tag, cached, "refresh");
  if (result.stale) return "failed";
  return result.manifest.digest === cached.digest ? "refreshed" : "moved";
}

/** The Worker's `scheduled` handler: runs one refresh and logs its summary line. */
export async function runScheduledRefresh(controller: ScheduledController, env: Env): Promise<void> {
  const started = Date.now();
  const summary = await refreshRecentTags(env, controller.scheduledTime);
  log.info("scheduled tag refresh", { cron: controller.cron, ...summary, durationMs: Date.now() - started });
}
