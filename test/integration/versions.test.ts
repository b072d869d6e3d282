// Choosing a version: a day prefix picks that day's latest backup and says so; an unknown one lists what there is.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execRead, incusOk, launchInstance, tracker, uniqueName } from "../lab/lab";
import { repoDir, expectOneLineError } from "./helpers/server";
import { listJson, tool, toolOk } from "./helpers/tool";

describe("restore --version", () => {
  const track = tracker();
  const name = uniqueName("versions");
  let dir: string;
  /** Oldest first; the last two are of the same UTC day. */
  let versions: string[];
  /** What /root/marker held at each version. */
  const markerAt = new Map<string, string>();

  const setMarker = (text: string) => incusOk(["exec", name, "--", "sh", "-c", `echo ${text} >/root/marker`]);
  const marker = async () => (await execRead(name, ["cat", "/root/marker"])).trim();

  beforeAll(async () => {
    await launchInstance(name, { track });
    dir = await repoDir(track);
    // Two backups on one day; a third if the first two straddle midnight UTC.
    for (let n = 1; n <= 3; n++) {
      await setMarker(`backup-${n}`);
      await toolOk(["backup", "--instances", "--name", name, `--dir=${dir}`]);
      versions = (await listJson(dir, "--instances", "--name", name)).map((r) => r.version).sort();
      markerAt.set(versions[versions.length - 1]!, `backup-${n}`);
      if (n >= 2 && versions[n - 1]!.slice(0, 8) === versions[n - 2]!.slice(0, 8)) break;
    }
    await setMarker("changed-since");
  });
  afterAll(() => track.cleanup());

  it("a day prefix picks the later of two backups that day, and says which", async () => {
    const [earlier, later] = versions.slice(-2) as [string, string];
    const day = later.slice(0, 8);
    expect(earlier.slice(0, 8)).toBe(day);
    expect(earlier < later).toBe(true);
    const r = await toolOk(["restore", "--instance", "--name", name, `--version=${day}`, "--force", `--dir=${dir}`]);
    expect(r.stdout).toContain(`instance default/${name}: --version ${day} picked ${later}`);
    expect(await marker()).toBe(markerAt.get(later));
  });

  it("a full version picks exactly that one", async () => {
    const earlier = versions[versions.length - 2]!;
    await toolOk(["restore", "--instance", "--name", name, `--version=${earlier}`, "--force", `--dir=${dir}`]);
    expect(await marker()).toBe(markerAt.get(earlier));
  });

  it("an unknown version: exit 5, the available versions listed, nothing changed", async () => {
    await setMarker("untouched");
    for (const v of ["19991231", "20250914", "20250914-0300"]) {
      const r = await tool(["restore", "--instance", "--name", name, `--version=${v}`, "--force", `--dir=${dir}`]);
      expect(r.code, r.stderr).toBe(5);
      const line = expectOneLineError(r);
      expect(line).toContain(`no version matching "${v}"; available:`);
      for (const known of versions) expect(line).toContain(known);
    }
    expect(await marker()).toBe("untouched");
  });
});
