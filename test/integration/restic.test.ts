// Issue 15: restic as a second backend. On servers set up like real hosts (a NIC on the managed
// bridge, snapshots, cloud-init, dir and btrfs pools), on both LTS versions, with restic 0.14 (the
// host's) and 0.18 (the image's): the round trip, a replace, disaster recovery onto an empty
// server, retention, and the faults (wrong or no password, no repository, no restic, a lock held
// by another restic, the tool killed with kill -9 mid-backup).
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { checksumTree, createVolumeWithData, incusOk, labSocket, labVersions, tracker, uniqueName, writeTestData } from "../lab/lab";
import { FaultProxy, killTool, reached, req } from "./helpers/faults";
import { duplicateMacs, temporaryLeftovers } from "./helpers/realistic";
import { macsOf, launchRealistic, snapshotNames } from "./helpers/realistic";
import { resticBinaries, resticCli, resticRepo, toolSnapshots } from "./helpers/restic";
import { instanceStatus, isolatedServer } from "./helpers/server";
import { foreignPid, inPidNamespace, startTool, tool, toolOk, type ListRow } from "./helpers/tool";

const runFile = promisify(execFile);
const binaries = await resticBinaries();
// Each LTS version with another restic: both versions of each are covered.
const matrix = labVersions().map((v, i) => [v, binaries[i % binaries.length]!.version, binaries[i % binaries.length]!] as const);

async function list(repo: string, env: Record<string, string>, socket?: string): Promise<ListRow[]> {
  return JSON.parse((await toolOk(["list", "--json", `--repo=${repo}`], { env, ...(socket ? { socket } : {}) })).stdout) as ListRow[];
}

