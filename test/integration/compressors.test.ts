// zstd through the server's pzstd (every core) where it has it and cores would sit idle, plain
// zstd where it has not or where parallel items keep every core busy, and in all cases an archive
// that plain `incus import` accepts, on each Incus LTS of the run.
import { open, readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checksumTree, incusOk, labShell, labSocket, labVersions, launchInstance, tracker, uniqueName, writeTestData } from "../lab/lab";
import { repoDir } from "./helpers/server";
import { listJson, toolOk } from "./helpers/tool";

const ZSTD_MAGIC = "28b52ffd";

async function firstBytes(path: string): Promise<string> {
  const fh = await open(path, "r");
  try {
    const b = Buffer.alloc(4);
    await fh.read(b, 0, 4, 0);
    return b.toString("hex");
  } finally {
    await fh.close();
  }
}

interface Options {
  compression: string;
  compressor?: string;
  transfer: string;
}

describe.each(labVersions())("Incus %s", (version) => {
  const track = tracker();
  afterAll(() => track.cleanup());
  const socket = labSocket(version);
  const on = { socket };

  async function backupOne(name: string, env: Record<string, string> = {}): Promise<{ archive: string; options: Options; stderr: string }> {
    const dir = await repoDir(track);
    const r = await toolOk(["backup", "--instances", "--name", name, "--dir", dir], { socket, env });
    const [row] = await listJson(dir);
    const manifest = JSON.parse(await readFile(join(row!.path, "manifest.json"), "utf8")) as { options: Options; files: Array<{ name: string }> };
    return { archive: join(row!.path, manifest.files[0]!.name), options: manifest.options, stderr: r.stderr };
  }

  // The tool and the lab's Incus run on this machine and see its CPUs.
  const cpus = availableParallelism();

  it("asks for pzstd and writes plain zstd, which `incus import` takes as it is", async () => {
    const name = uniqueName("pzstd");
    await launchInstance(name, { socket, track });
    // Big enough for pzstd to cut it into several frames.
    const data = await writeTestData(name, "/srv/data", { socket, sizeMiB: 40 });
    await incusOk(["stop", "--force", name], on);
    const b = await backupOne(name);
    console.log(`Incus ${version}: ${JSON.stringify(b.options)}`);
    // One item alone leaves all cores but one idle; on a one-CPU host there is nothing to gain.
    expect(b.options).toMatchObject(cpus > 1 ? { compression: "zstd", compressor: "pzstd" } : { compression: "zstd" });
    expect(b.archive.endsWith(".tar.zst")).toBe(true);
    expect(await firstBytes(b.archive)).toBe(ZSTD_MAGIC);

    // As an admin restoring by hand after losing the instance: plain `incus import` (under its own
    // name; beside the original, its MAC would clash, as Incus refuses a MAC twice on a network).
    await incusOk(["delete", "--force", name], on);
    await incusOk(["import", b.archive], on);
    await incusOk(["start", name], on);
    expect(await checksumTree(name, "/srv/data", { socket })).toEqual(data);
  });

  it("uses plain zstd, without a warning, on a server that has no pzstd, and when told not to", async () => {
    const name = uniqueName("no-pzstd");
    await launchInstance(name, { socket, track, start: false });
    await labShell("mv /usr/bin/pzstd /usr/bin/pzstd.hidden", { version });
    let hidden: Awaited<ReturnType<typeof backupOne>>;
    try {
      hidden = await backupOne(name);
    } finally {
      await labShell("mv /usr/bin/pzstd.hidden /usr/bin/pzstd", { version });
    }
    expect(hidden.options.compression).toBe("zstd");
    expect(hidden.options.compressor).toBeUndefined();
    expect(hidden.stderr).not.toMatch(/warning|cannot compress/i);
    expect(await firstBytes(hidden.archive)).toBe(ZSTD_MAGIC);

    const off = await backupOne(name, { INCUS_BACKUP_PZSTD: "0" });
    expect(off.options.compressor).toBeUndefined();
    expect(await firstBytes(off.archive)).toBe(ZSTD_MAGIC);
  });

  it("uses plain zstd when parallel items already keep every core busy", async () => {
    const names = [uniqueName("busy-a"), uniqueName("busy-b")];
    for (const n of names) await launchInstance(n, { socket, track, start: false });
    const dir = await repoDir(track);
    await toolOk(["backup", "--instances", ...names.flatMap((n) => ["--name", n]), "--parallel", "2", "--dir", dir], { socket });
    const rows = await listJson(dir);
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      const { options } = JSON.parse(await readFile(join(row.path, "manifest.json"), "utf8")) as { options: Options };
      // Two items at once: they use two cores between them; pzstd only where the host has more.
      if (cpus > 2) expect(options.compressor).toBe("pzstd");
      else expect(options.compressor).toBeUndefined();
      expect(options.compression).toBe("zstd");
    }
  });
});
