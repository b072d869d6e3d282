// The daemon loop with a fake clock: when it runs, catch-up after downtime, interrupted runs, notifications.

import { describe, expect, it } from "vitest";
import { runDaemon, summaryLine, type DaemonDeps, type DaemonState, type RunStatus, type RunSummary, type Trigger } from "../../../src/engine/daemon";
import { settingsFromEnv } from "../../../src/core/settings";

interface Harness {
  deps: DaemonDeps;
  controller: AbortController;
  log: string[];
  runs: Array<{ kind: string; trigger: Trigger; slot: string; at: string }>;
  notified: RunSummary[];
  state(): DaemonState | undefined;
  clock(): string;
}

interface HarnessOptions {
  start: string;
  state?: DaemonState;
  /** Stop the daemon once the clock reaches this. */
  until: string;
  /** Status of the n-th backup run (default ok). */
  status?: (n: number) => RunStatus;
  /** How long each run takes, in ms (default 30 s). */
  runMs?: number;
  notifyFails?: boolean;
}

function harness(o: HarnessOptions): Harness {
  let now = new Date(o.start).getTime();
  const controller = new AbortController();
  const until = new Date(o.until).getTime();
  let saved: DaemonState | undefined = o.state ? structuredClone(o.state) : undefined;
  const log: string[] = [];
  const runs: Harness["runs"] = [];
  const notified: RunSummary[] = [];
  let n = 0;
  const job = (kind: "backup" | "verify" | "drill") => async (trigger: Trigger, slot: Date, signal: AbortSignal): Promise<RunSummary> => {
    const started = new Date(now).toISOString();
    runs.push({ kind, trigger, slot: slot.toISOString(), at: started });
    now += o.runMs ?? 30_000;
    const status = kind === "backup" ? (o.status?.(n++) ?? "ok") : "ok";
    if (status === "interrupted") controller.abort();
    return { kind, trigger, slot: slot.toISOString(), status, started, finished: new Date(now).toISOString(), items: [], ...(signal.aborted ? {} : {}) };
  };
  const deps: DaemonDeps = {
    now: () => new Date(now),
    sleep: async (ms, signal) => {
      if (signal.aborted) return;
      now += ms;
      if (now >= until) controller.abort();
    },
    log: (line) => log.push(`${new Date(now).toISOString()} ${line}`),
    backup: job("backup"),
    verify: job("verify"),
    drill: job("drill"),
    notify: async (s) => {
      if (o.notifyFails) throw new Error("cannot reach https://hooks.example.com/…: ECONNREFUSED");
      notified.push(s);
    },
    loadState: async () => (saved ? structuredClone(saved) : undefined),
    saveState: async (s) => {
      saved = structuredClone(s);
    },
    host: "backup",
    pid: 42,
  };
  return { deps, controller, log, runs, notified, state: () => saved, clock: () => new Date(now).toISOString() };
}

const settings = (env: Record<string, string> = {}) => settingsFromEnv({ INCUS_BACKUP_TZ: "UTC", ...env }, "UTC");

