// Both Incus LTS lines: a round trip of an instance and a volume on each lab of the run, and the
// transfer each one must use (streamed with direct_backup on 7.0, export-and-download on 6.0).
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { apiGet, checksumTree, createVolumeWithData, incusOk, labSocket, labVersions, launchInstance, tracker, uniqueName, writeTestData } from "../lab/lab";
import { repoDir } from "./helpers/server";
import { listJson, spawnEveryRun, toolOk } from "./helpers/tool";

// The user's commands end to end: every run is the built tool, as a process.
spawnEveryRun();

describe.each(labVersions())("Incus %s", (version) => {
  const track = tracker();
  afterAll(() => track.cleanup());

  it("backs up, restores onto deleted items with identical data, and uses the transfer the server allows", async () => {
    const socket = labSocket(version);
    const on = { socket };
    const name = uniqueName(`smoke-${version.replace(".", "")}`);
    const volume = uniqueName("smoke-vol");
    await launchInstance(name, { socket, track });
    const data = await writeTestData(name, "/srv/data", { socket, sizeMiB: 8 });
    const volData = await createVolumeWithData("default", volume, { socket, attachTo: name, path: "/mnt/vol", sizeMiB: 2, track });
    const server = (await apiGet("/1.0", on)) as { api_extensions: string[] };
    const direct = server.api_extensions.includes("direct_backup");

    const dir = await repoDir(track);
    await toolOk(["backup", "--instances", "--volumes", "--name", name, "--name", volume, "--dir", dir], { socket });
    const rows = await listJson(dir);
    expect(rows.map((r) => r.type).sort()).toEqual(["instance", "volume"]);
    for (const r of rows) {
      const manifest = JSON.parse(await readFile(join(r.path, "manifest.json"), "utf8")) as { options: { transfer: string } };
      // The proof of which path was taken: the manifest records it.
      expect(manifest.options.transfer).toBe(direct ? "direct" : "export");
    }
    expect(direct).toBe(version !== "6.0");
    // With export-and-download the server's copy is deleted afterwards; a direct backup never makes one.
    expect(await apiGet(`/1.0/instances/${name}/backups`, on)).toEqual([]);

    await incusOk(["delete", "--force", name], on);
    await incusOk(["storage", "volume", "delete", "default", volume], on);
    await toolOk(["restore", "--instances", "--volumes", "--name", name, "--name", volume, "--dir", dir, "--force"], { socket });

    expect(await checksumTree(name, "/srv/data", { socket })).toEqual(data);
    expect(await checksumTree(name, "/mnt/vol", { socket })).toEqual(volData);
    await toolOk(["verify", "--deep", "--dir", dir], { socket });
  });
});
