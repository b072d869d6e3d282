// Prune: plan which versions a retention policy removes, remove them, and record the result for status.

import { errorMessage, InterruptedError, LockedError, LockLostError, NotFoundError } from "../errors";
import { itemId, itemLabel, matches, unmatchedNames, type ItemKey, type Selection } from "../core/selection";
import { checkRepository, takeLock, type LockWait } from "./locking";
import { planRetention, type ItemRetention, type RetentionPolicy } from "../core/retention";
import type { Store, StoredVersion } from "../repository/store";
import type { Reporter } from "./reporter";

/** One version as prune sees it. */
export interface PruneCandidate {
  key: ItemKey;
  version: string;
  entry: StoredVersion;
}

export interface PrunePlan {
  policy: RetentionPolicy;
  tz: string;
  items: ItemRetention<PruneCandidate>[];
  /** Damaged versions are neither counted nor removed: `verify` reports them. */
  damaged: number;
}

/** Lists the repository and applies the policy to every selected item. Reads only. */
export async function planPrune(store: Store, selection: Selection, policy: RetentionPolicy, tz: string): Promise<PrunePlan> {
  const listing = await store.list(selection.kinds);
  // The policy applies to whole items: with --member, to every version of an instance that has
  // one backed up on that member (an instance moves between members, its versions stay one item).
  const picked = new Set(listing.versions.filter((v) => matches(selection, v.manifest)).map((v) => itemId(v.manifest)));
  const candidates = listing.versions
    .filter((v) => picked.has(itemId(v.manifest)))
    .map((v): PruneCandidate => ({ key: v.manifest, version: v.manifest.version, entry: v }));
  return {
    policy,
    tz,
    items: planRetention(candidates, policy, tz),
    damaged: listing.damaged.filter((d) => matches(selection, d.key)).length,
  };
}

export function planCounts(plan: PrunePlan): { keep: number; remove: number; removeBytes: number } {
  let keep = 0;
  let remove = 0;
  let removeBytes = 0;
  for (const item of plan.items) {
    for (const d of item.decisions) {
      if (d.keep) keep++;
      else {
        remove++;
        removeBytes += d.entry.entry.size;
      }
    }
  }
  return { keep, remove, removeBytes };
}

export interface PruneResult {
  removed: Array<{ label: string; version: string; bytes: number }>;
  failed: Array<{ label: string; version: string; error: string }>;
  kept: number;
  interrupted: boolean;
}

/**
 * Removes the versions the plan does not keep. The caller holds the repository lock and made the
 * plan under it. Each removal renames the version aside first, so an interrupted prune never
 * leaves half a version listed. One failure does not stop the others.
 */
export async function applyPrune(store: Store, plan: PrunePlan, reporter: Reporter, signal: AbortSignal): Promise<PruneResult> {
  const result: PruneResult = { removed: [], failed: [], kept: planCounts(plan).keep, interrupted: false };
  const doomed = plan.items.flatMap((item) => item.decisions.filter((d) => !d.keep).map((d) => ({ label: itemLabel(item.key), d })));
  if (store.deleteVersions && doomed.length > 0) {
    if (signal.aborted) return { ...result, interrupted: true };
    try {
      await store.deleteVersions(doomed.map(({ d }) => d.entry.entry));
      for (const { label, d } of doomed) {
        result.removed.push({ label, version: d.entry.version, bytes: d.entry.entry.size });
        reporter.info(`removed ${label} ${d.entry.version}`);
      }
    } catch (err) {
      // Another restic holds the repository: nothing was removed, and the run says who (exit 7).
      if (err instanceof LockedError) throw err;
      for (const { label, d } of doomed) result.failed.push({ label, version: d.entry.version, error: errorMessage(err) });
      reporter.warn(`could not remove ${doomed.length} version(s): ${errorMessage(err)}`);
    }
  } else {
    for (const { label, d } of doomed) {
      if (signal.aborted) {
        result.interrupted = true;
        return result;
      }
      try {
        await store.deleteVersion(d.entry.entry);
        result.removed.push({ label, version: d.entry.version, bytes: d.entry.entry.size });
        reporter.info(`removed ${label} ${d.entry.version}`);
      } catch (err) {
        // The lock went to another run: the repository is theirs now, so stop here.
        if (err instanceof LockLostError) throw err;
        result.failed.push({ label, version: d.entry.version, error: errorMessage(err) });
        reporter.warn(`could not remove ${label} ${d.entry.version}: ${errorMessage(err)}`);
      }
    }
  }
  // Where deleting leaves the data in place (restic's forget), free its space now.
  if (store.reclaim && result.removed.length > 0 && !signal.aborted) {
    try {
      reporter.info(`freeing the space of the removed versions (${store.location})`);
      const freed = await store.reclaim(signal);
      reporter.info(`freed: ${freed}`);
    } catch (err) {
      if (err instanceof LockLostError) throw err;
      if (signal.aborted) result.interrupted = true;
      else reporter.warn(`could not free the space of the removed versions: ${errorMessage(err)}`);
    }
  }
  return result;
}