describe("runDaemon", () => {
  it("rewrites the metrics after each backup, once the state with that run is saved; not after a verify", async () => {
    const h = harness({ start: "2025-05-05T01:00:00Z", until: "2025-05-05T06:00:00Z" });
    const seen: Array<string | undefined> = [];
    h.deps.metrics = async () => {
      seen.push(h.state()?.lastRun?.slot);
    };
    await runDaemon(h.deps, settings({ INCUS_BACKUP_VERIFY_SCHEDULE: "0 4 * * *" }), h.controller.signal);
    expect(h.runs.map((r) => r.kind)).toEqual(["backup", "verify"]);
    expect(seen).toEqual(["2025-05-05T03:00:00.000Z"]);
  });

  it("waits for the scheduled time, runs, plans the next one, and stops at once when idle", async () => {
    const h = harness({ start: "2025-05-05T01:00:00Z", until: "2025-05-06T12:00:00Z" });
    const r = await runDaemon(h.deps, settings(), h.controller.signal);
    expect(r.interrupted).toBe(false);
    expect(h.runs).toEqual([
      { kind: "backup", trigger: "schedule", slot: "2025-05-05T03:00:00.000Z", at: "2025-05-05T03:00:00.000Z" },
      { kind: "backup", trigger: "schedule", slot: "2025-05-06T03:00:00.000Z", at: "2025-05-06T03:00:00.000Z" },
    ]);
    expect(h.log[0]).toMatch(/started: backups on "0 3 \* \* \*" \(UTC\), keep daily 7, weekly 4, monthly 6; catch-up on$/);
    expect(h.log).toContain("2025-05-05T01:00:00.000Z next backup at 2025-05-05 03:00:00 +00:00");
    expect(h.log.at(-1)).toMatch(/ stopped$/);
    const s = h.state()!;
    // Stopped while idle: everything up to the stop is covered.
    expect(s.stopped).toBe(h.clock());
    expect(s.coveredUntil).toBe(h.clock());
    expect(s.lastRun).toMatchObject({ slot: "2025-05-06T03:00:00.000Z", status: "ok", trigger: "schedule" });
  });

  it("does not catch up on a first start", async () => {
    const h = harness({ start: "2025-05-05T04:00:00Z", until: "2025-05-05T12:00:00Z" });
    await runDaemon(h.deps, settings(), h.controller.signal);
    expect(h.runs).toEqual([]);
    expect(h.state()!.coveredUntil).toBe(h.clock());
  });

  it("catches up once, at start-up, on a time missed while the service was down", async () => {
    const state = { host: "backup", pid: 1, started: "2025-05-01T00:00:00Z", coveredUntil: "2025-05-03T02:00:00.000Z", schedule: "0 3 * * *", tz: "UTC", updated: "" };
    const h = harness({ start: "2025-05-05T04:00:00Z", until: "2025-05-05T12:00:00Z", state });
    await runDaemon(h.deps, settings(), h.controller.signal);
    expect(h.runs).toEqual([{ kind: "backup", trigger: "catch-up", slot: "2025-05-05T03:00:00.000Z", at: "2025-05-05T04:00:00.000Z" }]);
    expect(h.log.some((l) => /the run scheduled for 2025-05-05 03:00:00 \+00:00 was missed while the service was down/.test(l))).toBe(true);
  });

  it("does not catch up when the missed time was covered, or when catch-up is off", async () => {
    const covered = { host: "backup", pid: 1, started: "2025-05-01T00:00:00Z", coveredUntil: "2025-05-05T03:10:00.000Z", schedule: "0 3 * * *", tz: "UTC", updated: "" };
    const h1 = harness({ start: "2025-05-05T09:00:00Z", until: "2025-05-05T12:00:00Z", state: covered });
    await runDaemon(h1.deps, settings(), h1.controller.signal);
    expect(h1.runs).toEqual([]);
    const missed = { ...covered, coveredUntil: "2025-05-04T04:00:00.000Z" };
    const h2 = harness({ start: "2025-05-05T09:00:00Z", until: "2025-05-05T12:00:00Z", state: missed });
    await runDaemon(h2.deps, settings({ INCUS_BACKUP_CATCHUP: "false" }), h2.controller.signal);
    expect(h2.runs).toEqual([]);
  });

  it("leaves an interrupted run uncovered, so the next start catches up on it", async () => {
    const h = harness({ start: "2025-05-05T02:59:00Z", until: "2025-05-07T00:00:00Z", status: () => "interrupted" });
    const r = await runDaemon(h.deps, settings(), h.controller.signal);
    expect(r.interrupted).toBe(true);
    expect(h.runs).toHaveLength(1);
    const s = h.state()!;
    expect(s.coveredUntil).toBe("2025-05-05T02:59:00.000Z");
    expect(s.lastRun?.status).toBe("interrupted");
    expect(h.log.at(-1)).toMatch(/stopped; the interrupted run is caught up on at the next start$/);

    const again = harness({ start: "2025-05-05T03:05:00Z", until: "2025-05-05T04:00:00Z", state: s });
    await runDaemon(again.deps, settings(), again.controller.signal);
    expect(again.runs).toEqual([{ kind: "backup", trigger: "catch-up", slot: "2025-05-05T03:00:00.000Z", at: "2025-05-05T03:05:00.000Z" }]);
  });

  it("skips, and says so, the times that pass during a longer run", async () => {
    const h = harness({ start: "2025-05-05T10:00:30Z", until: "2025-05-05T10:06:00Z", runMs: 150_000 });
    await runDaemon(h.deps, settings({ INCUS_BACKUP_SCHEDULE: "* * * * *" }), h.controller.signal);
    expect(h.runs.map((r) => r.slot)).toEqual(["2025-05-05T10:01:00.000Z", "2025-05-05T10:04:00.000Z"]);
    expect(h.log.some((l) => /the run took longer than the schedule allows: 2 scheduled time\(s\) skipped/.test(l))).toBe(true);
  });

  it("runs verify on its own schedule", async () => {
    const h = harness({ start: "2025-05-05T00:00:00Z", until: "2025-05-05T12:00:00Z" });
    await runDaemon(h.deps, settings({ INCUS_BACKUP_VERIFY_SCHEDULE: "0 5 * * *" }), h.controller.signal);
    expect(h.runs.map((r) => `${r.kind} ${r.slot}`)).toEqual(["backup 2025-05-05T03:00:00.000Z", "verify 2025-05-05T05:00:00.000Z"]);
    expect(h.state()!.verifyNext).toBe("2025-05-06T05:00:00.000Z");
  });

  it("runs restore drills on their own schedule, after a backup due at the same time", async () => {
    const h = harness({ start: "2025-05-05T00:00:00Z", until: "2025-05-06T04:00:00Z" });
    await runDaemon(h.deps, settings({ INCUS_BACKUP_DRILL_SCHEDULE: "0 3 * * *", INCUS_BACKUP_DRILL_MAX: "2" }), h.controller.signal);
    expect(h.runs.map((r) => `${r.kind} ${r.slot}`)).toEqual(["backup 2025-05-05T03:00:00.000Z", "drill 2025-05-05T03:00:00.000Z", "backup 2025-05-06T03:00:00.000Z", "drill 2025-05-06T03:00:00.000Z"]);
    expect(h.state()!.drillNext).toBe("2025-05-07T03:00:00.000Z");
    expect(h.log.join("\n")).toContain('restore drills of 2 instance(s) on "0 3 * * *"');
  });

  it("notifies on failure only, by default", async () => {
    const h = harness({ start: "2025-05-05T02:00:00Z", until: "2025-05-06T12:00:00Z", status: (n) => (n === 0 ? "ok" : "failed") });
    await runDaemon(h.deps, settings({ INCUS_BACKUP_NOTIFY_URL: "https://hooks.example.com/secret" }), h.controller.signal);
    expect(h.runs).toHaveLength(2);
    expect(h.notified.map((s) => s.status)).toEqual(["failed"]);
    expect(h.log.some((l) => / notified https:\/\/hooks\.example\.com\/… \(backup failed\)$/.test(l))).toBe(true);
  });

  it("notifies every run with INCUS_BACKUP_NOTIFY=always, but not an interrupted one", async () => {
    const h = harness({ start: "2025-05-05T02:00:00Z", until: "2025-05-08T12:00:00Z", status: (n) => (n < 2 ? "ok" : "interrupted") });
    await runDaemon(h.deps, settings({ INCUS_BACKUP_NOTIFY_URL: "https://hooks.example.com/secret", INCUS_BACKUP_NOTIFY: "always" }), h.controller.signal);
    expect(h.runs).toHaveLength(3);
    expect(h.notified.map((s) => s.status)).toEqual(["ok", "ok"]);
  });

  it("logs a failed notification and carries on", async () => {
    const h = harness({ start: "2025-05-05T02:00:00Z", until: "2025-05-06T12:00:00Z", status: () => "failed", notifyFails: true });
    await runDaemon(h.deps, settings({ INCUS_BACKUP_NOTIFY_URL: "https://hooks.example.com/secret" }), h.controller.signal);
    expect(h.runs).toHaveLength(2);
    expect(h.log.filter((l) => /warning: notification failed: cannot reach https:\/\/hooks\.example\.com\/…: ECONNREFUSED/.test(l))).toHaveLength(2);
    expect(h.log.join("\n")).not.toMatch(/secret/);
  });

  it("returns at once when stopped before anything is due", async () => {
    const h = harness({ start: "2025-05-05T02:00:00Z", until: "2099-01-01T00:00:00Z" });
    h.controller.abort();
    const r = await runDaemon(h.deps, settings(), h.controller.signal);
    expect(r.interrupted).toBe(false);
    expect(h.runs).toEqual([]);
    expect(h.clock()).toBe("2025-05-05T02:00:00.000Z");
  });

  it("never sleeps longer than a minute at a time, so a changed clock is noticed", async () => {
    const sleeps: number[] = [];
    const h = harness({ start: "2025-05-05T02:00:00Z", until: "2025-05-05T02:10:00Z" });
    const sleep = h.deps.sleep;
    h.deps.sleep = async (ms, signal) => {
      sleeps.push(ms);
      await sleep(ms, signal);
    };
    await runDaemon(h.deps, settings(), h.controller.signal);
    expect(Math.max(...sleeps)).toBe(60_000);
  });
});

