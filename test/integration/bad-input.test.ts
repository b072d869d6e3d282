// Bad input: unsafe names, a missing or unwritable --dir, unknown flags. One clear line, the documented code, nothing changed.
import { execFile } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, launchInstance, tracker, uniqueName } from "../lab/lab";
import { type FileState, tempDir, treeState, repoDir, expectOneLineError } from "./helpers/server";
import { tool, toolOk, type ToolOptions } from "./helpers/tool";

const sh = promisify(execFile);

// The exit codes of src/errors.ts, as documented.
const USAGE = 2;
const REPOSITORY = 8;

describe("bad input", () => {
  const track = tracker();
  const name = uniqueName("badinput");
  let dir: string;
  let repoBefore: FileState[];
  let pidBefore: number;

  const state = async () => ({
    pid: ((await apiGet(`/1.0/instances/${name}/state`)) as { pid: number }).pid,
    serverBackups: (await apiGet(`/1.0/instances/${name}/backups`)) as string[],
  });

  /**
   * Runs the tool, expects the code and one "error: ..." line matching `message`, and returns that
   * line. Nothing on stdout, unless `plan` (a restore prints its plan before it acts).
   */
  async function refused(args: string[], code: number, message: RegExp, opts: ToolOptions & { plan?: boolean } = {}): Promise<string> {
    const r = await tool(args, opts);
    expect(r.code, `${args.join(" ")}\n${r.stderr}`).toBe(code);
    const line = expectOneLineError(r);
    expect(line).toMatch(message);
    if (opts.plan) expect(r.stdout).toMatch(/^Restore plan:\n/);
    else expect(r.stdout).toBe("");
    return line;
  }

  beforeAll(async () => {
    await launchInstance(name, { track });
    dir = await repoDir(track);
    await toolOk(["backup", "--instances", "--name", name, `--dir=${dir}`]);
    repoBefore = await treeState(dir);
    pidBefore = (await state()).pid;
  });
  afterAll(() => track.cleanup());

  async function expectNothingChanged() {
    expect(await treeState(dir)).toEqual(repoBefore);
    expect(await state()).toEqual({ pid: pidBefore, serverBackups: [] });
  }

  it("unsafe or malformed --name values: usage error (2)", async () => {
    const d = `--dir=${dir}`;
    await refused(["backup", "--instances", "--name", "../x", d], USAGE, /invalid name "\.\.\/x"/);
    await refused(["backup", "--volumes", "--name", "../x", d], USAGE, /invalid pool name "\.\."/);
    await refused(["backup", "--all", "--name", "../x", d], USAGE, /invalid pool name "\.\."/);
    await refused(["restore", "--instance", "--name", "../x", d], USAGE, /invalid name "\.\.\/x"/);
    await refused(["restore", "--volume", "--name=../x", d], USAGE, /invalid pool name "\.\."/);
    await refused(["backup", "--volumes", "--name", "..", d], USAGE, /invalid name "\.\."/);

    await refused(["backup", "--instances", "--name", "", d], USAGE, /--name must not be empty/);
    await refused(["restore", "--volume", "--name", "", d], USAGE, /--name must not be empty/);
    await refused(["backup", "--instances", "--name=", d], USAGE, /option --name needs a value/);
    await refused(["restore", "--instance", "--name", d], USAGE, /option --name needs a value/);

    await refused(["backup", "--volumes", "--name", "a/b/c", d], USAGE, /invalid volume "a\/b\/c": use NAME or POOL\/NAME/);
    await refused(["restore", "--volume", "--name", "a/b/c", d], USAGE, /invalid volume "a\/b\/c"/);
    await refused(["backup", "--instances", "--name", "a/b/c", d], USAGE, /invalid name "a\/b\/c"/);
    await refused(["restore", "--instance", "--name", "a/b/c", "--force", d], USAGE, /invalid name "a\/b\/c"/);

    await refused(["restore", "--instance", "--name", name, "--version", "2025-09", "--force", d], USAGE, /invalid --version "2025-09"/);
    await refused(["restore", "--instance", "--name", name, "--target-name", "../x", "--force", d], USAGE, /invalid --target-name/);
    await expectNothingChanged();
  });

  it("no --repo, --dir, INCUS_BACKUP_REPO or INCUS_BACKUP_DIR: usage error naming them", async () => {
    const both = /no repository: pass --repo \(restic:LOCATION or a directory\) or --dir DIR, or set INCUS_BACKUP_REPO or INCUS_BACKUP_DIR/;
    await refused(["backup", "--instances", "--name", name], USAGE, both);
    await refused(["backup", "--all"], USAGE, both, { env: { INCUS_BACKUP_DIR: "" } });
    await refused(["list"], USAGE, both);
    await refused(["restore", "--instance", "--name", name, "--force"], USAGE, both);
    await refused(["backup", "--all", "--dir"], USAGE, /option --dir needs a value/);
    await refused(["backup", "--all", "--dir="], USAGE, /option --dir needs a value/);
    await refused(["backup", "--all", "--repo"], USAGE, /option --repo needs a value/);
    await refused(["backup", "--all", "--repo=restic:"], USAGE, /--repo=restic: needs a restic repository after the colon/);
    await refused(["list", "--repo=sftp:backup@nas:/srv/restic"], USAGE, /for a restic repository write restic:sftp:backup@nas:\/srv\/restic/);
    await refused(["list", "--repo=/a", "--dir=/b"], USAGE, /give --repo or --dir, not both/);
    await expectNothingChanged();
  });

  it("a --dir that does not exist (an unmounted NAS): repository error (8), nothing created", async () => {
    const missing = join(dir, "not-mounted", "incus");
    for (const args of [["backup", "--all"], ["list"], ["restore", "--instance", "--name", name, "--force"]]) {
      await refused([...args, `--dir=${missing}`], REPOSITORY, /cannot open backup directory .*not-mounted\/incus: no such file or directory/);
    }
    // INCUS_BACKUP_DIR is taken the same way.
    await refused(["backup", "--all"], REPOSITORY, /no such file or directory/, { env: { INCUS_BACKUP_DIR: missing } });
    await expectNothingChanged();
  });

  it("an empty --dir (the NAS not mounted, its mount point left): repository error (8) for every command, nothing written", async () => {
    const mountPoint = await tempDir(track, "ibk-unmounted-");
    const d = `--dir=${mountPoint}`;
    const message = new RegExp(`^error: ${mountPoint} is not an incus-backup repository \\(is the NAS mounted\\?\\); nothing was written \\(make a new one with \`incus-backup init --dir ${mountPoint}\`\\)$`);
    await refused(["backup", "--all", d], REPOSITORY, message);
    await refused(["backup", "--instances", "--name", name, "--stop", d], REPOSITORY, message);
    await refused(["prune", "--keep-last", "1", d], REPOSITORY, message);
    await refused(["restore", "--instance", "--name", name, "--force", d], REPOSITORY, message);
    await refused(["restore", "--all", "--force", d], REPOSITORY, message);
    await refused(["list", d], REPOSITORY, message);
    await refused(["verify", d], REPOSITORY, message);
    await refused(["unlock", d], REPOSITORY, message);
    // status reports it (it shows what it can) and exits 8 too.
    const s = await tool(["status", d]);
    expect(s.code).toBe(REPOSITORY);
    expect(s.stdout).toMatch(/^repository +.*: ERROR: .* is not an incus-backup repository \(is the NAS mounted\?\)/m);
    expect(await treeState(mountPoint)).toEqual([]);
    await expectNothingChanged();
  });

  it("a --dir that is not a repository and not empty: repository error (8), left alone", async () => {
    const other = await tempDir(track, "ibk-other-");
    await writeFile(join(other, "somebody-elses-file"), "keep me\n");
    const before = await treeState(other);
    await refused(["backup", "--instances", "--name", name, `--dir=${other}`], REPOSITORY, /is not an incus-backup repository/);
    expect(await treeState(other)).toEqual(before);
    await expectNothingChanged();
  });

  it("an unwritable --dir (read-only mount, which stops root too): repository error (8), nothing changed", async () => {
    // chmod does not stop root; a read-only bind mount of the repository does.
    const ro = await tempDir(track, "ibk-ro-");
    await sh("mount", ["--bind", dir, ro]);
    track.defer(() => sh("umount", [ro]));
    await sh("mount", ["-o", "remount,bind,ro", ro]);
    await refused(["backup", "--instances", "--name", name, `--dir=${ro}`], REPOSITORY, /read-only file system/);
    await refused(["backup", "--all", `--dir=${ro}`], REPOSITORY, /read-only file system/);
    // A restore that replaces must write its journal: refused before the instance is touched.
    await refused(["restore", "--instance", "--name", name, "--force", `--dir=${ro}`], REPOSITORY, /read-only file system/, { plan: true });
    // An empty read-only directory cannot become a repository either.
    const empty = await tempDir(track, "ibk-ro-empty-");
    await mkdir(join(empty, "mnt"));
    await sh("mount", ["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", join(empty, "mnt")]);
    track.defer(() => sh("umount", [join(empty, "mnt")]));
    await refused(["init", `--dir=${join(empty, "mnt")}`], REPOSITORY, /read-only file system/);
    await refused(["backup", "--all", `--dir=${join(empty, "mnt")}`], REPOSITORY, /is not an incus-backup repository/);
    await expectNothingChanged();
  });

  it("unknown flags and commands: usage error (2) naming them", async () => {
    const d = `--dir=${dir}`;
    await refused(["backup", "--all", "--bogus", d], USAGE, /unknown arguments: --bogus/);
    await refused(["restore", "--instance", "--name", name, "--frobnicate", "--force", d], USAGE, /unknown arguments: --frobnicate/);
    await refused(["list", "--nope", d], USAGE, /unknown arguments: --nope/);
    await refused(["backup", "--instances", "--compression", "rar", d], USAGE, /rar/);
    await refused(["frobnicate", d], USAGE, /not a valid subcommand name: frobnicate/);
    await refused(["backup", d], USAGE, /say what to work on/);
    await expectNothingChanged();
  });
});
