// Monitoring end to end on the lab: the metrics file of real backup and prune runs, read by a
// Prometheus text parser, and status's exit codes 10, 11 and 12 for a partial run, an overdue
// schedule and a service that is gone. One small instance and the database, on the primary lab.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchInstance, tracker, uniqueName } from "../lab/lab";
import { DirectoryStore } from "../../src/repository/directory";
import type { DaemonState } from "../../src/engine/daemon";
import { processStart } from "../../src/local/identity";
import { parseMetrics, sample } from "../unit/helpers/prometheus";
import { repoDir, tempDir } from "./helpers/server";
import { tool, toolOk } from "./helpers/tool";

describe("monitoring: the metrics file and status's exit codes", () => {
  const track = tracker();
  const name = uniqueName("mon");
  let repo: string;
  let metrics: string;
  const env = () => ({ INCUS_BACKUP_METRICS_FILE: metrics });
  const read = async () => parseMetrics(await readFile(metrics, "utf8"));
  const inst = () => ({ kind: "instance", project: "default", name });
  const db = { kind: "database", name: "server" };

  beforeAll(async () => {
    await launchInstance(name, { track });
    repo = await repoDir(track);
    metrics = join(await tempDir(track, "ibk-metrics-"), "incus_backup.prom");
  });
  afterAll(() => track.cleanup());

  it("a backup run writes the metrics file: each item's last success, the run's status, the repository's size", async () => {
    const before = Date.now() / 1000;
    await toolOk(["backup", "--database", "--instances", "--name", name, `--dir=${repo}`], { env: env() });
    const m = await read();
    expect(sample(m, "incus_backup_repository_readable")).toBe(1);
    expect(sample(m, "incus_backup_last_run_status", { status: "ok" })).toBe(1);
    expect(sample(m, "incus_backup_last_run_status", { status: "partial" })).toBe(0);
    expect(sample(m, "incus_backup_last_run_items", { result: "ok" })).toBe(2);
    for (const labels of [inst(), db]) {
      expect(sample(m, "incus_backup_item_last_success_timestamp_seconds", labels)).toBeGreaterThan(before - 1);
      expect(sample(m, "incus_backup_item_last_success_bytes", labels)).toBeGreaterThan(0);
      expect(sample(m, "incus_backup_item_last_success_duration_seconds", labels)).toBeGreaterThan(0);
      expect(sample(m, "incus_backup_item_consecutive_failures", labels)).toBe(0);
    }
    const list = JSON.parse((await toolOk(["list", "--json", `--dir=${repo}`])).stdout) as Array<{ size: number }>;
    expect(sample(m, "incus_backup_repository_size_bytes")).toBe(list.reduce((n, r) => n + r.size, 0));
  });

  it("a partial run (the instance's directory in the repository is a file): status 10, the metrics count the failure, prune rewrites them", async () => {
    // Where the instance's versions go, a file: its next version cannot be made; the database's can.
    const itemDir = join(repo, "instances", "default", name);
    const aside = join(await tempDir(track, "ibk-aside-"), name);
    await rename(itemDir, aside);
    await writeFile(itemDir, "in the way\n");
    try {
      await toolOk(["backup", "--database", "--instances", "--name", name, `--dir=${repo}`], { env: env() }, 3);
    } finally {
      await rm(itemDir, { force: true });
      await rename(aside, itemDir);
    }
    const status = await tool(["status", "--json", `--dir=${repo}`]);
    expect(status.code).toBe(10);
    expect((JSON.parse(status.stdout) as { problems: Array<{ code: number }> }).problems.map((p) => p.code)).toEqual([10]);

    await toolOk(["prune", "--keep-last", "5", `--dir=${repo}`], { env: env() });
    const m = await read();
    expect(sample(m, "incus_backup_last_run_status", { status: "partial" })).toBe(1);
    expect(sample(m, "incus_backup_last_run_items", { result: "failed" })).toBe(1);
    expect(sample(m, "incus_backup_item_consecutive_failures", inst())).toBe(1);
    expect(sample(m, "incus_backup_item_consecutive_failures", db)).toBe(0);
    expect(sample(m, "incus_backup_item_last_success_timestamp_seconds", inst())).toBeLessThan(sample(m, "incus_backup_item_last_success_timestamp_seconds", db)!);
    expect(sample(m, "incus_backup_last_prune_removed_versions")).toBe(0);
  });

  it("status exits 11 when the last runs are older than the schedule allows, and 12 when the service's process is gone", async () => {
    // The runs moved three days back, through the tool's own store; the schedule's previous time two hours ago.
    const { repo: store } = await DirectoryStore.open(repo, { create: false });
    const shift = (iso: string | undefined) => (iso === undefined ? undefined : new Date(Date.parse(iso) - 3 * 86400_000).toISOString());
    for (const r of await store.listRuns()) await store.saveRun({ ...r, started: shift(r.started)!, ...(r.finished ? { finished: shift(r.finished)! } : {}) });
    const slot = new Date(Date.now() - 2 * 3600_000);
    const install = randomBytes(8).toString("hex");
    const service = {
      INCUS_BACKUP_SCHEDULE: `${slot.getUTCMinutes()} ${slot.getUTCHours()} * * *`,
      INCUS_BACKUP_TZ: "UTC",
      INCUS_BACKUP_INSTALL_ID: install,
    };
    const daemon = (pid: number): DaemonState => ({
      host: "backup",
      pid,
      install,
      ...(processStart(pid) ? { start: processStart(pid)! } : {}),
      started: new Date(Date.now() - 5 * 86400_000).toISOString(),
      schedule: service.INCUS_BACKUP_SCHEDULE,
      tz: "UTC",
      updated: new Date().toISOString(),
    });
    const codes = async () => {
      const r = await tool(["status", "--json", `--dir=${repo}`], { env: service });
      return { code: r.code, problems: (JSON.parse(r.stdout) as { problems: Array<{ code: number; message: string }> }).problems };
    };

    // A service that runs (this test's own process stands for it): overdue, and the last run partial.
    await store.saveState("daemon", daemon(process.pid));
    const late = await codes();
    expect(late.code).toBe(11);
    expect(late.problems.map((p) => p.code)).toEqual([11, 10]);
    expect(late.problems[0]!.message).toMatch(/^overdue: a run was due at /);

    // Its process gone.
    const gone = spawnSync("true").pid;
    await store.saveState("daemon", daemon(gone));
    const down = await codes();
    expect(down.code).toBe(12);
    expect(down.problems.map((p) => p.code)).toEqual([12, 11, 10]);
    expect(down.problems[0]!.message).toBe(`the service is not running: pid ${gone} on backup is gone`);
    const text = await tool(["status", `--dir=${repo}`], { env: service });
    expect(text.code).toBe(12);
    expect(text.stdout).toMatch(/^health +3 problem\(s\), exit 12$/m);
  });

  it("a metrics file that cannot be written is a warning; the backup still exits 0", async () => {
    const dir = join(await tempDir(track, "ibk-metrics-"), "missing");
    const r = await toolOk(["backup", "--database", `--dir=${repo}`], { env: { INCUS_BACKUP_METRICS_FILE: join(dir, "x.prom") } });
    expect(r.stderr).toMatch(/warning: could not write the metrics file: .*x\.prom/);
    await mkdir(dir);
  });
});
