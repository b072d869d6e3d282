// The problems status reports and the exit code they give: each problem, the grace period, the precedence.

import { describe, expect, it } from "vitest";
import { OVERDUE_GRACE_MS, healthExitCode, healthProblems, newestRun, type HealthFacts, type RunFacts } from "../../../src/core/health";
import { parseSchedule } from "../../../src/core/schedule";

const daily = parseSchedule("0 3 * * *", "UTC");
const NOW = new Date("2025-09-14T10:00:00Z");
const ok: RunFacts = { status: "ok", started: "2025-09-14T03:00:01Z", finished: "2025-09-14T03:20:01Z", version: "20250914-030001" };
const yesterday: RunFacts = { status: "ok", started: "2025-09-13T03:00:01Z", finished: "2025-09-13T03:20:01Z", version: "20250913-030001" };

/** A healthy service: last night's run went well, the daemon runs here. */
function facts(over: Partial<HealthFacts> = {}): HealthFacts {
  return {
    now: NOW,
    settingsError: null,
    repositoryError: null,
    lastRun: ok,
    locked: false,
    lastSuccess: ok,
    expectedSince: "2025-09-01T03:00:00Z",
    previousSlot: daily.prev(over.now ?? NOW) ?? null,
    serviceExpected: true,
    daemon: { alive: true, pid: 7, host: "backup" },
    failedDrills: [],
    ...over,
  };
}

const kinds = (f: HealthFacts) => healthProblems(f).map((p) => p.kind);

