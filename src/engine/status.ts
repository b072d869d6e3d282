// Status: the last run and its items, what runs now, the next scheduled run, the policy, the last prune and verify, the size, the problems.

import { errorMessage } from "../errors";
import { itemId } from "../core/selection";
import { redactUrl, type Settings } from "../core/settings";
import type { RetentionPolicy } from "../core/retention";
import { parseSchedule } from "../core/schedule";
import { healthProblems, newestRun, type HealthFacts, type Problem, type RunFacts } from "../core/health";
import type { RunRecord, ServerOwner, Store } from "../repository/store";
import { checkRepository } from "./locking";
import { DAEMON_STATE, VERIFY_STATE, type DaemonState, type VerifyRecord } from "./daemon";
import { PRUNE_STATE, type PruneRecord } from "./prune";
import { DRILL_STATE, type DrillRecord } from "./drill";

export interface StatusReport {
  now: string;
  /** The time zone times are shown in. */
  tz: string;
  repository: {
    dir: string;
    initialized: boolean;
    id: string | null;
    /** The Incus server whose backups it holds (recorded by its first backup, or init --adopt). */
    server: ServerOwner | null;
    size: number;
    items: number;
    versions: number;
    damaged: number;
    error?: string;
  };
  /** The lock's holder: a backup or prune in progress. */
  running: { pid: number; host: string; command: string; since: string } | null;
  lastRun: RunRecord | null;
  /** From the settings when the service's variables are set, else as the daemon last planned it. */
  schedule: {
    expression: string;
    tz: string;
    next: string | null;
    /** The latest scheduled time before now: what the overdue check measures against. */
    previous: string | null;
    catchUp: boolean | null;
    source: "settings" | "daemon";
  } | null;
  /** A setting the service refuses: it schedules nothing until it is fixed. */
  settingsError: string | null;
  policy: (RetentionPolicy & { source: "settings" | "default" | "last prune" }) | null;
  images: boolean | null;
  verify: { expression: string | null; next: string | null; deep: boolean | null; last: VerifyRecord | null };
  /** Restore drills: the schedule, the last run, and every item's last drill (failed ones first). */
  drills: {
    expression: string | null;
    next: string | null;
    last: DrillRecord["lastRun"] | null;
    items: Array<{ label: string; version: string; ok: boolean; reason?: string; finished: string }>;
  };
  lastPrune: PruneRecord | null;
  /** Where notifications go: scheme and host only, the rest of a webhook URL is its secret. */
  notify: { target: string; when: string } | null;
  daemon: (Pick<DaemonState, "host" | "pid" | "started" | "stopped" | "coveredUntil" | "lastRun"> & { alive: boolean | null }) | null;
  /** Every problem found, each with the exit code it gives (core/health.ts), the one status exits with first. */
  problems: Problem[];
}

export interface StatusOptions {
  /** Where the store is, for the report (opening it may fail). */
  location: string;
  /** Opens the store; a failure is reported, not thrown. */
  open: () => Promise<Store>;
  now: Date;
  tz: string;
  /**
   * This machine's host name and install id, and a process check: whether a daemon recorded here
   * still runs. By install id where the daemon recorded one (two hosts sharing a NAS are both
   * called `backup`), else by host name.
   */
  host?: string;
  install?: string;
  pidAlive?: (pid: number) => boolean;
  processGone?: (pid: number, start?: string) => boolean;
  /** The service's settings, when this runs where they are set (the backup container). */
  settings?: Settings;
  settingsError?: string;
}

