// What `status` reports as problems for monitoring (a Nagios-style check, cron), and the exit code they give.

import { ExitCode } from "../errors";

/** A run as the health checks see it: a run record, or the service's summary of its last run. */
export interface RunFacts {
  status: "running" | "ok" | "partial" | "failed" | "interrupted";
  started: string;
  finished?: string;
  version?: string;
}

export interface HealthFacts {
  now: Date;
  /** Why the service's settings are refused, if they are. */
  settingsError: string | null;
  /** Why the repository cannot be read, or is not the service's. */
  repositoryError: string | null;
  /** The newest run: its record, or the service's summary when that is newer (a run that failed before it made a record). */
  lastRun: RunFacts | null;
  /** Whether a run holds the repository lock now (a "running" record is then not a dead run). */
  locked: boolean;
  /** The newest run that backed something up: status ok or partial. */
  lastSuccess: RunFacts | null;
  /** Since when backups of this repository are expected: its oldest run record, else the service's start. */
  expectedSince: string | null;
  /** The latest scheduled time before now; null without a schedule here (a run by hand, settings unset). */
  previousSlot: Date | null;
  /** Whether this runs where the service's settings are set, so a service should be running. */
  serviceExpected: boolean;
  /** The service's state file; alive null when this process cannot tell (another host, no install id). */
  daemon: { alive: boolean | null; stopped?: string; pid: number; host: string } | null;
  /** Items whose last restore drill failed ("instance default/web 20250914-030000"). */
  failedDrills: string[];
}

/** The exit code of each problem; a Problem carries its own. */
export const HEALTH_CODE = {
  settings: ExitCode.Usage,
  repository: ExitCode.Repository,
  lastRunFailed: ExitCode.LastRunFailed,
  overdue: ExitCode.Overdue,
  serviceNotRunning: ExitCode.ServiceNotRunning,
  drillFailed: ExitCode.DrillFailed,
} as const;

export type ProblemKind = keyof typeof HEALTH_CODE;

export interface Problem {
  kind: ProblemKind;
  code: (typeof HEALTH_CODE)[ProblemKind];
  message: string;
}

/**
 * Which code `status` exits with when several problems apply, the first first: the settings and the
 * repository (nothing else can be judged without them), then a service that is not running (it
 * explains an overdue backup), then overdue (no good backup for longer than the schedule allows),
 * then the last run's failure, then a failed restore drill (the backups exist, but one did not come back).
 */
export const PRECEDENCE: readonly ProblemKind[] = ["settings", "repository", "serviceNotRunning", "overdue", "lastRunFailed", "drillFailed"];

/** Slack after a scheduled time before its run counts as overdue, on top of the last good run's duration. */
export const OVERDUE_GRACE_MS = 3600_000;

const problem = (kind: ProblemKind, message: string): Problem => ({ kind, code: HEALTH_CODE[kind], message });

/** Every problem found, in PRECEDENCE order. */
export function healthProblems(f: HealthFacts): Problem[] {
  const found: Problem[] = [];
  if (f.settingsError !== null) found.push(problem("settings", `the service's settings are invalid: ${f.settingsError}`));
  if (f.repositoryError !== null) {
    found.push(problem("repository", `the repository cannot be used: ${f.repositoryError}`));
    return found;
  }
  const down = serviceProblem(f);
  if (down) found.push(problem("serviceNotRunning", down));
  const late = overdue(f);
  if (late) found.push(problem("overdue", late));
  const run = f.lastRun;
  if (run && (run.status === "failed" || run.status === "partial" || run.status === "interrupted")) {
    found.push(problem("lastRunFailed", `the last run${run.version ? ` ${run.version}` : ""} (started ${run.started}) was ${run.status}`));
  } else if (run && run.status === "running" && !f.locked) {
    // Its record says running but nothing holds the lock: the run died (killed, the host went down).
    found.push(problem("lastRunFailed", `the last run${run.version ? ` ${run.version}` : ""} (started ${run.started}) never finished`));
  }
  if (f.failedDrills.length > 0) found.push(problem("drillFailed", `the last restore drill of ${f.failedDrills.length} item(s) failed: ${f.failedDrills.join(", ")}`));
  return found;
}

function serviceProblem(f: HealthFacts): string | undefined {
  const d = f.daemon;
  if (d === null) return f.serviceExpected ? "the service has not started on this repository (it has recorded no state yet)" : undefined;
  if (d.stopped !== undefined) return `the service stopped at ${d.stopped} (pid ${d.pid} on ${d.host})`;
  if (d.alive === false) return `the service is not running: pid ${d.pid} on ${d.host} is gone`;
  // alive null: another host's, or nothing to tell it by: not reported.
  return undefined;
}

/**
 * Overdue: a scheduled time passed (more than OVERDUE_GRACE_MS plus the last good run's duration
 * ago) and no run that backed something up started at or after it. Times before backups were
 * expected (a new install, before its first run) do not count; without a schedule nothing is.
 */
function overdue(f: HealthFacts): string | undefined {
  const slot = f.previousSlot;
  if (slot === null) return undefined;
  const success = f.lastSuccess;
  const since = success?.started ?? f.expectedSince;
  if (since === null) return undefined;
  if (Date.parse(since) >= slot.getTime()) return undefined;
  const took = success?.finished ? Math.max(0, Date.parse(success.finished) - Date.parse(success.started)) : 0;
  if (f.now.getTime() < slot.getTime() + OVERDUE_GRACE_MS + took) return undefined;
  const last = success ? `the last successful run${success.version ? ` ${success.version}` : ""} started ${success.started}` : "no run has backed anything up yet";
  return `overdue: a run was due at ${slot.toISOString()}, ${last}`;
}

/** The exit code for the problems found: the first in PRECEDENCE, or 0. */
export function healthExitCode(problems: readonly Problem[]): number {
  for (const kind of PRECEDENCE) if (problems.some((p) => p.kind === kind)) return HEALTH_CODE[kind];
  return 0;
}

/**
 * The newest run from a run record and the service's own summary of its last run: the summary
 * for the same run (it counts a failed prune too), or when it is newer (a scheduled run that failed
 * before it made a record: Incus unreachable, say).
 */
export function newestRun<R extends RunFacts>(record: R | null, service: RunFacts | null): RunFacts | R | null {
  if (service === null) return record;
  if (record === null) return service;
  if (service.version !== undefined && service.version === record.version) return service;
  return Date.parse(service.started) > Date.parse(record.started) ? service : record;
}