/** Restic processes the tool started for this item (their arguments carry its tag). */
async function resticChildren(itemName: string): Promise<number[]> {
  const { stdout } = await runFile("ps", ["-eo", "pid=,args="]);
  return stdout
    .split("\n")
    .filter((l) => /restic backup --stdin/.test(l) && l.includes(itemName))
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

describe.each(matrix)("restic backend: Incus %s, restic %s", (version, _restic, restic) => {
  const track = tracker();
  afterAll(() => track.cleanup());
  const tag = `[${version}/restic ${restic.version}]`;

  it("init, backup, list, replace in place: data, MACs, snapshots and running state come back", async () => {
    const socket = labSocket(version);
    const on = { socket };
    const r = await resticRepo(track, restic);
    const name = uniqueName("rs-web");
    await launchRealistic(name, { socket, track, pool: "btrfs", snapshots: 1 });
    const data = await writeTestData(name, "/root/data", { sizeMiB: 8, socket });
    const macs = await macsOf(name, socket);

    // A second init of the same repository leaves it as it is.
    const again = await toolOk(["init", `--repo=${r.repo}`, "--json"], { env: r.env });
    expect(JSON.parse(again.stdout)).toMatchObject({ location: r.repo, created: false });

    const b = await toolOk(["backup", "--instances", "--snapshots", "--name", name, `--repo=${r.repo}`, "--json"], { socket, env: r.env });
    const result = JSON.parse(b.stdout) as { status: string; items: Array<{ ok: boolean }> };
    expect(result.status).toBe("ok");
    const rows = await list(r.repo, r.env);
    expect(rows.map((x) => `${x.type}:${x.name}`)).toEqual([`instance:${name}`]);
    // One restic snapshot per file, plus the manifest: nothing else, and restic compresses the raw tar.
    const snaps = await toolSnapshots(r, restic);
    expect(snaps.filter((s) => s.tags.includes("incus-backup-manifest"))).toHaveLength(1);
    expect(snaps.filter((s) => s.tags.includes("incus-backup-data"))).toHaveLength(1);

    await incusOk(["exec", name, "--", "sh", "-c", "echo changed >/root/data/small-1.txt && rm /root/data/small-2.txt"], on);
    const restore = await toolOk(["restore", "--instance", "--name", name, "--force", `--repo=${r.repo}`], { socket, env: r.env, timeoutMs: 300_000 });
    console.log(`${tag} replace:\n${restore.stdout.trim()}`);
    expect(restore.stdout).toMatch(/REPLACE\s+instance/);
    expect(await instanceStatus(name, on)).toBe("Running");
    expect(await checksumTree(name, "/root/data", on)).toEqual(data);
    expect(await macsOf(name, socket)).toEqual(macs);
    expect(await snapshotNames(name, socket)).toEqual(["snap0"]);

    const v = await toolOk(["verify", "--deep", `--repo=${r.repo}`], { env: r.env });
    expect(v.stdout).toMatch(/verify: 1 of 1 version\(s\) ok \(deep\)/);
  });

  it("disaster recovery: backup --all --images of one server, restore --all onto a freshly installed one", async () => {
    const source = await isolatedServer(track, { version });
    const r = await resticRepo(track, restic);
    const name = uniqueName("rs-dr");
    const volume = uniqueName("rs-vol");
    // The extra servers are removed whole by track.cleanup(): their instances need no tracking.
    await launchRealistic(name, { socket: source, track: tracker(), pool: "btrfs", snapshots: 1 });
    const data = await writeTestData(name, "/root/data", { sizeMiB: 4, socket: source });
    const volumeData = await createVolumeWithData("default", volume, { socket: source, attachTo: name, path: "/mnt/vol", sizeMiB: 1 });
    await incusOk(["profile", "create", "rs-extra"], { socket: source });
    await incusOk(["profile", "set", "rs-extra", "user.from", "restic"], { socket: source });

    const fingerprint = (await incusOk(["image", "list", "busybox", "-f", "csv", "-c", "F"], { socket: source })).trim();
    await toolOk(["backup", "--all", "--images", `--repo=${r.repo}`], { socket: source, env: r.env, timeoutMs: 300_000 });
    const rows = await list(r.repo, r.env);
    expect(rows.map((x) => x.type).sort()).toEqual(["database", "image", "instance", "volume"]);

    // The first server is gone; a new one has nothing but what an install makes (the lab's new
    // servers get the test image: it goes, so that the restore brings it back).
    const target = await isolatedServer(track, { version });
    await incusOk(["image", "delete", "busybox"], { socket: target });
    const res = await toolOk(["restore", "--all", "--force", `--repo=${r.repo}`], { socket: target, env: r.env, timeoutMs: 300_000 });
    console.log(`${tag} disaster recovery:\n${res.stdout.trim()}`);
    expect(await instanceStatus(name, { socket: target })).toBe("Running");
    expect(await checksumTree(name, "/root/data", { socket: target })).toEqual(data);
    expect(await checksumTree(name, "/mnt/vol", { socket: target })).toEqual(volumeData);
    expect((await incusOk(["profile", "get", "rs-extra", "user.from"], { socket: target })).trim()).toBe("restic");
    expect((await incusOk(["image", "list", "-f", "csv", "-c", "F"], { socket: target })).trim()).toBe(fingerprint);
  });

  it("retention: prune keeps what the policy says, forgets the rest in restic and frees the space", async () => {
    const socket = labSocket(version);
    const r = await resticRepo(track, restic);
    const vol = uniqueName("rs-keep");
    track.volume("default", vol, { socket });
    await incusOk(["storage", "volume", "create", "default", vol], { socket });
    for (let i = 0; i < 3; i++) await toolOk(["backup", "--volumes", "--name", vol, `--repo=${r.repo}`], { socket, env: r.env });
    expect(await list(r.repo, r.env)).toHaveLength(3);
    const dry = await toolOk(["prune", "--keep-last", "1", "--dry-run", `--repo=${r.repo}`], { env: r.env });
    expect(dry.stdout).toMatch(/would remove 2 and keep 1 version/);
    // 3 data and 3 manifest snapshots, and the one naming the server whose backups these are.
    const owner = (s: { tags: string[] }) => s.tags.includes("incus-backup-owner");
    expect((await toolSnapshots(r, restic)).filter((s) => !owner(s))).toHaveLength(6);
    const p = await toolOk(["prune", "--keep-last", "1", `--repo=${r.repo}`], { env: r.env });
    expect(p.stdout).toMatch(/removed 2 and kept 1 version/);
    expect(p.stderr).toMatch(/freed: /);
    expect(await list(r.repo, r.env)).toHaveLength(1);
    const kept = await toolSnapshots(r, restic);
    expect(kept.filter((s) => !owner(s))).toHaveLength(2);
    // prune forgets versions only: the server record stays.
    expect(kept.filter(owner)).toHaveLength(1);
    // restic's own check agrees the repository is sound after the forget and the prune.
    await resticCli(r, restic, ["check"]);
  });

  it("faults: no or wrong password, no repository, no restic binary, a lock held by another restic: one line, exit 7 or 8, nothing changed", async () => {
    const socket = labSocket(version);
    const r = await resticRepo(track, restic);
    const vol = uniqueName("rs-fault");
    track.volume("default", vol, { socket });
    await incusOk(["storage", "volume", "create", "default", vol], { socket });
    await toolOk(["backup", "--volumes", "--name", vol, `--repo=${r.repo}`], { socket, env: r.env });
    const before = await toolSnapshots(r, restic);
    const oneLine = (stderr: string) => stderr.trim().split("\n").filter((l) => l.startsWith("error:"));

    const cases: Array<[string, Record<string, string | undefined>, string[], number, RegExp]> = [
      ["no password", { RESTIC_PASSWORD_FILE: undefined }, ["backup", "--volumes", "--name", vol], 8, /no password for the restic repository .*: set RESTIC_PASSWORD_FILE/],
      ["wrong password", { RESTIC_PASSWORD_FILE: "/dev/null" }, ["list"], 8, /restic|password/],
      ["no restic", { INCUS_BACKUP_RESTIC: "restic-is-not-here" }, ["backup", "--volumes", "--name", vol], 8, /restic is not installed: no "restic-is-not-here" in PATH/],
    ];
    for (const [what, env, args, code, message] of cases) {
      const res = await tool([...args, `--repo=${r.repo}`], { socket, env: { ...r.env, ...env } });
      expect(res.code, `${what}: ${res.stderr}`).toBe(code);
      expect(oneLine(res.stderr), what).toHaveLength(1);
      expect(res.stderr, what).toMatch(message);
    }
    const wrong = await tool(["list", `--repo=${r.repo}`], { env: { ...r.env, RESTIC_PASSWORD_COMMAND: "echo not-the-password", RESTIC_PASSWORD_FILE: undefined } });
    expect(wrong.code).toBe(8);
    expect(wrong.stderr).toMatch(/wrong password for the restic repository/);

    const missing = await tool(["backup", "--volumes", "--name", vol, `--repo=restic:${r.dir}/nothing-here`], { socket, env: r.env });
    expect(missing.code).toBe(8);
    expect(missing.stderr).toMatch(/there is no restic repository at .*nothing-here; nothing was written/);
    expect(missing.stderr).toMatch(/incus-backup init --repo restic:/);

    // Another restic's backup holds a (shared) lock: a prune, which needs restic's exclusive lock, is refused with exit 7 naming it.
    const holder = spawn(restic.binary, ["backup", "--stdin", "--stdin-filename", "held", "--tag", "other-tool"], {
      env: { ...process.env, RESTIC_PASSWORD_FILE: r.env.RESTIC_PASSWORD_FILE, RESTIC_CACHE_DIR: r.env.RESTIC_CACHE_DIR, RESTIC_REPOSITORY: r.location },
      stdio: ["pipe", "ignore", "ignore"],
    });
    try {
      holder.stdin.write("some bytes\n");
      // Until its lock file is there.
      for (let i = 0; i < 100 && (await resticCli(r, restic, ["list", "locks", "--no-lock"])).trim() === ""; i++) await new Promise((res) => setTimeout(res, 100));
      await toolOk(["backup", "--volumes", "--name", vol, `--repo=${r.repo}`], { socket, env: r.env });
      const p = await tool(["prune", "--keep-last", "1", `--repo=${r.repo}`], { env: r.env });
      expect(p.code, p.stderr).toBe(7);
      expect(p.stderr).toMatch(new RegExp(`locked by PID ${holder.pid} on `));
    } finally {
      holder.kill("SIGINT");
      holder.stdin.destroy();
      await new Promise((res) => holder.once("close", res));
    }
    // Nothing of ours was lost: the first version and the one made while the lock was held.
    const after = await toolSnapshots(r, restic);
    expect(after.filter((s) => s.tags.includes("incus-backup-manifest"))).toHaveLength(2);
    expect(before.every((s) => after.some((a) => a.id === s.id))).toBe(true);

    // A live restic of another host with the same name (every backup container is called
    // `backup`): its PID does not run here. restic's own `unlock` would clear its lock; the tool
    // does not. It runs in a PID namespace of its own, at a PID this machine does not have.
    const nsPid = foreignPid();
    const sameName = spawn(
      ...inPidNamespace(nsPid, [restic.binary, "backup", "--stdin", "--stdin-filename", "other-host", "--tag", "other-host"]),
      { env: { ...process.env, RESTIC_PASSWORD_FILE: r.env.RESTIC_PASSWORD_FILE, RESTIC_CACHE_DIR: r.env.RESTIC_CACHE_DIR, RESTIC_REPOSITORY: r.location }, stdio: ["pipe", "ignore", "ignore"] },
    );
    try {
      sameName.stdin.write("some bytes\n");
      let locks = "";
      for (let i = 0; i < 100 && (locks = (await resticCli(r, restic, ["list", "locks", "--no-lock"])).trim()) === ""; i++) await new Promise((res) => setTimeout(res, 100));
      const info = JSON.parse(await resticCli(r, restic, ["cat", "lock", locks.split("\n")[0]!, "--no-lock"])) as { pid: number; hostname: string };
      expect(info.pid).toBe(nsPid);
      const p = await tool(["prune", "--keep-last", "1", `--repo=${r.repo}`], { env: r.env });
      expect(p.code, p.stderr).toBe(7);
      expect(oneLine(p.stderr)[0]).toMatch(new RegExp(`locked by PID ${info.pid} on ${info.hostname} .*not a restic this install started, though of this host name: another host of the same name\\?`));
      const u = await tool(["unlock", `--repo=${r.repo}`], { env: r.env });
      expect(u.code, u.stderr).toBe(7);
      expect((await resticCli(r, restic, ["list", "locks", "--no-lock"])).trim()).toBe(locks);
      console.log(`${tag} a same-named host's live restic lock: prune exit ${p.code}, unlock exit ${u.code}, the lock kept; unlock --force clears it`);
      await toolOk(["unlock", "--force", `--repo=${r.repo}`], { env: r.env });
      expect((await resticCli(r, restic, ["list", "locks", "--no-lock"])).trim()).toBe("");
    } finally {
      sameName.kill("SIGKILL");
      await new Promise((res) => (sameName.exitCode === null ? sameName.once("close", res) : res(undefined)));
    }
  });

  it("kill -9 mid-backup: the half-stored file is never listed, and the next run removes it", async () => {
    const socket = labSocket(version);
    const on = { socket };
    const r = await resticRepo(track, restic);
    const name = uniqueName("rs-kill");
    await launchRealistic(name, { socket, track, pool: "default" });
    await writeTestData(name, "/root/data", { sizeMiB: 48, socket });
    const run = startTool(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env: r.env });
    for (let i = 0; i < 300 && (await resticChildren(name)).length === 0; i++) await new Promise((res) => setTimeout(res, 50));
    const children = await resticChildren(name);
    expect(children).not.toHaveLength(0);
    await new Promise((res) => setTimeout(res, 300));
    await killTool(run);
    // restic sees its input end: it may save what it got, which no manifest names. Then it is gone
    // (reaped: a zombie would still own its lock, as a live process would).
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 300 && children.some(alive); i++) await new Promise((res) => setTimeout(res, 100));
    expect(children.filter(alive)).toEqual([]);
    expect(await list(r.repo, r.env)).toEqual([]);
    const b = await toolOk(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env: r.env });
    const rows = await list(r.repo, r.env);
    expect(rows.map((x) => x.name)).toEqual([name]);
    const snaps = await toolSnapshots(r, restic);
    expect(snaps.filter((s) => s.tags.includes("incus-backup-data"))).toHaveLength(1);
    console.log(`${tag} after kill -9: ${b.stderr.trim().split("\n")[0]}`);
  });

  it("kill -9 during a replacing restore, at three points: the next restore finishes it, the data is the backup's, it runs, nothing is left", async () => {
    const socket = labSocket(version);
    const on = { socket };
    const r = await resticRepo(track, restic);
    const name = uniqueName("rs-kr");
    await launchRealistic(name, { socket, track, pool: "btrfs", snapshots: 1 });
    const data = await writeTestData(name, "/root/data", { sizeMiB: 2, socket });
    await toolOk(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env: r.env });
    const leftoversBefore = await temporaryLeftovers(socket);
    const proxy = await FaultProxy.start(socket);
    track.defer(() => proxy.close());
    const path = (p: string) => new RegExp(`^${p.replace(/\./g, "\\.")}(\\?|$)`);
    const points: Array<[string, () => ReturnType<FaultProxy["holdRequest"]>]> = [
      ["half the upload sent", () => proxy.holdUploadAfter(req("POST", path("/1.0/instances")), 512 << 10)],
      ["the original renamed aside", () => proxy.holdRequest(req("PUT", /^\/1\.0\/instances\/ibk-old-[0-9a-f]{8}(\?|$)/))],
      ["before the original is deleted", () => proxy.holdRequest(req("DELETE", /^\/1\.0\/instances\/ibk-old-[0-9a-f]{8}(\?|$)/))],
    ];
    const args = ["restore", "--instance", "--name", name, "--force", `--repo=${r.repo}`];
    for (const [point, hold] of points) {
      await incusOk(["exec", name, "--", "sh", "-c", "echo live >/root/data/live && sync"], on);
      const at = hold();
      const run = startTool(args, { socket: proxy.path, env: r.env });
      await reached(run, at, point);
      await killTool(run);
      proxy.dropHeld();
      const next = await tool(args, { socket, env: r.env, timeoutMs: 300_000 });
      expect(next.code, `${point}: ${next.stderr}`).toBe(0);
      expect(await checksumTree(name, "/root/data", on), point).toEqual(data);
      expect(await instanceStatus(name, on), point).toBe("Running");
      expect(await temporaryLeftovers(socket, leftoversBefore), point).toEqual([]);
      expect(await duplicateMacs(socket), point).toEqual([]);
      console.log(`${tag} kill during a restore at "${point}": recovered (${next.stderr.split("\n").find((l) => /interrupted restore/.test(l)) ?? "nothing to recover"})`);
    }
  });
});