/** Reads everything status shows; never throws for a missing or damaged part, it says so instead. */
export async function gatherStatus(o: StatusOptions): Promise<StatusReport> {
  const report: StatusReport = {
    now: o.now.toISOString(),
    tz: o.tz,
    repository: { dir: o.location, initialized: false, id: null, server: null, size: 0, items: 0, versions: 0, damaged: 0 },
    running: null,
    lastRun: null,
    schedule: null,
    settingsError: o.settingsError ?? null,
    policy: null,
    images: null,
    verify: { expression: null, next: null, deep: null, last: null },
    drills: { expression: null, next: null, last: null, items: [] },
    lastPrune: null,
    notify: null,
    daemon: null,
    problems: [],
  };
  const s = o.settings;
  let previousSlot: Date | null = null;
  if (s) {
    previousSlot = s.schedule.prev(o.now) ?? null;
    report.schedule = {
      expression: s.schedule.expression,
      tz: s.schedule.tz,
      next: s.schedule.next(o.now).toISOString(),
      previous: previousSlot?.toISOString() ?? null,
      catchUp: s.catchUp,
      source: "settings",
    };
    report.policy = { ...s.policy, source: s.policySource };
    report.images = s.images;
    if (s.verify) report.verify = { ...report.verify, expression: s.verify.schedule.expression, next: s.verify.schedule.next(o.now).toISOString(), deep: s.verify.deep };
    if (s.notify) report.notify = { target: redactUrl(s.notify.url), when: s.notify.when };
    if (s.drill) report.drills = { ...report.drills, expression: s.drill.schedule.expression, next: s.drill.schedule.next(o.now).toISOString() };
  }

  let repo: Store | undefined;
  try {
    repo = await o.open();
    report.repository.initialized = await repo.isInitialized();
    if (report.repository.initialized) report.repository.id = (await repo.repositoryId()) ?? null;
    // Not a repository (an unmounted NAS), or not the service's: an error, as for a run.
    await checkRepository(repo, s?.repositoryId);
  } catch (err) {
    report.repository.error = errorMessage(err);
  }
  const judge = (facts: Omit<HealthFacts, "now" | "settingsError" | "repositoryError" | "serviceExpected">) => {
    report.problems = healthProblems({
      ...facts,
      now: o.now,
      settingsError: report.settingsError,
      repositoryError: report.repository.error ?? null,
      serviceExpected: s !== undefined || o.settingsError !== undefined,
    });
  };
  if (!repo || !report.repository.initialized) {
    judge({ lastRun: null, locked: false, lastSuccess: null, expectedSince: null, previousSlot: null, daemon: null, failedDrills: [] });
    return report;
  }

  try {
    const { versions, damaged } = await repo.list();
    report.repository.size = versions.reduce((n, v) => n + v.size, 0);
    report.repository.versions = versions.length;
    report.repository.damaged = damaged.length;
    report.repository.items = new Set(versions.map((v) => itemId(v.manifest))).size;
    report.repository.server = (await repo.serverOwner()) ?? null;
  } catch (err) {
    report.repository.error = errorMessage(err);
  }
  const holder = await repo.lockHolder().catch(() => undefined);
  if (holder) report.running = { pid: holder.pid, host: holder.host, command: holder.command, since: holder.started };
  const runs = await repo.listRuns();
  report.lastRun = runs.at(-1) ?? null;
  // A run that started after the lock was looked at has a "running" record: look again before calling it dead.
  let locked = holder !== undefined;
  if (!locked && report.lastRun?.status === "running") locked = (await repo.lockHolder().catch(() => undefined)) !== undefined;

  // State files are only ever written by this tool; one damaged by hand or by a disk is ignored
  // rather than allowed to break the report.
  const daemon = sound(await repo.readState<DaemonState>(DAEMON_STATE), isDaemonState);
  if (daemon) {
    // Only on the daemon's own host (in the container, `incus exec` shares its PIDs) can we tell.
    const alive = daemon.stopped ? false : daemonAlive(daemon, o);
    report.daemon = {
      alive,
      host: daemon.host,
      pid: daemon.pid,
      started: daemon.started,
      ...(daemon.stopped ? { stopped: daemon.stopped } : {}),
      ...(daemon.coveredUntil ? { coveredUntil: daemon.coveredUntil } : {}),
      ...(daemon.lastRun ? { lastRun: daemon.lastRun } : {}),
    };
    if (!report.schedule && typeof daemon.schedule === "string") {
      previousSlot = previousOf(daemon.schedule, daemon.tz, o.now);
      report.schedule = {
        expression: daemon.schedule,
        tz: daemon.tz,
        next: daemon.stopped ? null : (daemon.next ?? null),
        previous: previousSlot?.toISOString() ?? null,
        catchUp: null,
        source: "daemon",
      };
    }
    if (report.verify.expression === null && typeof daemon.verifySchedule === "string") {
      report.verify = { ...report.verify, expression: daemon.verifySchedule, next: daemon.stopped ? null : (daemon.verifyNext ?? null) };
    }
  }
  report.lastPrune = sound(await repo.readState<PruneRecord>(PRUNE_STATE), isPruneRecord) ?? null;
  if (!report.policy && report.lastPrune?.policy) report.policy = { ...report.lastPrune.policy, source: "last prune" };
  report.verify.last = sound(await repo.readState<VerifyRecord>(VERIFY_STATE), isVerifyRecord) ?? null;
  const drills = sound(await repo.readState<DrillRecord>(DRILL_STATE), isDrillRecord);
  if (drills) {
    report.drills.last = drills.lastRun;
    report.drills.items = Object.values(drills.items)
      .map((i) => ({ label: i.label, version: i.version, ok: i.ok, ...(i.reason === undefined ? {} : { reason: i.reason }), finished: i.finished }))
      .sort((a, b) => Number(a.ok) - Number(b.ok) || a.label.localeCompare(b.label));
  }
  if (report.drills.expression === null && daemon && typeof daemon.drillSchedule === "string") {
    report.drills = { ...report.drills, expression: daemon.drillSchedule, next: daemon.stopped ? null : (daemon.drillNext ?? null) };
  }

  const service = daemon?.lastRun && daemon.lastRun.kind === "backup" && isRunFacts(daemon.lastRun) ? daemon.lastRun : null;
  const succeeded = (r: RunFacts) => r.status === "ok" || r.status === "partial";
  const serviceSuccess = service && succeeded(service) ? service : null;
  const recordSuccess = runs.findLast(succeeded) ?? null;
  judge({
    lastRun: newestRun(report.lastRun, service),
    locked,
    lastSuccess: newestRun(recordSuccess, serviceSuccess),
    expectedSince: runs[0]?.started ?? daemon?.started ?? null,
    previousSlot,
    daemon: report.daemon ? { alive: report.daemon.alive, pid: report.daemon.pid, host: report.daemon.host, ...(report.daemon.stopped ? { stopped: report.daemon.stopped } : {}) } : null,
    failedDrills: report.drills.items.filter((i) => !i.ok).map((i) => `${i.label} ${i.version}`),
  });
  return report;
}