describe("healthProblems", () => {
  it("finds nothing for a healthy service, and exits 0", () => {
    expect(healthProblems(facts())).toEqual([]);
    expect(healthExitCode([])).toBe(0);
  });

  it.each<[RunFacts["status"]]>([["failed"], ["partial"], ["interrupted"]])("a last run that was %s is 10", (status) => {
    const p = healthProblems(facts({ lastRun: { ...ok, status } }));
    expect(p).toEqual([{ kind: "lastRunFailed", code: 10, message: `the last run 20250914-030001 (started 2025-09-14T03:00:01Z) was ${status}` }]);
    expect(healthExitCode(p)).toBe(10);
  });

  it("a run recorded as running is fine while the lock is held, and 10 when nothing holds it (the run died)", () => {
    const running: RunFacts = { status: "running", started: "2025-09-14T09:59:00Z", version: "20250914-095900" };
    expect(kinds(facts({ lastRun: running, locked: true }))).toEqual([]);
    expect(healthProblems(facts({ lastRun: running, locked: false }))[0]!.message).toMatch(/never finished/);
  });

  it("overdue (11) once the scheduled time is an hour plus the last good run's duration past, and no good run started since", () => {
    // Last success yesterday: today's 03:00 run is missing; 20 minutes (its duration) + 1 h of grace.
    const slot = Date.parse("2025-09-14T03:00:00Z");
    const took = 20 * 60_000;
    const at = (ms: number) => facts({ now: new Date(ms), lastRun: yesterday, lastSuccess: yesterday });
    expect(kinds(at(slot + OVERDUE_GRACE_MS + took - 1))).toEqual([]);
    const p = healthProblems(at(slot + OVERDUE_GRACE_MS + took));
    expect(p).toEqual([{ kind: "overdue", code: 11, message: "overdue: a run was due at 2025-09-14T03:00:00.000Z, the last successful run 20250913-030001 started 2025-09-13T03:00:01Z" }]);
    expect(healthExitCode(p)).toBe(11);
  });

  it("a partial run counts as a success for overdue (its failures are 10), a failed one does not", () => {
    const partial = { ...ok, status: "partial" as const };
    expect(kinds(facts({ lastRun: partial, lastSuccess: partial }))).toEqual(["lastRunFailed"]);
    expect(kinds(facts({ lastRun: { ...ok, status: "failed" }, lastSuccess: yesterday }))).toEqual(["overdue", "lastRunFailed"]);
  });

  it("no schedule here (a run by hand, settings unset): never overdue", () => {
    expect(kinds(facts({ previousSlot: null, lastRun: yesterday, lastSuccess: yesterday, now: new Date("2026-01-01T00:00:00Z") }))).toEqual([]);
  });

  it("never a success: overdue only for scheduled times after backups were first expected (a new install is not overdue)", () => {
    // Installed at 09:00, after today's 03:00: nothing is due until tomorrow.
    expect(kinds(facts({ lastRun: null, lastSuccess: null, expectedSince: "2025-09-14T09:00:00Z" }))).toEqual([]);
    expect(kinds(facts({ lastRun: null, lastSuccess: null, expectedSince: "2025-09-13T09:00:00Z" }))).toEqual(["overdue"]);
    expect(healthProblems(facts({ lastRun: null, lastSuccess: null, expectedSince: "2025-09-13T09:00:00Z" }))[0]!.message).toMatch(/no run has backed anything up yet/);
    expect(kinds(facts({ lastRun: null, lastSuccess: null, expectedSince: null }))).toEqual([]);
  });

  it("the service not running (12): stopped, its process gone, or never started where its settings are set; not when it cannot tell", () => {
    expect(healthProblems(facts({ daemon: { alive: false, stopped: "2025-09-14T08:00:00Z", pid: 7, host: "backup" } }))[0]).toMatchObject({
      kind: "serviceNotRunning",
      code: 12,
      message: "the service stopped at 2025-09-14T08:00:00Z (pid 7 on backup)",
    });
    expect(healthProblems(facts({ daemon: { alive: false, pid: 7, host: "backup" } }))[0]!.message).toBe("the service is not running: pid 7 on backup is gone");
    expect(kinds(facts({ daemon: { alive: null, pid: 7, host: "elsewhere" } }))).toEqual([]);
    expect(kinds(facts({ daemon: null }))).toEqual(["serviceNotRunning"]);
    // By hand on the host (no settings) with no service state: nothing says one should run.
    expect(kinds(facts({ daemon: null, serviceExpected: false }))).toEqual([]);
  });

  it("lists every problem, and exits with the first by precedence: 2, 8, then 12, 11, 10", () => {
    const all = facts({ lastRun: { ...yesterday, status: "failed" }, lastSuccess: null, expectedSince: "2025-09-01T00:00:00Z", daemon: { alive: false, pid: 7, host: "backup" } });
    expect(kinds(all)).toEqual(["serviceNotRunning", "overdue", "lastRunFailed"]);
    expect(healthExitCode(healthProblems(all))).toBe(12);
    expect(healthExitCode(healthProblems({ ...all, daemon: { alive: true, pid: 7, host: "backup" } }))).toBe(11);
    const bad = healthProblems({ ...all, settingsError: "INCUS_BACKUP_SCHEDULE is empty" });
    expect(bad.map((p) => p.code)).toEqual([2, 12, 11, 10]);
    expect(healthExitCode(bad)).toBe(2);
    // Without the repository nothing else can be judged.
    expect(healthProblems({ ...all, repositoryError: "not a repository" }).map((p) => p.code)).toEqual([8]);
    expect(healthExitCode(healthProblems({ ...all, settingsError: "x", repositoryError: "y" }))).toBe(2);
  });
});

describe("newestRun", () => {
  it("takes the service's summary of the same run (it counts the prune), or a newer one (a run that made no record)", () => {
    const record: RunFacts = { ...ok };
    const sameRun: RunFacts = { ...ok, status: "partial", started: "2025-09-14T03:00:00Z" };
    expect(newestRun(record, sameRun)).toBe(sameRun);
    const noRecord: RunFacts = { status: "failed", started: "2025-09-15T03:00:00Z", finished: "2025-09-15T03:00:01Z" };
    expect(newestRun(record, noRecord)).toBe(noRecord);
    expect(newestRun(record, { ...yesterday, status: "failed" })).toBe(record);
    expect(newestRun(null, noRecord)).toBe(noRecord);
    expect(newestRun(record, null)).toBe(record);
  });
});

describe("a failed restore drill", () => {
  it("is a problem of its own, exit 13, after every other", () => {
    const f = facts({ failedDrills: ["instance default/web 20250914-030001"] });
    expect(healthProblems(f)).toEqual([{ kind: "drillFailed", code: 13, message: "the last restore drill of 1 item(s) failed: instance default/web 20250914-030001" }]);
    expect(healthExitCode(healthProblems(f))).toBe(13);
    expect(healthExitCode(healthProblems({ ...f, lastRun: { ...ok, status: "partial" } }))).toBe(10);
  });
});
