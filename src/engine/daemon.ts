// The scheduled service: backs up and prunes on a cron schedule, verifies on another, catches up once after downtime.

import { errorMessage } from "../errors";
import type { IncusClient } from "../incus/client";
import { KINDS, itemLabel, type Kind } from "../core/selection";
import { formatLocal, formatPolicy, isEmptyPolicy } from "../core/retention";
import { missedRun } from "../core/schedule";
import { DEFAULT_DRILL_TIMEOUT, nextReadData, redactUrl, type Settings } from "../core/settings";
import type { Store } from "../repository/store";
import { backup, runStatus, type BackupRunOptions } from "./backup";
import { checkRepository } from "./locking";
import { pendingRecoveries, recoverBeforePlanning } from "./restore";
import { postJson } from "./notify";
import { defaultParallel } from "./pool";
import { prune } from "./prune";
import type { Reporter } from "./reporter";
import { verifyRun } from "./verify";
import { drill } from "./drill";

export type Trigger = "schedule" | "catch-up";
export type RunStatus = "ok" | "partial" | "failed" | "interrupted";

/** What one scheduled run did: logged, kept in state/daemon.json, and sent as the notification. */
export interface RunSummary {
  kind: "backup" | "verify" | "drill";
  trigger: Trigger;
  /** The scheduled time this run is for (ISO). */
  slot: string;
  status: RunStatus;
  started: string;
  finished: string;
  /** The backup's version name. */
  version?: string;
  items: Array<{ label: string; ok: boolean; error?: string; bytes?: number; seconds?: number }>;
  /** Why the run as a whole failed (Incus or the repository unavailable, ...). */
  error?: string;
  prune?: { removed: number; kept: number; bytesFreed: number; failed: number; error?: string };
  verify?: { checked: number; failed: Array<{ label: string; version: string; problems: string[] }>; deep: boolean };
  drill?: { drilled: number; failed: Array<{ label: string; version: string; reason: string }> };
}

/** state/daemon.json: what the service did and plans, for catch-up after downtime and for status. */
export interface DaemonState {
  host: string;
  pid: number;
  /** The install id (src/local/identity.ts) and the process's start time: `status` tells by these whether it still runs. */
  install?: string;
  start?: string;
  /** When this daemon started. */
  started: string;
  /** When it stopped while idle (absent while it runs, or when it died). */
  stopped?: string;
  /**
   * Every scheduled time up to here was run or deliberately skipped (while idle-running, or
   * during a longer run). A scheduled time after it and before a start-up was missed.
   */
  coveredUntil?: string;
  schedule: string;
  tz: string;
  next?: string;
  verifySchedule?: string;
  verifyNext?: string;
  drillSchedule?: string;
  drillNext?: string;
  lastRun?: Pick<RunSummary, "kind" | "trigger" | "slot" | "status" | "started" | "finished" | "version">;
  updated: string;
}

/** state/verify.json: the last scheduled verify. */
export interface VerifyRecord {
  started: string;
  finished: string;
  deep: boolean;
  checked: number;
  ok: number;
  failed: Array<{ label: string; version: string; problems: string[] }>;
  interrupted: boolean;
  /** The share of a restic repository's data restic check read (INCUS_BACKUP_VERIFY_READ_DATA). */
  readData?: string;
}

export const DAEMON_STATE = "daemon";
export const VERIFY_STATE = "verify";

/** The daemon loop's dependencies: time, sleep and the jobs, so the loop is tested with a fake clock. */
export interface DaemonDeps {
  now(): Date;
  /** Resolves after `ms`, or as soon as `signal` fires. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  /** One plain line per event; the CLI adds the timestamp. */
  log(line: string): void;
  backup(trigger: Trigger, slot: Date, signal: AbortSignal): Promise<RunSummary>;
  verify(trigger: Trigger, slot: Date, signal: AbortSignal): Promise<RunSummary>;
  /** A scheduled restore drill (with INCUS_BACKUP_DRILL_SCHEDULE). */
  drill?(trigger: Trigger, slot: Date, signal: AbortSignal): Promise<RunSummary>;
  notify(summary: RunSummary, signal: AbortSignal): Promise<void>;
  /**
   * Finishes or undoes what runs that died left half-done (restores, `backup --stop`), at start:
   * an instance a killed restore left stopped must not wait for the next scheduled backup.
   */
  recover?(signal: AbortSignal): Promise<void>;
  loadState(): Promise<DaemonState | undefined>;
  saveState(state: DaemonState): Promise<void>;
  /** Rewrites the metrics file after a backup run, once its summary is saved (it is part of them). Never throws. */
  metrics?(): Promise<void>;
  host: string;
  pid: number;
  install?: string;
  start?: string;
}