describe("summaryLine", () => {
  it("says what a backup run did", () => {
    const s: RunSummary = {
      kind: "backup",
      trigger: "schedule",
      slot: "2025-05-05T03:00:00.000Z",
      status: "partial",
      started: "2025-05-05T03:00:00.000Z",
      finished: "2025-05-05T03:01:00.000Z",
      version: "20250505-030000",
      items: [
        { label: "instance default/web", ok: true, bytes: 2 * 1024 * 1024 },
        { label: "volume default/p/data", ok: false, error: "boom" },
      ],
      prune: { removed: 3, kept: 10, bytesFreed: 0, failed: 0 },
    };
    expect(summaryLine(s)).toBe("backup partial in 60.0s: 20250505-030000; 1 of 2 item(s) backed up, 2.0 MiB; volume default/p/data failed: boom; pruned 3, kept 10");
  });
});

describe("runDaemon: recovery at start", () => {
  it("finishes or undoes interrupted runs first, before a catch-up or the schedule", async () => {
    const h = harness({
      start: "2025-05-05T05:00:00Z",
      until: "2025-05-05T06:00:00Z",
      state: { host: "backup", pid: 1, started: "2025-05-04T00:00:00Z", coveredUntil: "2025-05-04T12:00:00Z", schedule: "0 3 * * *", tz: "UTC", updated: "2025-05-04T12:00:00Z" },
    });
    const order: string[] = [];
    h.deps.recover = async () => {
      order.push(`recover with ${h.runs.length} run(s) done`);
    };
    await runDaemon(h.deps, settings(), h.controller.signal);
    expect(order).toEqual(["recover with 0 run(s) done"]);
    // The catch-up for the missed 03:00 run came after it.
    expect(h.runs.map((r) => r.trigger)).toEqual(["catch-up"]);
  });

  it("logs a recovery that fails and carries on", async () => {
    const h = harness({ start: "2025-05-05T01:00:00Z", until: "2025-05-05T04:00:00Z" });
    h.deps.recover = async () => {
      throw new Error("Incus is away");
    };
    await runDaemon(h.deps, settings(), h.controller.signal);
    expect(h.log.join("\n")).toMatch(/warning: recovering interrupted runs failed \(the next run tries again\): Incus is away/);
    expect(h.runs).toHaveLength(1);
  });
});
