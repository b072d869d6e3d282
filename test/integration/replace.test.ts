// Replacing existing items with --force: the data of the backup comes back, in place, and running instances run again.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checksumTree, createVolumeWithData, incusOk, launchInstance, tracker, uniqueName, writeTestData, type Manifest } from "../lab/lab";
import { instanceStatus, tempDir } from "./helpers/server";
import { toolOk } from "./helpers/tool";

/** PID of the instance's init on the host: it changes when the instance is stopped and started. */
async function initPid(name: string): Promise<number> {
  return (JSON.parse(await incusOk(["query", `/1.0/instances/${name}/state`])) as { pid: number }).pid;
}

describe("restore --force over existing items", () => {
  const track = tracker();
  const name = uniqueName("replace");
  const volume = uniqueName("replace-vol");
  let dir: string;
  let instanceData: Manifest;
  let volumeData: Manifest;

  beforeAll(async () => {
    await launchInstance(name, { track });
    instanceData = await writeTestData(name, "/root/data", { sizeMiB: 1 });
    volumeData = await createVolumeWithData("default", volume, { attachTo: name, path: "/mnt/vol", sizeMiB: 1, track });
    dir = await tempDir(track);
    await toolOk(["backup", "--instances", "--volumes", "--name", name, "--name", volume, `--dir=${dir}`]);
  });
  afterAll(() => track.cleanup());

  it("restore --instance --force brings back the old data and starts the instance again", async () => {
    await incusOk(
      ["exec", name, "--", "sh", "-c", "cd /root/data && echo changed >small-1.txt && rm small-2.txt && chmod 0600 exec-0755.sh && echo new >new-file && chown 1234 mode-0640.txt"],
    );
    expect(await checksumTree(name, "/root/data")).not.toEqual(instanceData);
    const r = await toolOk(["restore", "--instance", "--name", name, "--force", `--dir=${dir}`]);
    expect(r.stdout).toMatch(new RegExp(`REPLACE\\s+instance default/${name} `));
    expect(await instanceStatus(name)).toBe("Running");
    expect(await checksumTree(name, "/root/data")).toEqual(instanceData);
    // The volume stays attached to the restored instance.
    expect(await checksumTree(name, "/mnt/vol")).toEqual(volumeData);
  });

  it("restore --volume --force on a volume in use by a running instance: exactly the backed-up contents, instance running again", async () => {
    await incusOk(
      ["exec", name, "--", "sh", "-c", "cd /mnt/vol && echo added >added-since-backup && mkdir -p new-dir/deeper && echo x >new-dir/deeper/f && echo changed >small-3.txt && rm -r sub"],
    );
    expect(await checksumTree(name, "/mnt/vol")).not.toEqual(volumeData);
    const pidBefore = await initPid(name);
    const r = await toolOk(["restore", "--volume", "--name", volume, "--force", `--dir=${dir}`]);
    expect(r.stdout).toContain(`stops default/${name} and starts default/${name} again`);
    expect(await instanceStatus(name)).toBe("Running");
    // A new init process: the instance was really stopped and started.
    expect(await initPid(name)).not.toBe(pidBefore);
    expect(await checksumTree(name, "/mnt/vol")).toEqual(volumeData);
    // Same volume (name and attachment), not a new one beside it.
    const used = JSON.parse(await incusOk(["query", `/1.0/storage-pools/default/volumes/custom/${volume}`])) as { used_by: string[] };
    expect(used.used_by).toEqual([`/1.0/instances/${name}`]);
    expect(await incusOk(["storage", "volume", "list", "default", "-f", "csv", "-c", "n"])).not.toMatch(/ibk-restore-/);
  });
});
