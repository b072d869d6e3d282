// Failures: a corrupt backup never touches the live item; a backup killed mid-way leaves nothing that counts.
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, checksumTree, createVolumeWithData, incusOk, launchInstance, tracker, uniqueName, writeTestData, type Manifest } from "../lab/lab";
import { allInstanceNames, allVolumeNames, flipByte, instanceStatus, treeState, repoDir } from "./helpers/server";
import { listJson, startTool, toolOk } from "./helpers/tool";

async function initPid(name: string): Promise<number> {
  return ((await apiGet(`/1.0/instances/${name}/state`)) as { pid: number }).pid;
}

describe("a corrupted backup file", () => {
  const track = tracker();
  const name = uniqueName("corrupt");
  const volume = uniqueName("corrupt-vol");
  let dir: string;
  let live: { instance: Manifest; volume: Manifest; pid: number };
  /** Temporary names the tool uses (ibk-restore-*, ibk-old-*) that exist already: other runs' business. */
  let othersTemp: { instances: string[]; volumes: string[] };
  const temps = async () => ({
    instances: (await allInstanceNames()).filter((n) => n.startsWith("ibk-")).sort(),
    volumes: (await allVolumeNames()).filter((n) => n.startsWith("ibk-")).sort(),
  });

  beforeAll(async () => {
    await launchInstance(name, { track });
    const instance = await writeTestData(name, "/root/data", { sizeMiB: 1 });
    const vol = await createVolumeWithData("default", volume, { attachTo: name, path: "/mnt/vol", sizeMiB: 1, track });
    dir = await repoDir(track);
    await toolOk(["backup", "--instances", "--volumes", "--name", name, "--name", volume, `--dir=${dir}`]);
    // Differs from the backup, so a restore that went through would show.
    await incusOk(["exec", name, "--", "sh", "-c", "echo after >/root/data/after-backup && echo after >/mnt/vol/after-backup"]);
    live = { instance: await checksumTree(name, "/root/data"), volume: await checksumTree(name, "/mnt/vol"), pid: await initPid(name) };
    othersTemp = await temps();
    expect(live.instance).not.toEqual(instance);
    expect(live.volume).not.toEqual(vol);
    for (const row of await listJson(dir)) {
      const archive = (await readdir(row.path)).find((f) => f.startsWith(`${row.type}.tar`));
      await flipByte(join(row.path, archive!));
    }
  });
  afterAll(() => track.cleanup());

  async function expectUntouched() {
    expect(await instanceStatus(name)).toBe("Running");
    expect(await initPid(name)).toBe(live.pid);
    expect(await checksumTree(name, "/root/data")).toEqual(live.instance);
    expect(await checksumTree(name, "/mnt/vol")).toEqual(live.volume);
    // No temporary instance or volume left behind.
    expect(await temps()).toEqual(othersTemp);
  }

  it("restore --instance --force: refused with exit 9 before the instance is touched", async () => {
    const r = await startTool(["restore", "--instance", "--name", name, "--force", `--dir=${dir}`]).done;
    expect(r.code, r.stdout + r.stderr).toBe(9);
    expect(r.stdout + r.stderr).toMatch(/sha256 mismatch.*the existing instance was not touched/);
    expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /);
    await expectUntouched();
  });

  it("restore --volume --force: refused with exit 9 before the volume or its instance is touched", async () => {
    const r = await startTool(["restore", "--volume", "--name", volume, "--force", `--dir=${dir}`]).done;
    expect(r.code, r.stdout + r.stderr).toBe(9);
    expect(r.stdout + r.stderr).toMatch(/sha256 mismatch.*the existing volume was not touched/);
    await expectUntouched();
  });
});

interface ServerBackup {
  name: string;
  expires_at: string;
}

describe("the tool killed during a backup", () => {
  const track = tracker();
  const name = uniqueName("killed");
  let dir: string;

  beforeAll(async () => {
    await launchInstance(name, { track });
    // Big enough that the download lasts a moment; uncompressed below, so it stays that big.
    await incusOk(["exec", name, "--", "sh", "-c", "dd if=/dev/urandom of=/root/big bs=1048576 count=128 2>/dev/null && sync"]);
    dir = await repoDir(track);
  });
  afterAll(() => track.cleanup());

  const serverBackups = async () =>
    (await apiGet(`/1.0/instances/${name}/backups?recursion=1`)) as ServerBackup[];

  /** Size of the largest file being written under .tmp/, or 0. */
  async function writing(): Promise<number> {
    let max = 0;
    const tmp = join(dir, ".tmp");
    for (const v of await readdir(tmp).catch(() => [] as string[])) {
      for (const f of await readdir(join(tmp, v)).catch(() => [] as string[])) {
        max = Math.max(max, (await stat(join(tmp, v, f)).catch(() => ({ size: 0 }))).size);
      }
    }
    return max;
  }

  it("SIGKILL while downloading: no partial version listed, the next backup works, only expiring server backups left", async () => {
    const args = ["backup", "--instances", "--name", name, "--compression", "none", `--dir=${dir}`];
    const run = startTool(args);
    // Kill it once the archive is arriving: a file under .tmp/ that has grown.
    let seen = 0;
    for (;;) {
      const size = await writing();
      if (size > 0 && seen > 0 && size > seen) break;
      if (size > 0) seen = size;
      if (run.child.exitCode !== null) throw new Error(`the backup ended before it could be killed: ${JSON.stringify(run.output())}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    run.child.kill("SIGKILL");
    const killed = await run.done;
    expect(killed.signal).toBe("SIGKILL");

    expect(await writing()).toBeGreaterThan(0); // the partial file is there...
    expect(await listJson(dir)).toEqual([]); // ...and never listed

    const now = Date.now();
    for (const b of await serverBackups()) {
      // A crash cannot delete it; it must expire by itself.
      const expires = Date.parse(b.expires_at);
      expect(expires, `${b.name} expires_at ${b.expires_at}`).toBeGreaterThan(now);
      expect(expires).toBeLessThan(now + 48 * 3600_000);
    }
    const leftBehind = (await serverBackups()).map((b) => b.name);
    // Without direct_backup (Incus 6.0) the server wrote a copy first: the kill left exactly that one.
    const server = (await apiGet("/1.0")) as { api_extensions: string[] };
    expect(leftBehind.length).toBe(server.api_extensions.includes("direct_backup") ? 0 : 1);

    const next = await toolOk(args);
    expect(next.stderr).toMatch(/stale lock/);
    expect(next.stderr).toMatch(/removed 1 unfinished backup file/);
    const rows = await listJson(dir);
    expect(rows.map((r) => r.name)).toEqual([name]);
    // The kept archive is complete: the same size as the instance's data (and more).
    expect(rows[0]!.size).toBeGreaterThan(128 * 1024 * 1024);
    // The unfinished files are gone, and this run deleted its own server-side backup.
    expect((await treeState(join(dir, ".tmp"))).filter((e) => e.type === "file")).toEqual([]);
    expect((await serverBackups()).map((b) => b.name).sort()).toEqual(leftBehind.sort());
  });
});