/** Longest single sleep: the clock is looked at again at least this often (suspend, clock changes). */
const MAX_SLEEP_MS = 60_000;

/**
 * Runs until `signal` fires. Idle, it returns at once; during a run, the run's engines abandon
 * the item in progress cleanly (no partial version; the server-side backup is deleted or
 * expires) and it returns after that. Returns whether a run was interrupted.
 */
export async function runDaemon(deps: DaemonDeps, settings: Settings, signal: AbortSignal): Promise<{ interrupted: boolean }> {
  const { schedule } = settings;
  const tz = schedule.tz;
  const at = (d: Date) => formatLocal(d, tz);
  const loaded = await deps.loadState().catch(() => undefined);
  const startedAt = deps.now();
  const state: DaemonState = {
    ...(loaded?.coveredUntil ? { coveredUntil: loaded.coveredUntil } : {}),
    ...(loaded?.lastRun ? { lastRun: loaded.lastRun } : {}),
    host: deps.host,
    pid: deps.pid,
    ...(deps.install === undefined ? {} : { install: deps.install }),
    ...(deps.start === undefined ? {} : { start: deps.start }),
    started: startedAt.toISOString(),
    schedule: schedule.expression,
    tz,
    ...(settings.verify ? { verifySchedule: settings.verify.schedule.expression } : {}),
    ...(settings.drill ? { drillSchedule: settings.drill.schedule.expression } : {}),
    updated: startedAt.toISOString(),
  };
  const save = async () => {
    state.updated = deps.now().toISOString();
    await deps.saveState(state).catch((err: unknown) => deps.log(`warning: could not save the service state: ${errorMessage(err)}`));
  };

  deps.log(
    `started: backups on "${schedule.expression}" (${tz}), keep ${formatPolicy(settings.policy)}` +
      `${settings.images ? ", images included" : ""}` +
      `${settings.verify ? `; verify${settings.verify.deep ? " --deep" : ""} on "${settings.verify.schedule.expression}"` : ""}` +
      `${settings.drill ? `; restore drills of ${settings.drill.max ?? "every"} instance(s) on "${settings.drill.schedule.expression}"` : ""}` +
      `${settings.notify ? `; notify ${redactUrl(settings.notify.url)} on ${settings.notify.when}` : ""}` +
      `; catch-up ${settings.catchUp ? "on" : "off"}`,
  );

  let interrupted = false;
  const runJob = async (kind: "backup" | "verify" | "drill", trigger: Trigger, slot: Date): Promise<void> => {
    deps.log(`${kind} ${trigger === "catch-up" ? "catching up on" : "for"} ${at(slot)} starting`);
    const job = kind === "backup" ? deps.backup : kind === "verify" ? deps.verify : deps.drill;
    if (!job) return;
    const summary = await job(trigger, slot, signal);
    if (summary.status === "interrupted") interrupted = true;
    deps.log(summaryLine(summary));
    if (kind === "backup") {
      state.lastRun = { kind, trigger, slot: summary.slot, status: summary.status, started: summary.started, finished: summary.finished, ...(summary.version ? { version: summary.version } : {}) };
      // An interrupted run leaves its time uncovered, so the next start-up catches up on it.
      if (summary.status !== "interrupted") state.coveredUntil = deps.now().toISOString();
    }
    await save();
    if (kind === "backup" || kind === "drill") await deps.metrics?.();
    const n = settings.notify;
    // Not for interrupted runs: the container is stopping, and the catch-up run reports.
    if (n && summary.status !== "interrupted" && (n.when === "always" || summary.status !== "ok")) {
      try {
        await deps.notify(summary, signal);
        deps.log(`notified ${redactUrl(n.url)} (${kind} ${summary.status})`);
      } catch (err) {
        deps.log(`warning: notification failed: ${errorMessage(err)}`);
      }
    }
  };

  if (deps.recover && !signal.aborted) {
    await deps.recover(signal).catch((err: unknown) => deps.log(`warning: recovering interrupted runs failed (the next run tries again): ${errorMessage(err)}`));
  }
  const missed = settings.catchUp ? missedRun(schedule, parseDate(state.coveredUntil), startedAt) : undefined;
  if (state.coveredUntil === undefined) {
    // First start on this repository: nothing can have been missed before it.
    state.coveredUntil = startedAt.toISOString();
  }
  await save();
  if (missed && !signal.aborted) {
    deps.log(`the run scheduled for ${at(missed)} was missed while the service was down`);
    await runJob("backup", "catch-up", missed);
  }

  let nextBackup = schedule.next(deps.now());
  let nextVerify = settings.verify?.schedule.next(deps.now());
  let nextDrill = deps.drill ? settings.drill?.schedule.next(deps.now()) : undefined;
  const plan = async () => {
    state.next = nextBackup.toISOString();
    if (nextVerify) state.verifyNext = nextVerify.toISOString();
    if (nextDrill) state.drillNext = nextDrill.toISOString();
    await save();
    deps.log(`next backup at ${at(nextBackup)}${nextVerify ? `, next verify at ${at(nextVerify)}` : ""}${nextDrill ? `, next drill at ${at(nextDrill)}` : ""}`);
  };
  if (!signal.aborted) await plan();

  while (!signal.aborted) {
    // The earliest job due; at the same time: backup, then verify, then drill (a drill takes the newest backup).
    let due = nextBackup;
    if (nextVerify && nextVerify < due) due = nextVerify;
    if (nextDrill && nextDrill < due) due = nextDrill;
    const wait = due.getTime() - deps.now().getTime();
    if (wait > 0) {
      await deps.sleep(Math.min(wait, MAX_SLEEP_MS), signal);
      continue;
    }
    if (due === nextBackup) {
      const slot = nextBackup;
      await runJob("backup", "schedule", slot);
      nextBackup = schedule.next(laterOf(deps.now(), slot));
      const skipped = countBetween((d) => schedule.next(d), slot, nextBackup);
      if (skipped > 0) deps.log(`the run took longer than the schedule allows: ${skipped} scheduled time(s) skipped`);
    } else if (due === nextVerify) {
      const slot = nextVerify;
      await runJob("verify", "schedule", slot);
      nextVerify = settings.verify!.schedule.next(laterOf(deps.now(), slot));
    } else {
      const slot = nextDrill!;
      await runJob("drill", "schedule", slot);
      nextDrill = settings.drill!.schedule.next(laterOf(deps.now(), slot));
    }
    if (!signal.aborted) await plan();
  }

  if (!interrupted) {
    // Stopped while idle: every scheduled time until now was looked after.
    state.coveredUntil = deps.now().toISOString();
  }
  state.stopped = deps.now().toISOString();
  await save();
  deps.log(interrupted ? "stopped; the interrupted run is caught up on at the next start" : "stopped");
  return { interrupted };
}

