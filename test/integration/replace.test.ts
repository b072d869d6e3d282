// Replacing existing items with --force: the data of the backup comes back, in place, and running
// instances run again. On both LTS versions and both storage drivers, with instances as on a real
// host (NICs on the managed bridge, snapshots, cloud-init, limits, autostart).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, checksumTree, createVolumeWithData, incusOk, labSocket, labVersions, tracker, uniqueName, writeTestData, type Manifest } from "../lab/lab";
import { duplicateMacs, launchRealistic } from "./helpers/realistic";
import { instanceStatus, repoDir } from "./helpers/server";
import { toolOk } from "./helpers/tool";

const matrix = labVersions().flatMap((v) => ["default", "btrfs"].map((p) => [v, p] as const));

describe.each(matrix)("restore --force over existing items: Incus %s, %s pool", (version, pool) => {
  const track = tracker();
  const name = uniqueName("replace");
  const volume = uniqueName("replace-vol");
  let socket: string;
  let dir: string;
  let instanceData: Manifest;
  let volumeData: Manifest;
  const on = () => ({ socket });

  /** PID of the instance's init on the host: it changes when the instance is stopped and started. */
  async function initPid(instance: string): Promise<number> {
    return ((await apiGet(`/1.0/instances/${instance}/state`, on())) as { pid: number }).pid;
  }

  beforeAll(async () => {
    socket = labSocket(version);
    await launchRealistic(name, { socket, track, pool, snapshots: 1 });
    instanceData = await writeTestData(name, "/root/data", { sizeMiB: 1, socket });
    volumeData = await createVolumeWithData(pool, volume, { attachTo: name, path: "/mnt/vol", sizeMiB: 1, track, socket });
    dir = await repoDir(track);
    await toolOk(["backup", "--instances", "--volumes", "--name", name, "--name", `${pool}/${volume}`, `--dir=${dir}`], on());
  });
  afterAll(() => track.cleanup());

  it("restore --instance --force brings back the old data and starts the instance again", async () => {
    await incusOk(
      ["exec", name, "--", "sh", "-c", "cd /root/data && echo changed >small-1.txt && rm small-2.txt && chmod 0600 exec-0755.sh && echo new >new-file && chown 1234 mode-0640.txt"],
      on(),
    );
    expect(await checksumTree(name, "/root/data", on())).not.toEqual(instanceData);
    const r = await toolOk(["restore", "--instance", "--name", name, "--force", `--dir=${dir}`], on());
    expect(r.stdout).toMatch(new RegExp(`REPLACE\\s+instance default/${name} `));
    expect(await instanceStatus(name, on())).toBe("Running");
    expect(await checksumTree(name, "/root/data", on())).toEqual(instanceData);
    // The volume stays attached to the restored instance.
    expect(await checksumTree(name, "/mnt/vol", on())).toEqual(volumeData);
    expect(await duplicateMacs(socket)).toEqual([]);
  });

  it("restore --volume --force on a volume in use by a running instance: exactly the backed-up contents, instance running again", async () => {
    await incusOk(
      ["exec", name, "--", "sh", "-c", "cd /mnt/vol && echo added >added-since-backup && mkdir -p new-dir/deeper && echo x >new-dir/deeper/f && echo changed >small-3.txt && rm -r sub"],
      on(),
    );
    expect(await checksumTree(name, "/mnt/vol", on())).not.toEqual(volumeData);
    const pidBefore = await initPid(name);
    const r = await toolOk(["restore", "--volume", "--name", `${pool}/${volume}`, "--force", `--dir=${dir}`], on());
    expect(r.stdout).toContain(`stops default/${name} and starts default/${name} again`);
    expect(await instanceStatus(name, on())).toBe("Running");
    // A new init process: the instance was really stopped and started.
    expect(await initPid(name)).not.toBe(pidBefore);
    expect(await checksumTree(name, "/mnt/vol", on())).toEqual(volumeData);
    // Same volume (name and attachment), not a new one beside it.
    const used = (await apiGet(`/1.0/storage-pools/${pool}/volumes/custom/${volume}`, on())) as { used_by: string[] };
    expect(used.used_by).toEqual([`/1.0/instances/${name}`]);
    expect(await incusOk(["storage", "volume", "list", pool, "-f", "csv", "-c", "n"], on())).not.toMatch(/ibk-restore-/);
  });
});
