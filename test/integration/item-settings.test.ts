// Per-item settings as Incus config keys (user.incus-backup.exclude|mode|snapshots), service-wide
// exclusions, ephemeral instances skipped; shown in the plan (--dry-run), the summary, status and
// list. And restores of several items that name what comes from an older run than the latest.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LAB_BTRFS_POOL, incusOk, labSocket, labVersions, launchInstance, tracker, uniqueName } from "../lab/lab";
import { instanceStatus, repoDir } from "./helpers/server";
import { listJson, tool, toolOk } from "./helpers/tool";

describe.each(labVersions())("per-item settings and exclusions, Incus %s", (version) => {
  const track = tracker();
  const project = uniqueName("ibk-set");
  const socket = labSocket(version);
  const p = { project, socket };
  let dir: string;
  const env = { INCUS_BACKUP_EXCLUDE: "ci-*" };
  const run = (args: string[], code = 0) => toolOk([...args, "--project", project, `--dir=${dir}`], { env, socket }, code);

  beforeAll(async () => {
    track.project(project, { socket });
    // The default project's profiles (a NIC on the managed bridge) and images.
    await incusOk(["project", "create", project, "-c", "features.images=false", "-c", "features.profiles=false"], { socket });
    await launchInstance("db", { track, ...p, config: { "user.incus-backup.mode": "stop", "user.incus-backup.snapshots": "true" } });
    await incusOk(["snapshot", "create", "db", "before-upgrade"], p);
    await launchInstance("web", { track, ...p });
    await launchInstance("tmp", { track, ...p, start: false, config: { "user.incus-backup.exclude": "true" } });
    await launchInstance("ci-1", { track, ...p, start: false });
    track.instance("eph", p);
    await incusOk(["launch", "busybox", "eph", "--ephemeral"], p);
    track.volume("default", "scratch", p);
    await incusOk(["storage", "volume", "create", "default", "scratch", "user.incus-backup.exclude=true"], p);
    track.volume(LAB_BTRFS_POOL, "data", p);
    await incusOk(["storage", "volume", "create", LAB_BTRFS_POOL, "data", "user.incus-backup.snapshots=true"], p);
    await incusOk(["storage", "volume", "snapshot", "create", LAB_BTRFS_POOL, "data", "snap0"], p);
    dir = await repoDir(track);
  });
  afterAll(() => track.cleanup());

  it("--dry-run shows what would be backed up and how, and what is left out and why, and changes nothing", async () => {
    const r = await run(["backup", "--instances", "--volumes", "--dry-run"]);
    const out = r.stdout;
    expect(out).toContain("would back up 3 item(s), skip 4:");
    expect(out).toContain(`  instance ${project}/db: stop (its user.incus-backup.* key), with snapshots (its user.incus-backup.* key)`);
    expect(out).toContain(`  instance ${project}/web: live, without snapshots`);
    expect(out).toContain(`  volume ${project}/${LAB_BTRFS_POOL}/data: with snapshots (its user.incus-backup.* key)`);
    expect(out).toContain(`  skip instance ${project}/tmp: user.incus-backup.exclude=true`);
    expect(out).toContain(`  skip instance ${project}/ci-1: excluded by "ci-*"`);
    expect(out).toContain(`  skip instance ${project}/eph: ephemeral`);
    expect(out).toContain(`  skip volume ${project}/default/scratch: user.incus-backup.exclude=true`);
    const j = JSON.parse((await run(["backup", "--instances", "--volumes", "--dry-run", "--json", "--mode", "live", "--exclude-project", "nothing-*"])).stdout) as {
      items: Array<{ name: string; mode?: string; modeFrom?: string }>;
      skipped: Array<{ name: string; reason: string }>;
    };
    expect(j.items.find((i) => i.name === "db")).toMatchObject({ mode: "live", modeFrom: "command line" });
    expect(j.skipped.map((s) => s.name).sort()).toEqual(["ci-1", "eph", "scratch", "tmp"]);
    // A whole project left out, service-wide.
    const none = await toolOk(["backup", "--instances", "--volumes", "--project", project, "--dry-run", `--dir=${dir}`], { socket, env: { INCUS_BACKUP_EXCLUDE_PROJECTS: "ibk-set*" } });
    expect(none.stdout).toContain("would back up 0 item(s), skip 7:");
    expect(none.stdout).toContain(`skip instance ${project}/web: project ${project} is excluded ("ibk-set*")`);
    expect(await listJson(dir)).toEqual([]);
  });

  it("a backup follows the keys: db stopped for its backup and with its snapshots, the excluded and ephemeral ones skipped; status and list say so", async () => {
    const r = await run(["backup", "--instances", "--volumes"]);
    expect(r.stdout).toMatch(/backup \d{8}-\d{6}: 3 of 3 item\(s\) backed up/);
    expect(r.stdout).toContain(`  skipped: instance ${project}/eph: ephemeral`);
    expect(r.stderr).toContain(`skipped instance ${project}/tmp: user.incus-backup.exclude=true`);
    expect(await instanceStatus("db", p)).toBe("Running");
    const rows = await listJson(dir);
    expect(rows.map((x) => x.name).sort()).toEqual(["data", "db", "web"]);
    const manifest = async (name: string) => JSON.parse(await readFile(join(rows.find((x) => x.name === name)!.path, "manifest.json"), "utf8")) as { options: Record<string, unknown> };
    expect((await manifest("db")).options).toMatchObject({ stopped: true, instance_only: false });
    expect((await manifest("web")).options).toMatchObject({ stopped: false, instance_only: true });
    expect((await manifest("data")).options).toMatchObject({ volume_only: false });

    const status = (await toolOk(["status", `--dir=${dir}`], { socket })).stdout;
    expect(status).toMatch(new RegExp(`ok +instance ${project}/db .*\\(stopped, with snapshots\\)`));
    expect(status).toContain(`skipped instance ${project}/eph: ephemeral`);
    expect(status).toContain(`skipped instance ${project}/ci-1: excluded by "ci-*"`);
    const list = await toolOk(["list", `--dir=${dir}`], { socket });
    expect(list.stderr).toContain(`: instance ${project}/eph: ephemeral`);
    expect(list.stderr).toMatch(/not backed up by the last run \(\d{8}-\d{6}\): volume .*\/default\/scratch: user\.incus-backup\.exclude=true/);
  });

  it("an excluded instance named with --name is backed up, with a note", async () => {
    const r = await run(["backup", "--instances", "--name", "tmp"]);
    expect(r.stdout).toContain("1 of 1 item(s) backed up");
    expect(r.stderr).toContain("user.incus-backup.exclude=true, but it was named with --name: backed up");
  });

  it("a restore of several items names each one that comes from an older run than the latest, and restores the snapshots", async () => {
    await run(["backup", "--instances", "--name", "web"]);
    const versions = [...new Set((await listJson(dir)).map((x) => x.version))].sort();
    const [first, , latest] = versions as [string, string, string];
    expect(versions).toHaveLength(3);
    const r = await run(["restore", "--instances", "--volumes", "--dry-run"]);
    expect(r.stdout).toContain(`instance ${project}/db comes from ${first}, an older run than ${latest}: that run has no complete backup of it`);
    expect(r.stdout).toContain(`volume ${project}/${LAB_BTRFS_POOL}/data comes from ${first}, an older run than ${latest}`);
    expect(r.stdout).not.toMatch(/instance \S+\/web comes from/);
    // The snapshots came along where the key asked for them.
    await run(["restore", "--instances", "--name", "db", "--target-name", "db-copy", "--no-start"]);
    track.instance("db-copy", p);
    expect(await incusOk(["snapshot", "list", "db-copy", "--format", "csv", "--columns", "n"], p)).toContain("before-upgrade");
  });

  it("a bad service-wide setting is a usage error naming the variable; nothing is written", async () => {
    const r = await tool(["backup", "--all", `--dir=${dir}`], { socket, env: { INCUS_BACKUP_MODE: "paused" } });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe('error: INCUS_BACKUP_MODE="paused": use stop or live');
  });
});