function parseDate(iso: string | undefined): Date | undefined {
  if (iso === undefined) return undefined;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

function laterOf(a: Date, b: Date): Date {
  return a.getTime() > b.getTime() ? a : b;
}

/** How many scheduled times lie strictly between `from` and `to` (at most 1000 are counted). */
function countBetween(next: (d: Date) => Date, from: Date, to: Date): number {
  let n = 0;
  for (let d = next(from); d.getTime() < to.getTime() && n < 1000; d = next(d)) n++;
  return n;
}

/** "backup ok (schedule): 20251126-030002, 5 of 5 item(s), 1.2 GiB; pruned 3, kept 40". */
export function summaryLine(s: RunSummary): string {
  const parts: string[] = [];
  if (s.version) parts.push(s.version);
  // A backup that failed before any item (no repository, Incus away) says only why.
  if (s.kind === "backup" && !(s.items.length === 0 && s.error)) {
    const ok = s.items.filter((i) => i.ok);
    parts.push(`${ok.length} of ${s.items.length} item(s) backed up, ${bytesText(ok.reduce((n, i) => n + (i.bytes ?? 0), 0))}`);
    for (const f of s.items.filter((i) => !i.ok)) parts.push(`${f.label} failed: ${f.error ?? "?"}`);
  }
  if (s.verify) parts.push(`${s.verify.checked - s.verify.failed.length} of ${s.verify.checked} version(s) ok${s.verify.deep ? " (deep)" : ""}`);
  if (s.drill) {
    parts.push(`${s.drill.drilled - s.drill.failed.length} of ${s.drill.drilled} drill(s) passed`);
    for (const f of s.drill.failed) parts.push(`${f.label} ${f.version} failed: ${f.reason}`);
  }
  if (s.prune) parts.push(s.prune.error ? `prune failed: ${s.prune.error}` : `pruned ${s.prune.removed}, kept ${s.prune.kept}${s.prune.failed ? `, ${s.prune.failed} could not be removed` : ""}`);
  if (s.error) parts.push(s.error);
  const seconds = (Date.parse(s.finished) - Date.parse(s.started)) / 1000;
  return `${s.kind} ${s.status}${s.trigger === "catch-up" ? " (catch-up)" : ""} in ${seconds.toFixed(1)}s: ${parts.join("; ")}`;
}

function bytesText(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
}

// ---------------------------------------------------------------------------------------------
// The real jobs.

export interface ServiceContext {
  /** Where the repository is, for messages. */
  location: string;
  /** Opens the repository (never makes one: see checkedStore). */
  openStore(): Promise<Store>;
  /** A new Incus client for one run (closed after it). */
  connect(): IncusClient;
  now(): Date;
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  log(line: string): void;
  /** Renders per-item events of backups (one line per item). */
  reporter: Reporter;
  /** Renders per-version events of verify (failures only: a repository has many versions). */
  verifyReporter: Reporter;
  settings: Settings;
  toolVersion: string;
  /** Writes the metrics file (INCUS_BACKUP_METRICS_FILE) of the store, or of none that could be opened. Never throws. */
  publishMetrics?(store: Store | undefined): Promise<void>;
}

/** The lock holder's command line, as a manual run that finds the lock taken shows it. */
export const SERVICE_COMMAND = "incus-backup daemon (scheduled backup and prune)";

/** The kinds a scheduled backup covers: everything, images only when the settings say so. */
export function scheduledKinds(settings: Settings): Kind[] {
  return KINDS.filter((k) => k !== "image" || settings.images);
}

/** What a scheduled backup takes and how, from the service's settings. */
/** `repositoryCompression`: the store's default (restic repositories want none), used where the settings name none. */
export function scheduledBackupOptions(settings: Settings, repositoryCompression: string | undefined): Omit<BackupRunOptions, "command"> {
  return {
    selection: { kinds: scheduledKinds(settings), names: [] },
    compression: settings.compression ?? repositoryCompression ?? "zstd",
    snapshots: settings.backup.snapshots,
    stop: settings.backup.mode === "stop",
    defaults: settings.backup,
    parallel: settings.parallel ?? defaultParallel(),
    direct: settings.direct,
    pzstd: settings.pzstd,
    ...(settings.self ? { self: settings.self } : {}),
    ...(settings.repositoryId ? { repositoryId: settings.repositoryId } : {}),
  };
}

/** One scheduled backup then prune, under the repository lock. Never throws: failures are in the summary. */
export async function scheduledBackup(ctx: ServiceContext, trigger: Trigger, slot: Date, signal: AbortSignal): Promise<RunSummary> {
  const started = ctx.now();
  const summary: RunSummary = { kind: "backup", trigger, slot: slot.toISOString(), status: "ok", started: started.toISOString(), finished: "", items: [] };
  let client: IncusClient | undefined;
  let pruneInterrupted = false;
  try {
    const store = await checkedStore(ctx);
    client = ctx.connect();
    const deps = { client, store, reporter: ctx.reporter, now: ctx.now, toolVersion: ctx.toolVersion };
    const result = await backup(
      deps,
      {
        ...scheduledBackupOptions(ctx.settings, store.defaultCompression),
        command: `${SERVICE_COMMAND}: ${trigger} ${slot.toISOString()}`,
        wait: ctx,
        after: async (result) => {
          if (result.interrupted || signal.aborted || isEmptyPolicy(ctx.settings.policy)) return;
          const p = await scheduledPrune(ctx, store, signal);
          summary.prune = p.summary;
          pruneInterrupted = p.interrupted;
        },
      },
      signal,
    );
    if (result) {
      summary.version = result.version;
      summary.items = result.items.map((r) => ({
        label: itemLabel(r.item),
        ok: r.ok,
        ...(r.error === undefined ? {} : { error: r.error }),
        ...(r.bytes === undefined ? {} : { bytes: r.bytes }),
        seconds: r.seconds,
      }));
      summary.status = runStatus(result);
    }
    const p = summary.prune;
    if (pruneInterrupted || (p?.error !== undefined && signal.aborted)) summary.status = "interrupted";
    else if (p && (p.error !== undefined || p.failed > 0) && summary.status === "ok") summary.status = "partial";
  } catch (err) {
    summary.status = signal.aborted ? "interrupted" : "failed";
    summary.error = errorMessage(err);
  } finally {
    await client?.close().catch(() => undefined);
  }
  summary.finished = ctx.now().toISOString();
  return summary;
}

/**
 * The repository, checked before anything is read or written: it must be one (an empty directory
 * is an unmounted NAS more often than not), and the one the service was set up with. Checked every
 * time, not once: the NAS can go away between runs.
 */
async function checkedStore(ctx: ServiceContext): Promise<Store> {
  const store = await ctx.openStore();
  await checkRepository(store, ctx.settings.repositoryId);
  return store;
}

/** The service's prune after its backup, under the backup's lock; its failure is in what it returns. */
async function scheduledPrune(ctx: ServiceContext, store: Store, signal: AbortSignal): Promise<{ summary: NonNullable<RunSummary["prune"]>; interrupted: boolean }> {
  try {
    const p = await prune(
      { store, reporter: ctx.reporter, now: ctx.now },
      { selection: { kinds: [...KINDS], names: [] }, policy: ctx.settings.policy, tz: ctx.settings.schedule.tz, trigger: "scheduled" },
      signal,
    );
    const summary = { removed: p.result.removed.length, kept: p.result.kept, bytesFreed: p.result.removed.reduce((n, r) => n + r.bytes, 0), failed: p.result.failed.length };
    return { summary, interrupted: p.result.interrupted };
  } catch (err) {
    return { summary: { removed: 0, kept: 0, bytesFreed: 0, failed: 0, error: errorMessage(err) }, interrupted: false };
  }
}

/** One scheduled verify of every version (no lock: verify reads only). Never throws. */
export async function scheduledVerify(ctx: ServiceContext, trigger: Trigger, slot: Date, signal: AbortSignal): Promise<RunSummary> {
  const started = ctx.now();
  const deep = ctx.settings.verify?.deep ?? false;
  const summary: RunSummary = { kind: "verify", trigger, slot: slot.toISOString(), status: "ok", started: started.toISOString(), finished: "", items: [] };
  try {
    const store = await checkedStore(ctx);
    const setting = ctx.settings.verify?.readData;
    // Only a store that checks its own data (restic) reads a share; a directory's verify reads every file anyway.
    const readData = setting === undefined || !store.checkStructure ? undefined : nextReadData(setting, (await store.readState<VerifyRecord>(VERIFY_STATE))?.readData);
    const results = await verifyRun(store, { selection: { kinds: [...KINDS], names: [] }, deep, ...(readData === undefined ? {} : { readData }), reporter: ctx.verifyReporter }, signal);
    const failed = results.filter((x) => !x.ok).map((r) => ({ label: itemLabel(r.item), version: r.version, problems: r.problems }));
    const checked = results.length;
    summary.verify = { checked, failed, deep };
    summary.status = signal.aborted ? "interrupted" : failed.length === 0 ? "ok" : "failed";
    const record: VerifyRecord = {
      started: summary.started,
      finished: ctx.now().toISOString(),
      deep,
      checked,
      ok: checked - failed.length,
      failed,
      interrupted: signal.aborted,
      ...(readData === undefined ? {} : { readData }),
    };
    await store.saveState(VERIFY_STATE, record).catch((err: unknown) => ctx.log(`warning: could not save the verify record: ${errorMessage(err)}`));
  } catch (err) {
    summary.status = signal.aborted ? "interrupted" : "failed";
    summary.error = errorMessage(err);
  }
  summary.finished = ctx.now().toISOString();
  return summary;
}

/** One scheduled restore drill: at most INCUS_BACKUP_DRILL_MAX instances, the least recently drilled first. Never throws. */
export async function scheduledDrill(ctx: ServiceContext, trigger: Trigger, slot: Date, signal: AbortSignal): Promise<RunSummary> {
  const started = ctx.now();
  const summary: RunSummary = { kind: "drill", trigger, slot: slot.toISOString(), status: "ok", started: started.toISOString(), finished: "", items: [] };
  const d = ctx.settings.drill;
  let client: IncusClient | undefined;
  try {
    const store = await checkedStore(ctx);
    client = ctx.connect();
    const results = await drill(
      { client, store, reporter: ctx.reporter, now: ctx.now },
      {
        selection: { kinds: ["instance"], names: [] },
        ...(d?.max === undefined ? {} : { max: d.max }),
        timeout: d?.timeout ?? DEFAULT_DRILL_TIMEOUT,
        settle: 3,
        limits: d?.limits ?? {},
        command: `${SERVICE_COMMAND}: drill ${slot.toISOString()}`,
        wait: ctx,
      },
      signal,
    );
    summary.items = results.map((r) => ({ label: itemLabel(r.item), ok: r.ok, ...(r.reason === undefined ? {} : { error: r.reason }), seconds: r.timings.total }));
    const failed = results.filter((r) => !r.ok).map((r) => ({ label: itemLabel(r.item), version: r.version, reason: r.reason ?? "failed" }));
    summary.drill = { drilled: results.length, failed };
    summary.status = failed.length === 0 ? "ok" : failed.length === results.length ? "failed" : "partial";
  } catch (err) {
    summary.status = signal.aborted ? "interrupted" : "failed";
    summary.error = errorMessage(err);
  } finally {
    await client?.close().catch(() => undefined);
  }
  summary.finished = ctx.now().toISOString();
  return summary;
}

/** The JSON a notification carries: the run's summary, where it ran, and a line for chat webhooks. */
export function notificationPayload(summary: RunSummary, info: { host: string; toolVersion: string; next?: Date }): Record<string, unknown> {
  return {
    tool: "incus-backup",
    toolVersion: info.toolVersion,
    host: info.host,
    text: `incus-backup on ${info.host}: ${summaryLine(summary)}`,
    ...summary,
    ...(info.next ? { next: info.next.toISOString() } : {}),
  };
}

/** The service's start-up recovery: only when journals wait, under the lock (waiting for it). */
async function recoverAtStart(ctx: ServiceContext, signal: AbortSignal): Promise<void> {
  const store = await checkedStore(ctx);
  if ((await pendingRecoveries(store)) === 0) return;
  const client = ctx.connect();
  try {
    for (const line of await recoverBeforePlanning({ client, store, reporter: ctx.reporter, now: ctx.now }, SERVICE_COMMAND, signal, ctx)) ctx.log(line);
  } finally {
    await client.close();
  }
}

/** Wires the loop to the real jobs. */
export function serviceDeps(ctx: ServiceContext, info: { host: string; pid: number; install?: string; start?: string }): DaemonDeps {
  return {
    now: ctx.now,
    sleep: ctx.sleep,
    log: ctx.log,
    host: info.host,
    pid: info.pid,
    ...(info.install === undefined ? {} : { install: info.install }),
    ...(info.start === undefined ? {} : { start: info.start }),
    backup: (trigger, slot, signal) => scheduledBackup(ctx, trigger, slot, signal),
    verify: (trigger, slot, signal) => scheduledVerify(ctx, trigger, slot, signal),
    ...(ctx.settings.drill ? { drill: (trigger: Trigger, slot: Date, signal: AbortSignal) => scheduledDrill(ctx, trigger, slot, signal) } : {}),
    recover: (signal) => recoverAtStart(ctx, signal),
    notify: async (summary, signal) => {
      const n = ctx.settings.notify;
      if (!n) return;
      const next = ctx.settings.schedule.next(ctx.now());
      await postJson(n.url, notificationPayload(summary, { host: info.host, toolVersion: ctx.toolVersion, next }), {
        signal,
        userAgent: `incus-backup/${ctx.toolVersion}`,
      });
    },
    ...(ctx.publishMetrics
      ? { metrics: async () => ctx.publishMetrics!(await checkedStore(ctx).catch(() => undefined)) }
      : {}),
    loadState: async () => (await checkedStore(ctx)).readState<DaemonState>(DAEMON_STATE),
    saveState: async (s) => (await checkedStore(ctx)).saveState(DAEMON_STATE, s),
  };
}
