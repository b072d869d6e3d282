// `status` on real temp repositories: what it shows, JSON, exit codes, and no secrets.

import { spawnSync } from "node:child_process";
import { writeFile, mkdir } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DirectoryStore } from "../../../src/repository/directory";
import { RepositoryLock } from "../../../src/repository/lock";
import type { DaemonState, VerifyRecord } from "../../../src/engine/daemon";
import type { PruneRecord } from "../../../src/engine/prune";
import { runCli } from "../helpers/cli";
import { data, repoDir, tempDir, web, writeVersion } from "../helpers/repo";

const SERVICE_ENV = {
  INCUS_BACKUP_SCHEDULE: "0 3 * * *",
  INCUS_BACKUP_TZ: "Europe/Berlin",
  INCUS_BACKUP_KEEP_DAILY: "7",
  INCUS_BACKUP_KEEP_WEEKLY: "4",
  INCUS_BACKUP_NOTIFY_URL: "https://hooks.example.com/services/T000/B000/s3cr3tT0ken?key=hunter2",
  INCUS_BACKUP_NOTIFY: "always",
  INCUS_BACKUP_VERIFY_SCHEDULE: "0 5 * * 0",
};
const NOW = new Date("2025-09-14T10:00:00Z");

async function fullRepo(): Promise<string> {
  const dir = await tempDir();
  const { repo } = await DirectoryStore.open(dir, { create: true });
  await writeVersion(repo, web, "20250913-010000");
  await writeVersion(repo, web, "20250914-010000");
  await writeVersion(repo, data, "20250914-010000");
  const version = await repo.reserveVersion(new Date("2025-09-14T01:00:00Z"), { command: "x", started: "2025-09-14T01:00:00.000Z", status: "running" });
  await repo.saveRun({
    version,
    command: "incus-backup daemon (scheduled backup and prune): schedule 2025-09-14T01:00:00.000Z",
    started: "2025-09-14T01:00:00.000Z",
    finished: "2025-09-14T01:01:30.000Z",
    status: "partial",
    items: [
      { label: "instance default/web", ok: true, bytes: 3 * 1024 * 1024, seconds: 12 },
      { label: "volume default/fast/data", ok: false, error: "Create volume backup: disk full", seconds: 1 },
    ],
  });
  const prune: PruneRecord = {
    started: "2025-09-14T01:01:30.000Z",
    finished: "2025-09-14T01:01:31.000Z",
    trigger: "scheduled",
    policy: { last: 0, hourly: 0, daily: 7, weekly: 4, monthly: 0, yearly: 0 },
    tz: "Europe/Berlin",
    removed: 2,
    kept: 3,
    bytesFreed: 2048,
    failed: [],
    interrupted: false,
  };
  await repo.saveState("prune", prune);
  const verify: VerifyRecord = {
    started: "2025-09-07T03:00:00.000Z",
    finished: "2025-09-07T03:00:05.000Z",
    deep: false,
    checked: 3,
    ok: 2,
    failed: [{ label: "instance default/web", version: "20250913-010000", problems: ["instance.tar.zst: sha256 mismatch"] }],
    interrupted: false,
  };
  await repo.saveState("verify", verify);
  const daemon: DaemonState = {
    host: "backup",
    pid: 7,
    started: "2025-09-10T08:00:00.000Z",
    coveredUntil: "2025-09-14T01:01:31.000Z",
    schedule: "0 3 * * *",
    tz: "Europe/Berlin",
    next: "2025-09-15T01:00:00.000Z",
    updated: "2025-09-14T01:01:31.000Z",
  };
  await repo.saveState("daemon", daemon);
  return dir;
}

