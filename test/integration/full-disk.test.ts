// Issue 6, full disk: the repository on a small filesystem (a 64 MiB tmpfs the test mounts), and
// more to back up than fits. A clear "no space" error, no partial version, earlier versions
// intact and verifiable, exit 3 when some items fit; with the disk completely full, a clear
// refusal; after space is freed, the next backup works. On Incus 6.0 (export) and 7.0 (streamed).
import { execFile } from "node:child_process";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createVolumeWithData, incusOk, labSocket, labVersions, launchInstance, tracker, uniqueName, writeTestData } from "../lab/lab";
import { tempDir, wrongModes } from "./helpers/server";
import { listJson, tool, toolOk, type ListRow } from "./helpers/tool";

const sh = promisify(execFile);
const PARTIAL = 3;

/** Figures for the closing note. */
const figures = { runs: 0, noSpaceReported: 0, partialVersions: 0 };

describe.each(labVersions())("a full backup disk, Incus %s", (version) => {
  const track = tracker();
  const big = uniqueName("fd-big");
  const small = uniqueName("fd-small");
  const vol = uniqueName("fd-vol");
  let socket: string;
  let dir: string;
  let first: ListRow[];
  const on = () => ({ socket });
  // --parallel 1: the item that does not fit gives its space back before the next one starts.
  const backup = () => ["backup", "--database", "--instances", "--volumes", "--name", big, "--name", small, "--name", vol, "--parallel", "1", `--dir=${dir}`];

  beforeAll(async () => {
    socket = labSocket(version);
    await launchInstance(big, { socket, track });
    await launchInstance(small, { socket, track });
    await writeTestData(small, "/root/data", { sizeMiB: 1, socket });
    await createVolumeWithData("default", vol, { attachTo: small, path: "/mnt/vol", sizeMiB: 1, socket, track });
    const base = await tempDir(track, "ibk-full-");
    dir = join(base, "mnt");
    await mkdir(dir);
    await sh("mount", ["-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", dir]);
    track.defer(() => sh("umount", [dir]));
    await toolOk(["init", `--dir=${dir}`]);
    // Everything fits the first time.
    await toolOk(backup(), { socket });
    first = await listJson(dir);
    expect(first.map((r) => r.type).sort()).toEqual(["database", "instance", "instance", "volume"]);
    // Then one instance grows past the free space: random data, so compression cannot save it.
    await incusOk(["exec", big, "--", "sh", "-c", "dd if=/dev/urandom of=/root/big bs=1048576 count=80 2>/dev/null && sync"], on());
  });
  afterAll(async () => {
    console.log(`[${version}] full-disk figures: ${figures.runs} runs on a full disk, ${figures.noSpaceReported} reported "no space", ${figures.partialVersions} partial versions listed`);
    await track.cleanup();
  });

  async function df(): Promise<string> {
    return (await sh("df", ["-h", "--output=used,avail", dir])).stdout.trim().split("\n").pop()!.trim().replace(/\s+/, " used, ") + " free";
  }

  async function expectConsistent(before: ListRow[]) {
    const now = await listJson(dir);
    // Every version listed is complete, and none that was there is gone.
    for (const r of before) expect(now.some((n) => n.path === r.path)).toBe(true);
    const v = await tool(["verify", "--deep", `--dir=${dir}`], { socket });
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(await readdir(join(dir, ".tmp")).catch(() => [])).toEqual([]);
    expect(await wrongModes(dir)).toEqual([]);
    return now;
  }

  it("some items fit: exit 3, the one that does not says no space, nothing partial, earlier versions intact", async () => {
    const r = await tool(backup(), { socket });
    figures.runs++;
    const failed = r.stdout.split("\n").filter((l) => /^ {2}failed:/.test(l));
    console.log(`[${version}] backup of more than fits (${await df()}): exit ${r.code}\n${r.stdout.trim()}`);
    expect(r.code, r.stderr).toBe(PARTIAL);
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatch(new RegExp(`failed: instance default/${big}: .*no space left on device`));
    figures.noSpaceReported++;
    expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /);
    const now = await expectConsistent(first);
    // The three that fit got a new version; the big one did not.
    expect(now.length).toBe(first.length + 3);
    expect(now.filter((x) => x.name === big)).toHaveLength(1);
  });

  it("the disk completely full: a clear refusal naming the problem (exit 8), nothing changed", async () => {
    const before = await listJson(dir);
    // Fill what is left with a file outside the repository's own entries.
    await sh("sh", ["-c", `dd if=/dev/zero of=${join(dir, "filler")} bs=1M 2>/dev/null; sync; true`]);
    track.defer(() => rm(join(dir, "filler"), { force: true }));
    const r = await tool(backup(), { socket });
    figures.runs++;
    console.log(`[${version}] backup onto a full disk (${await df()}): exit ${r.code}: ${(r.stderr.trim().split("\n").pop() ?? "").slice(0, 200)}`);
    // Every item failed for the same reason, the repository's disk: exit 8, as the README says.
    expect(r.code, r.stdout + r.stderr).toBe(8);
    expect(r.stdout + r.stderr).toMatch(/no space left on device/);
    figures.noSpaceReported++;
    expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /);
    await rm(join(dir, "filler"));
    await expectConsistent(before);
    expect(await listJson(dir)).toEqual(before);
  });

  it("once space is freed, the next backup works", async () => {
    await incusOk(["exec", big, "--", "rm", "/root/big"], on());
    const before = await listJson(dir);
    const r = await toolOk(backup(), { socket });
    expect(r.stderr).not.toMatch(/stale lock/);
    const now = await expectConsistent(before);
    expect(now.length).toBe(before.length + 4);
    console.log(`[${version}] after freeing space: ${r.stdout.trim()}`);
  });
});
