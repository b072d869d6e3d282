// The metrics file's content, read from the repository after a backup or prune (core/metrics.ts renders it).

import { errorMessage } from "../errors";
import { newestRun } from "../core/health";
import { renderMetrics, type MetricsFacts } from "../core/metrics";
import type { Store } from "../repository/store";
import { DAEMON_STATE, type DaemonState } from "./daemon";
import { PRUNE_STATE, type PruneRecord } from "./prune";
import { DRILL_STATE, type DrillRecord } from "./drill";
import type { Reporter } from "./reporter";
import { isDaemonState, isPruneRecord } from "./status";

/** The metrics of the repository now; a store that could not be opened, or read, gives the file that says so. */
export async function repositoryMetrics(store: Store | undefined): Promise<string> {
  if (!store) return renderMetrics(unreadable);
  try {
    const [listing, runs, daemon, prune, drills] = await Promise.all([
      store.list(),
      store.listRuns(),
      store.readState<DaemonState>(DAEMON_STATE),
      store.readState<PruneRecord>(PRUNE_STATE),
      store.readState<DrillRecord>(DRILL_STATE).catch(() => undefined),
    ]);
    const service = daemon && isDaemonState(daemon as unknown as Record<string, unknown>) && daemon.lastRun?.kind === "backup" ? daemon.lastRun : null;
    const lastPrune = prune && isPruneRecord(prune as unknown as Record<string, unknown>) ? { finished: prune.finished, removed: prune.removed } : null;
    return renderMetrics({
      readable: true,
      runs,
      versions: listing.versions.map((v) => ({ key: v.manifest, version: v.manifest.version, created: v.manifest.created, size: v.size })),
      lastRun: newestRun(runs.at(-1) ?? null, service),
      lastPrune,
      drills: Object.values(drills?.items ?? {}).flatMap((d) => (d.key && typeof d.ok === "boolean" && typeof d.finished === "string" ? [{ key: d.key, ok: d.ok, finished: d.finished, seconds: Number(d.seconds) || 0 }] : [])),
    });
  } catch {
    return renderMetrics(unreadable);
  }
}

const unreadable: MetricsFacts = { readable: false, runs: [], versions: [], lastRun: null, lastPrune: null };

/**
 * Writes the metrics with `write` (the CLI's atomic file write) when one is given. Never throws:
 * monitoring that cannot be written is a warning, and never fails the run it reports on.
 */
export async function publishMetrics(store: Store | undefined, write: ((text: string) => Promise<void>) | undefined, reporter: Pick<Reporter, "warn">): Promise<void> {
  if (!write) return;
  try {
    await write(await repositoryMetrics(store));
  } catch (err) {
    reporter.warn(`could not write the metrics file: ${errorMessage(err)}`);
  }
}