describe("status", () => {
  it("shows the last run with its items, the next run, policy, prune, verify and size", async () => {
    const dir = await fullRepo();
    const r = await runCli(["status", "--dir", dir], { env: SERVICE_ENV, now: NOW });
    // The last run was partial.
    expect(r.code).toBe(10);
    const lines = r.stdout.split("\n");
    expect(lines[0]).toMatch(/^repository  .*: 2 item\(s\), 3 version\(s\), \d+ B \(id [0-9a-f]{16}\)$/);
    expect(r.stdout).toMatch(/^running +nothing$/m);
    expect(r.stdout).toMatch(/^last run +20250914-010000 PARTIAL: 2025-09-14 03:00:00 \+02:00 to 2025-09-14 03:01:30 \+02:00 \(1m30s\), 1 of 2 item\(s\), 3\.0 MiB$/m);
    expect(r.stdout).toMatch(/^ +ok +instance default\/web +3\.0 MiB +12\.0s$/m);
    expect(r.stdout).toMatch(/^ +FAILED +volume default\/fast\/data: Create volume backup: disk full$/m);
    expect(r.stdout).toMatch(/^next run +2025-09-15 03:00:00 \+02:00 \(schedule "0 3 \* \* \*" in Europe\/Berlin, catch-up on\)$/m);
    expect(r.stdout).toMatch(/^policy +keep daily 7, weekly 4$/m);
    expect(r.stdout).toMatch(/^last prune +2025-09-14 03:01:31 \+02:00 \(scheduled\): removed 2, kept 3, 2\.0 KiB freed$/m);
    expect(r.stdout).toMatch(/^verify +schedule "0 5 \* \* 0", next 2025-09-21 05:00:00 \+02:00; last 2025-09-07 05:00:05 \+02:00: 2 of 3 version\(s\) ok, 1 FAILED$/m);
    expect(r.stdout).toMatch(/FAILED +instance default\/web 20250913-010000: instance\.tar\.zst: sha256 mismatch/);
    expect(r.stdout).toMatch(/^notify +https:\/\/hooks\.example\.com\/… on always$/m);
    expect(r.stdout).toMatch(/^service +pid 7 on backup since 2025-09-10 10:00:00 \+02:00$/m);
    expect(r.stdout).toMatch(/^health +1 problem\(s\), exit 10\n +10  the last run 20250914-010000 \(started 2025-09-14T01:00:00.000Z\) was partial$/m);
  });

  it("names each item's member once: a volume keyed by member in its label, an instance beside it", async () => {
    const dir = await repoDir();
    const { repo } = await DirectoryStore.open(dir, { create: false });
    const vd = { kind: "volume" as const, project: "default", pool: "local", name: "vd" };
    for (const member of ["node1", "node2"]) await writeVersion(repo, { ...vd, member }, "20250914-010000");
    const version = await repo.reserveVersion(new Date("2025-09-14T01:00:00Z"), { command: "x", started: "2025-09-14T01:00:00.000Z", status: "running" });
    await repo.saveRun({
      version,
      command: "backup --all",
      started: "2025-09-14T01:00:00.000Z",
      finished: "2025-09-14T01:00:10.000Z",
      status: "ok",
      items: [
        { label: "volume default/local/vd on node1", ok: true, bytes: 1024, seconds: 1, member: "node1", key: { ...vd, member: "node1" } },
        { label: "volume default/local/vd on node2", ok: true, bytes: 1024, seconds: 1, member: "node2", key: { ...vd, member: "node2" } },
        { label: "instance default/c2", ok: true, bytes: 1024, seconds: 1, member: "node2", key: { kind: "instance", project: "default", name: "c2" } },
      ],
    });
    const r = await runCli(["status", "--dir", dir], { now: NOW });
    expect(r.stdout).toMatch(/^repository  .*: 2 item\(s\), 2 version\(s\)/);
    expect(r.stdout).toMatch(/^ +ok +volume default\/local\/vd on node1 +1\.0 KiB +1\.0s$/m);
    expect(r.stdout).toMatch(/^ +ok +volume default\/local\/vd on node2 +1\.0 KiB +1\.0s$/m);
    expect(r.stdout).toMatch(/^ +ok +instance default\/c2 +1\.0 KiB +1\.0s +\(on node2\)$/m);
  });

  it("says when the daemon recorded on this host is gone", async () => {
    const dir = await fullRepo();
    const { repo } = await DirectoryStore.open(dir, { create: false });
    const gone = spawnSync("true").pid;
    await repo.saveState("daemon", { host: hostname(), pid: gone, started: "2025-09-10T08:00:00.000Z", schedule: "0 3 * * *", tz: "Europe/Berlin", updated: "" });
    const r = await runCli(["status", "--dir", dir], { env: SERVICE_ENV, now: NOW });
    expect(r.stdout).toMatch(new RegExp(`^service +NOT RUNNING: pid ${gone} on \\S+, started 2025-09-10 10:00:00 \\+02:00, is gone$`, "m"));
    await repo.saveState("daemon", { host: hostname(), pid: process.pid, started: "2025-09-10T08:00:00.000Z", schedule: "0 3 * * *", tz: "Europe/Berlin", updated: "" });
    const alive = JSON.parse((await runCli(["status", "--dir", dir, "--json"], { env: SERVICE_ENV, now: NOW })).stdout) as { daemon: { alive: boolean } };
    expect(alive.daemon.alive).toBe(true);
  });

  it("exits 11 a day later without a run (overdue), and 12 once the service recorded its stop; --json lists them all", async () => {
    const dir = await fullRepo();
    const nextDay = new Date("2025-09-15T10:00:00Z");
    const late = await runCli(["status", "--dir", dir, "--json"], { env: SERVICE_ENV, now: nextDay });
    expect(late.code).toBe(11);
    const j = JSON.parse(late.stdout) as { problems: Array<{ code: number; message: string }>; schedule: { previous: string } };
    expect(j.schedule.previous).toBe("2025-09-15T01:00:00.000Z");
    expect(j.problems.map((p) => p.code)).toEqual([11, 10]);
    expect(j.problems[0]!.message).toBe("overdue: a run was due at 2025-09-15T01:00:00.000Z, the last successful run 20250914-010000 started 2025-09-14T01:00:00.000Z");
    const { repo } = await DirectoryStore.open(dir, { create: false });
    const daemon = (await repo.readState<DaemonState>("daemon"))!;
    await repo.saveState("daemon", { ...daemon, stopped: "2025-09-14T08:00:00.000Z" });
    const down = await runCli(["status", "--dir", dir], { env: SERVICE_ENV, now: nextDay });
    expect(down.code).toBe(12);
    expect(down.stdout).toMatch(/^health +3 problem\(s\), exit 12\n +12  the service stopped at 2025-09-14T08:00:00.000Z \(pid 7 on backup\)\n +11  overdue: .*\n +10  the last run /m);
  });

  it("prints JSON with the same facts", async () => {
    const dir = await fullRepo();
    const r = await runCli(["status", "--dir", dir, "--json"], { env: SERVICE_ENV, now: NOW });
    expect(r.code).toBe(10);
    const j = JSON.parse(r.stdout) as Record<string, any>;
    expect(j.repository).toMatchObject({ initialized: true, items: 2, versions: 3, damaged: 0 });
    expect(j.lastRun).toMatchObject({ version: "20250914-010000", status: "partial" });
    expect(j.lastRun.items).toHaveLength(2);
    expect(j.schedule).toMatchObject({ expression: "0 3 * * *", tz: "Europe/Berlin", next: "2025-09-15T01:00:00.000Z", catchUp: true, source: "settings" });
    expect(j.policy).toMatchObject({ daily: 7, weekly: 4, monthly: 0, source: "settings" });
    expect(j.lastPrune).toMatchObject({ removed: 2 });
    expect(j.verify).toMatchObject({ expression: "0 5 * * 0", next: "2025-09-21T03:00:00.000Z" });
    expect(j.verify.last.failed).toHaveLength(1);
    expect(j.notify).toEqual({ target: "https://hooks.example.com/…", when: "always" });
    expect(j.running).toBeNull();
    expect(j.problems).toEqual([{ kind: "lastRunFailed", code: 10, message: expect.stringContaining("was partial") as unknown }]);
  });

  it("never shows the notify URL's secret, in text or JSON", async () => {
    const dir = await fullRepo();
    for (const args of [[], ["--json"]]) {
      const r = await runCli(["status", "--dir", dir, ...args], { env: SERVICE_ENV, now: NOW });
      expect(r.stdout + r.stderr).not.toMatch(/s3cr3t|hunter2|T000/);
    }
  });

  it("shows a run in progress from the lock", async () => {
    const dir = await fullRepo();
    const lock = await RepositoryLock.acquire(dir, "incus-backup backup --all", { now: () => new Date("2025-09-14T09:59:00Z") });
    try {
      const r = await runCli(["status", "--dir", dir], { env: SERVICE_ENV, now: NOW });
      expect(r.stdout).toMatch(/^running +incus-backup backup --all: pid \d+ on .* since 2025-09-14 11:59:00 \+02:00$/m);
    } finally {
      await lock.release();
    }
  });

  it("outside the service, shows the schedule as the daemon last planned it", async () => {
    const dir = await fullRepo();
    const r = await runCli(["status", "--dir", dir], { env: { TZ: "UTC" }, now: NOW });
    expect(r.code).toBe(10);
    expect(r.stdout).toMatch(/^next run +2025-09-15 01:00:00 \+00:00 \(schedule "0 3 \* \* \*" in Europe\/Berlin, as the service last planned it\)$/m);
    expect(r.stdout).toMatch(/^policy +keep daily 7, weekly 4 \(of the last prune\)$/m);
    expect(r.stdout).not.toMatch(/^notify/m);
  });

  it("says so for an empty repository", async () => {
    const dir = await repoDir();
    const r = await runCli(["status", "--dir", dir], { env: SERVICE_ENV, now: NOW });
    // Where the service's settings are set, a repository it never recorded itself in: it never started.
    expect(r.code).toBe(12);
    expect(r.stdout).toMatch(/^ +12  the service has not started on this repository/m);
    expect((await runCli(["status", "--dir", dir], { now: NOW })).code).toBe(0);
    expect(r.stdout).toMatch(/^repository +.*: 0 item\(s\), 0 version\(s\), 0 B \(id [0-9a-f]{16}\)$/m);
    expect(r.stdout).toMatch(/^last run +none yet$/m);
    expect(r.stdout).toMatch(/^next run +2025-09-15 03:00:00 \+02:00/m);
  });

  it("exits 8 for an empty directory (an unmounted NAS), and for a repository other than the service's", async () => {
    const empty = await tempDir();
    const r = await runCli(["status", "--dir", empty], { env: SERVICE_ENV, now: NOW });
    expect(r.code).toBe(8);
    expect(r.stdout).toMatch(/^repository +.*: ERROR: .* is not an incus-backup repository \(is the NAS mounted\?\)/m);
    expect(r.stdout).toMatch(/^next run +2025-09-15 03:00:00 \+02:00/m);
    const dir = await fullRepo();
    const other = await runCli(["status", "--dir", dir, "--json"], { env: { ...SERVICE_ENV, INCUS_BACKUP_REPOSITORY_ID: "00000000deadbeef" }, now: NOW });
    expect(other.code).toBe(8);
    const j = JSON.parse(other.stdout) as { repository: { id: string; error: string; versions: number } };
    expect(j.repository.error).toBe(`${dir} holds repository ${j.repository.id}, not repository 00000000deadbeef that this service was set up with; nothing was written`);
    // What is there is still shown.
    expect(j.repository.versions).toBe(3);
  });

  it("exits 2 and says why when a setting is invalid", async () => {
    const dir = await fullRepo();
    const r = await runCli(["status", "--dir", dir], { env: { ...SERVICE_ENV, INCUS_BACKUP_SCHEDULE: "every night" }, now: NOW });
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/^settings +ERROR: INCUS_BACKUP_SCHEDULE "every night" is not a valid cron expression.*nothing is scheduled until this is fixed$/m);
    expect(r.stdout).toMatch(/^last run +20250914-010000/m);
  });

  it("exits 8 when the directory is missing, still showing the schedule", async () => {
    const r = await runCli(["status", "--dir", "/nonexistent/nas"], { env: SERVICE_ENV, now: NOW });
    expect(r.code).toBe(8);
    expect(r.stdout).toMatch(/^repository +\/nonexistent\/nas: ERROR: cannot open backup directory/m);
    expect(r.stdout).toMatch(/^next run +2025-09-15/m);
  });

  it.each<[string, string, unknown]>([
    ["verify.json with failures that are not a list", "state/verify.json", { started: [], finished: 2, checked: "n", failed: "none", deep: "yes" }],
    ["prune.json with a finish that is not a time", "state/prune.json", { started: "x", finished: "later", trigger: "manual", removed: 1, kept: 1, bytesFreed: 1, failed: [], interrupted: false }],
    ["daemon.json with a start that is not a time", "state/daemon.json", { host: "backup", pid: 1, started: "yesterday" }],
    ["a run record with items of the wrong types", "runs/20250914-020000.json", { version: "20250914-020000", command: "x", started: "2025-09-14T02:00:00Z", status: "ok", items: [null] }],
    ["a lock without times", "lock.json", { host: "elsewhere", pid: 5 }],
  ])("ignores a damaged state file (%s) instead of failing", async (label, file, content) => {
    const dir = await fullRepo();
    await writeFile(join(dir, file), JSON.stringify(content));
    for (const args of [["status", "--dir", dir], ["status", "--json", "--dir", dir]]) {
      const r = await runCli(args, { env: SERVICE_ENV, now: NOW });
      expect(r.stderr).toBe("");
      // The fixture's last run was partial (10); without a sound daemon.json the service never started here (12).
      expect(r.code).toBe(label.startsWith("daemon.json") ? 12 : 10);
    }
  });

  it("exits 8 for a directory that is not a repository", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "photos"));
    await writeFile(join(dir, "photos", "a.jpg"), "x");
    const r = await runCli(["status", "--dir", dir], { env: SERVICE_ENV, now: NOW });
    expect(r.code).toBe(8);
    expect(r.stdout).toMatch(/not an incus-backup repository/);
  });
});