/** The daemon's schedule's latest time before now; null for one that no longer parses. */
function previousOf(expression: string, tz: string, now: Date): Date | null {
  try {
    return parseSchedule(expression, tz).prev(now) ?? null;
  } catch {
    return null;
  }
}

const RUN_STATUSES: ReadonlySet<unknown> = new Set(["running", "ok", "partial", "failed", "interrupted"]);
function isRunFacts(r: { status?: unknown; started?: unknown }): r is RunFacts {
  return RUN_STATUSES.has(r.status) && isTime(r.started);
}

function sound<T>(v: T | undefined, check: (x: Record<string, unknown>) => boolean): T | undefined {
  return v !== undefined && check(v as Record<string, unknown>) ? v : undefined;
}

const isTime = (t: unknown) => typeof t === "string" && !Number.isNaN(Date.parse(t));
const optional = (t: unknown, check: (x: unknown) => boolean) => t === undefined || check(t);
const isNumber = (n: unknown) => typeof n === "number" && Number.isFinite(n);

/** Whether the daemon recorded in `d` still runs, or null when this process cannot tell. */
export function daemonAlive(d: DaemonState, o: Pick<StatusOptions, "host" | "install" | "pidAlive" | "processGone">): boolean | null {
  if (d.install !== undefined) {
    if (o.install === undefined || d.install !== o.install || !o.processGone) return null;
    return !o.processGone(d.pid, d.start);
  }
  return o.host !== undefined && o.pidAlive && d.host === o.host ? o.pidAlive(d.pid) : null;
}

export function isDaemonState(d: Record<string, unknown>): boolean {
  return (
    typeof d.host === "string" &&
    isNumber(d.pid) &&
    isTime(d.started) &&
    optional(d.stopped, isTime) &&
    optional(d.coveredUntil, isTime) &&
    optional(d.schedule, (x) => typeof x === "string") &&
    optional(d.tz, (x) => typeof x === "string") &&
    optional(d.next, isTime) &&
    optional(d.verifySchedule, (x) => typeof x === "string") &&
    optional(d.verifyNext, isTime) &&
    optional(d.lastRun, (x) => typeof x === "object" && x !== null)
  );
}

function isDrillRecord(d: Record<string, unknown>): boolean {
  const run = d.lastRun as Record<string, unknown> | undefined;
  const items = d.items as Record<string, Record<string, unknown>> | undefined;
  return (
    isTime(d.finished) &&
    typeof run === "object" &&
    run !== null &&
    isNumber(run.drilled) &&
    isNumber(run.passed) &&
    Array.isArray(run.failed) &&
    typeof items === "object" &&
    items !== null &&
    Object.values(items).every((i) => typeof i === "object" && i !== null && typeof i.label === "string" && typeof i.version === "string" && typeof i.ok === "boolean" && isTime(i.finished))
  );
}

export function isPruneRecord(p: Record<string, unknown>): boolean {
  return (
    isTime(p.finished) &&
    typeof p.trigger === "string" &&
    isNumber(p.removed) &&
    isNumber(p.kept) &&
    isNumber(p.bytesFreed) &&
    Array.isArray(p.failed) &&
    typeof p.interrupted === "boolean" &&
    optional(p.policy, (x) => typeof x === "object" && x !== null)
  );
}

function isVerifyRecord(v: Record<string, unknown>): boolean {
  const failure = (f: unknown) => {
    const x = f as Record<string, unknown> | null;
    return typeof x === "object" && x !== null && typeof x.label === "string" && typeof x.version === "string" && Array.isArray(x.problems) && x.problems.every((p) => typeof p === "string");
  };
  return isTime(v.finished) && isNumber(v.ok) && isNumber(v.checked) && Array.isArray(v.failed) && v.failed.every(failure) && typeof v.interrupted === "boolean";
}