/** What `status` shows of the last prune: state/prune.json. */
export interface PruneRecord {
  started: string;
  finished: string;
  /** "manual" (the prune command) or "scheduled" (the daemon, after its backup). */
  trigger: "manual" | "scheduled";
  policy: RetentionPolicy;
  tz: string;
  removed: number;
  kept: number;
  bytesFreed: number;
  failed: PruneResult["failed"];
  interrupted: boolean;
}

export const PRUNE_STATE = "prune";

export function pruneRecord(result: PruneResult, plan: PrunePlan, trigger: PruneRecord["trigger"], started: Date, finished: Date): PruneRecord {
  return {
    started: started.toISOString(),
    finished: finished.toISOString(),
    trigger,
    policy: plan.policy,
    tz: plan.tz,
    removed: result.removed.length,
    kept: result.kept,
    bytesFreed: result.removed.reduce((n, r) => n + r.bytes, 0),
    failed: result.failed,
    interrupted: result.interrupted,
  };
}

/** Plans and applies in one go, under a lock the caller holds, and records the result. */
export async function prune(
  deps: { store: Store; reporter: Reporter; now: () => Date },
  opts: { selection: Selection; policy: RetentionPolicy; tz: string; trigger: PruneRecord["trigger"] },
  signal: AbortSignal,
): Promise<{ plan: PrunePlan; result: PruneResult }> {
  const started = deps.now();
  const plan = await planPrune(deps.store, opts.selection, opts.policy, opts.tz);
  if (signal.aborted) throw new InterruptedError();
  const result = await applyPrune(deps.store, plan, deps.reporter, signal);
  // Records of runs whose every version is gone would pile up, one per run, for ever.
  if (!result.interrupted) await deps.store.pruneRunRecords().catch(() => 0);
  await deps.store
    .saveState(PRUNE_STATE, pruneRecord(result, plan, opts.trigger, started, deps.now()))
    .catch((err: unknown) => deps.reporter.warn(`could not save the prune record: ${errorMessage(err)}`));
  return { plan, result };
}

export interface PruneRunOptions {
  selection: Selection;
  policy: RetentionPolicy;
  tz: string;
  trigger: PruneRecord["trigger"];
  /** Only plan: no lock, nothing removed or recorded. */
  dryRun: boolean;
  /** The command line, for the lock. */
  command: string;
  wait?: LockWait;
}

/**
 * The prune command: a place that is not a repository is refused (exit 8); a --name that matches nothing is an
 * error (a typo more often than a wish to prune nothing); a dry run only plans; otherwise it takes
 * the lock, plans under it (a backup that finished a moment ago counts) and prunes.
 */
export async function pruneRun(
  deps: { store: Store; reporter: Reporter; now: () => Date },
  opts: PruneRunOptions,
  signal: AbortSignal,
): Promise<{ plan: PrunePlan; result?: PruneResult }> {
  const { store } = deps;
  await checkRepository(store);
  if (opts.selection.names.length > 0) {
    const missing = unmatchedNames(opts.selection, (await store.list(opts.selection.kinds)).versions.map((v) => v.manifest));
    if (missing.length > 0) {
      throw new NotFoundError(`nothing in the repository is named ${missing.map((n) => JSON.stringify(n)).join(", ")} (see \`incus-backup list\`)`);
    }
  }
  if (opts.dryRun) return { plan: await planPrune(store, opts.selection, opts.policy, opts.tz) };
  await store.checkWritable();
  const lock = await takeLock(store, opts.command, deps.reporter, signal, opts.wait);
  try {
    return await prune(deps, opts, signal);
  } finally {
    await lock.release();
  }
}
