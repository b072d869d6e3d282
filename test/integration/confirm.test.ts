// Confirmation before replacing: refused without a terminal, asked on one; only "y" changes anything.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, checksumTree, createVolumeWithData, incusOk, launchInstance, tracker, uniqueName, writeTestData, type Manifest } from "../lab/lab";
import { instanceStatus, repoDir, expectOneLineError } from "./helpers/server";
import { tool } from "./helpers/tool";

async function initPid(name: string): Promise<number> {
  return ((await apiGet(`/1.0/instances/${name}/state`)) as { pid: number }).pid;
}

describe("confirmation of a restore that replaces", () => {
  const track = tracker();
  const name = uniqueName("confirm");
  const volume = uniqueName("confirm-vol");
  let dir: string;
  let backedUp: { instance: Manifest; volume: Manifest };
  let changed: { instance: Manifest; volume: Manifest; pid: number };

  const restoreInstance = ["restore", "--instance", "--name", name];
  const restoreVolume = ["restore", "--volume", "--name", volume];
  const prompt = { when: /\[y\/N\]/ };

  async function live() {
    return {
      instance: await checksumTree(name, "/root/data"),
      volume: await checksumTree(name, "/mnt/vol"),
      pid: await initPid(name),
    };
  }

  beforeAll(async () => {
    await launchInstance(name, { track });
    const instance = await writeTestData(name, "/root/data", { sizeMiB: 1 });
    const vol = await createVolumeWithData("default", volume, { attachTo: name, path: "/mnt/vol", sizeMiB: 1, track });
    backedUp = { instance, volume: vol };
    dir = await repoDir(track);
    const b = await tool(["backup", "--instances", "--volumes", "--name", name, "--name", volume, `--dir=${dir}`]);
    expect(b.code, b.stderr).toBe(0);
    await incusOk(["exec", name, "--", "sh", "-c", "echo after >/root/data/after-backup && echo after >/mnt/vol/after-backup"]);
    changed = await live();
    expect(changed.instance).not.toEqual(backedUp.instance);
    expect(changed.volume).not.toEqual(backedUp.volume);
  });
  afterAll(() => track.cleanup());

  it("without a terminal and without --force: refused (exit 6, naming --force), nothing changed", async () => {
    for (const args of [restoreInstance, restoreVolume]) {
      // A "y" on a pipe is not a confirmation: nobody saw the plan.
      for (const input of [undefined, "y\n"]) {
        const r = await tool([...args, `--dir=${dir}`], input === undefined ? {} : { input });
        expect(r.code, r.stderr).toBe(6);
        expect(expectOneLineError(r)).toMatch(/--force/);
      }
    }
    expect(await live()).toEqual(changed);
    expect(await instanceStatus(name)).toBe("Running");
  });

  it('on a terminal, "n" changes nothing (exit 6) after showing the plan', async () => {
    const i = await tool([...restoreInstance, `--dir=${dir}`], { tty: true, answer: { ...prompt, text: "n\r" } });
    expect(i.code, i.stdout).toBe(6);
    expect(i.stdout).toMatch(new RegExp(`REPLACE\\s+instance default/${name} .*it is running: stopped, then the restored one is started`));
    expect(i.stdout).toContain("not confirmed; nothing was changed");

    const v = await tool([...restoreVolume, `--dir=${dir}`], { tty: true, answer: { ...prompt, text: "n\r" } });
    expect(v.code, v.stdout).toBe(6);
    expect(v.stdout).toMatch(new RegExp(`REPLACE\\s+volume default/default/${volume} .*stops default/${name} and starts default/${name} again`));

    expect(await live()).toEqual(changed);
    expect(await instanceStatus(name)).toBe("Running");
  });

  it('on a terminal, "y" replaces', async () => {
    const v = await tool([...restoreVolume, `--dir=${dir}`], { tty: true, answer: { ...prompt, text: "y\r" } });
    expect(v.code, v.stdout).toBe(0);
    expect(await checksumTree(name, "/mnt/vol")).toEqual(backedUp.volume);

    const i = await tool([...restoreInstance, `--dir=${dir}`], { tty: true, answer: { ...prompt, text: "y\r" } });
    expect(i.code, i.stdout).toBe(0);
    expect(await instanceStatus(name)).toBe("Running");
    expect(await checksumTree(name, "/root/data")).toEqual(backedUp.instance);
    expect(await checksumTree(name, "/mnt/vol")).toEqual(backedUp.volume);
  });
});
