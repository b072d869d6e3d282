// The eight commands the user wrote in issue 3, run exactly as written against a private Incus server
// set up like a real host, on each LTS lab of the run (`npm run test:smoke` runs this file).
//
// `--dir=/mnt/nas/sysbackup/incus` becomes `--dir=<temp dir>`; the two restores that have no --dir
// get INCUS_BACKUP_DIR. `--version=20250914` matches no backup made today, so those commands run
// with today's day prefix, and the literal value is checked to fail the documented way.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checksumTree, createVolumeWithData, incusOk, labVersions, launchInstance, tracker, writeTestData, type Manifest } from "../lab/lab";
import { instanceStatus, isolatedServer, repoDir, tempDir, wrongModes } from "./helpers/server";
import { listJson, spawnEveryRun, toolOk, tool, type ToolOptions } from "./helpers/tool";

// The user's commands end to end: every run is the built tool, as a process.
spawnEveryRun();

describe.each(labVersions())("the user's commands, as written: Incus %s", (version) => {
  const track = tracker();
  let socket: string;
  /** Holds an --all backup and then an --instances one: two instance versions, one volume version. */
  let repo: string;
  let instanceData: Manifest;
  let volumeData: Manifest;
  let instanceVersions: string[];
  let volumeVersions: string[];

  const run = (args: string[], opts: ToolOptions = {}) => toolOk(args, { socket, ...opts });
  const on = () => ({ socket });

  beforeAll(async () => {
    // Commands like `backup --all` act on everything a server has: a server of their own.
    socket = await isolatedServer(track, { version });
    await launchInstance("docker01", { socket });
    volumeData = await createVolumeWithData("default", "dockge-data", { socket, attachTo: "docker01", path: "/data", sizeMiB: 1 });
    instanceData = await writeTestData("docker01", "/root/data", { socket, sizeMiB: 1 });
    repo = await repoDir(track);
    await run(["backup", "--all", `--dir=${repo}`]);
    await run(["backup", "--instances", `--dir=${repo}`]);
    const rows = await listJson(repo);
    instanceVersions = rows.filter((r) => r.type === "instance").map((r) => r.version).sort();
    volumeVersions = rows.filter((r) => r.type === "volume").map((r) => r.version).sort();
  });
  afterAll(() => track.cleanup());

  async function expectLiveDataAsBackedUp() {
    expect(await instanceStatus("docker01", on())).toBe("Running");
    expect(await checksumTree("docker01", "/root/data", on())).toEqual(instanceData);
    expect(await checksumTree("docker01", "/data", on())).toEqual(volumeData);
  }

  it("init, then backup --all --dir=PATH: every instance and volume (and the configuration), private modes", async () => {
    const dir = await tempDir(track, "ibk-repo-");
    // A umask of 0 would make files 0666 unless the tool sets the modes itself.
    const init = await run(["init", `--dir=${dir}`], { umask: 0o000 });
    expect(init.stdout).toMatch(new RegExp(`^initialized a new backup repository in ${dir} \\(id [0-9a-f]{16}\\)\n$`));
    await run(["backup", "--all", `--dir=${dir}`], { umask: 0o000 });
    const rows = await listJson(dir);
    expect(rows.map((r) => [r.type, r.project, r.name]).sort()).toEqual([
      ["database", "", "server"],
      ["instance", "default", "docker01"],
      ["volume", "default", "dockge-data"],
    ]);
    expect(rows.find((r) => r.type === "volume")?.pool).toBe("default");
    expect(new Set(rows.map((r) => r.version)).size).toBe(1);
    for (const r of rows) expect(r.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(await wrongModes(dir)).toEqual([]);
  });

  it("backup --instances --dir=PATH: instances only", async () => {
    const dir = await repoDir(track);
    await run(["backup", "--instances", `--dir=${dir}`]);
    expect((await listJson(dir)).map((r) => [r.type, r.name])).toEqual([["instance", "docker01"]]);
    expect(await wrongModes(dir)).toEqual([]);
  });

  it("backup --volumes --dir=PATH: custom volumes only", async () => {
    const dir = await repoDir(track);
    await run(["backup", "--volumes", `--dir=${dir}`]);
    expect((await listJson(dir)).map((r) => [r.type, r.pool, r.name])).toEqual([["volume", "default", "dockge-data"]]);
    expect(await wrongModes(dir)).toEqual([]);
  });

  it("list --dir=PATH: one row per item with its version count and latest version", async () => {
    const r = await run(["list", `--dir=${repo}`]);
    const lines = r.stdout.trimEnd().split("\n").map((l) => l.trim().split(/\s{2,}/));
    expect(lines[0]).toEqual(["TYPE", "PROJECT", "NAME", "VERSIONS", "LATEST", "SIZE"]);
    const rows = lines.slice(1).map((cells) => cells.slice(0, 5));
    expect(rows).toContainEqual(["instance", "default", "docker01", "2", instanceVersions[1]]);
    expect(rows).toContainEqual(["volume", "default", "default/dockge-data", "1", volumeVersions[0]]);
    expect(rows.map((row) => row[0]).sort()).toEqual(["database", "instance", "volume"]);
  });

  it("list --instances --dir=PATH: instances only", async () => {
    const r = await run(["list", "--instances", `--dir=${repo}`]);
    const lines = r.stdout.trimEnd().split("\n").map((l) => l.trim().split(/\s{2,}/));
    expect(lines[0]).toEqual(["TYPE", "PROJECT", "NAME", "VERSIONS", "LATEST", "SIZE"]);
    expect(lines.slice(1).map((cells) => cells.slice(0, 5))).toEqual([["instance", "default", "docker01", "2", instanceVersions[1]]]);
  });

  it("restore --all --dir=PATH: brings back a deleted instance and volume, running, with their data", async () => {
    await incusOk(["delete", "--force", "docker01"], on());
    await incusOk(["storage", "volume", "delete", "default", "dockge-data"], on());
    const r = await run(["restore", "--all", `--dir=${repo}`]);
    expect(r.stdout).toMatch(/create\s+volume default\/default\/dockge-data/);
    expect(r.stdout).toMatch(/create\s+instance default\/docker01/);
    await expectLiveDataAsBackedUp();
  });

  it("restore --instance --name=docker01 --version=DAY (INCUS_BACKUP_DIR): the day's latest backup", async () => {
    const day = instanceVersions[1]!.slice(0, 8);
    const env = { INCUS_BACKUP_DIR: repo };
    await incusOk(["delete", "--force", "docker01"], on());
    const r = await run(["restore", "--instance", "--name=docker01", `--version=${day}`], { env });
    expect(r.stdout).toContain(`instance default/docker01: --version ${day} picked ${instanceVersions[1]}`);
    await expectLiveDataAsBackedUp();

    // As the user typed it: no backup of that day, so exit 5 and the versions there are.
    const literal = await tool(["restore", "--instance", "--name=docker01", "--version=20250914"], { socket, env });
    expect(literal.code).toBe(5);
    expect(literal.stderr).toMatch(/no version matching "20250914"; available: /);
    for (const v of instanceVersions) expect(literal.stderr).toContain(v);
  });

  it("restore --volume --name=dockge-data --version=DAY (INCUS_BACKUP_DIR), confirmed on a terminal: in use by a running instance", async () => {
    const day = volumeVersions[0]!.slice(0, 8);
    const env = { INCUS_BACKUP_DIR: repo };
    await incusOk(["exec", "docker01", "--", "sh", "-c", "echo added later >/data/added-since-backup"], on());
    const r = await run(["restore", "--volume", "--name=dockge-data", `--version=${day}`], {
      env,
      tty: true,
      answer: { when: /\[y\/N\]/, text: "y\r" },
    });
    expect(r.stdout).toContain(`--version ${day} picked ${volumeVersions[0]}`);
    // The plan, before the question, names the instance it stops and starts again.
    expect(r.stdout).toMatch(/REPLACE\s+volume default\/default\/dockge-data .*stops default\/docker01 and starts default\/docker01 again/);
    await expectLiveDataAsBackedUp();

    const literal = await tool(["restore", "--volume", "--name=dockge-data", "--version=20250914"], { socket, env });
    expect(literal.code).toBe(5);
    expect(literal.stderr).toMatch(/no version matching "20250914"; available: /);
    expect(literal.stderr).toContain(volumeVersions[0]);
    // Restores write journals and take the lock: still private, with the usual umask.
    expect(await wrongModes(repo)).toEqual([]);
  });
  it("backup --json and restore --json: summaries a program can read; a replacing restore with --json needs --force", async () => {
    const dir = await repoDir(track);
    const b = await run(["backup", "--instances", "--json", `--dir=${dir}`]);
    const summary = JSON.parse(b.stdout) as { version: string; status: string; exitCode: number; items: Array<Record<string, unknown>> };
    expect(summary).toMatchObject({ status: "ok", exitCode: 0, items: [{ type: "instance", project: "default", name: "docker01", ok: true }] });
    expect(summary.version).toMatch(/^\d{8}-\d{6}$/);
    expect(summary.items[0]!.bytes).toBeGreaterThan(0);

    const args = ["restore", "--instance", "--name", "docker01", "--json", `--dir=${dir}`];
    const dry = JSON.parse((await run([...args, "--dry-run"])).stdout) as { plan: Array<Record<string, unknown>>; result: unknown };
    expect(dry.plan).toEqual([expect.objectContaining({ action: "replace", type: "instance", project: "default", name: "docker01", version: summary.version, start: true })]);
    expect(dry.result).toBeNull();
    const refused = await tool(args, { socket });
    expect(refused.code).toBe(6);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toMatch(/with --json, a restore that replaces existing things needs --force; nothing was changed/);
    const done = JSON.parse((await run([...args, "--force"])).stdout) as { result: { exitCode: number; items: Array<Record<string, unknown>> } };
    expect(done.result).toMatchObject({ exitCode: 0, items: [{ type: "instance", name: "docker01", ok: true }] });
    await expectLiveDataAsBackedUp();
  });
});
