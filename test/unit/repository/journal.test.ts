// Restore journals: what a damaged or hand-edited journal is allowed to make recovery do (nothing).

import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Journal, entryProblem, type JournalEntry } from "../../../src/repository/journal";
import { tempDir } from "../helpers/repo";

const instance: JournalEntry = {
  id: "0123456789ab",
  kind: "instance",
  project: "default",
  name: "web",
  temp: "ibk-restore-0a1b2c3d",
  aside: "ibk-old-0a1b2c3d",
  phase: "swap",
  wasRunning: true,
  original: {
    devices: { eth1: { type: "nic", network: "lan", "ipv4.address": "10.0.0.5" } },
    hwaddr: { "volatile.eth0.hwaddr": "10:66:6a:00:00:01" },
    config: { "boot.autostart": null, "security.protection.delete": "true" },
  },
  restart: [{ project: "default", name: "web" }],
  started: "2025-09-14T03:00:02.000Z",
};
const volume: JournalEntry = {
  id: "ba9876543210",
  kind: "volume",
  project: "default",
  pool: "default",
  name: "data",
  temp: "ibk-restore-deadbeef",
  phase: "refresh",
  stop: [{ project: "default", name: "app" }],
  restart: [{ project: "default", name: "app" }],
  started: "2025-09-14T03:00:02.000Z",
};

const move: JournalEntry = {
  id: "00aa11bb22cc",
  kind: "move",
  project: "default",
  name: "c2",
  temp: "",
  phase: "move",
  member: "node2",
  move: { from: "node1", standIns: [{ pool: "local", name: "v2" }] },
  restart: [],
  started: "2025-09-14T03:00:02.000Z",
};

describe("entryProblem", () => {
  it("accepts what restores write", () => {
    expect(entryProblem(instance, instance.id)).toBeUndefined();
    expect(entryProblem(volume, volume.id)).toBeUndefined();
    expect(entryProblem(move, move.id)).toBeUndefined();
  });

  it.each<[string, unknown, RegExp]>([
    ["a move without its member", { ...move, member: undefined }, /member/],
    ["a move onto the member it came from", { ...move, move: { ...move.move, from: "node2" } }, /move record/],
    ["a move without the member it came from", { ...move, move: { standIns: [] } }, /move record/],
    ["a move with a stand-in named with a slash", { ...move, move: { from: "node1", standIns: [{ pool: "local", name: "../x" }] } }, /stand-in/],
    ["a move with a temporary name", { ...move, temp: "ibk-restore-0a1b2c3d" }, /temporary name/],
    ["a move that would start something", { ...move, restart: [{ project: "default", name: "c2" }] }, /starts nothing/],
  ])("refuses %s", (_label, entry, problem) => {
    expect(entryProblem(entry, move.id) ?? "").toMatch(problem);
  });

  it.each<[string, unknown, RegExp]>([
    ["a real instance as the temporary one", { ...instance, temp: "other" }, /temporary name/],
    ["a real instance as the original's new name", { ...instance, aside: "db" }, /name for the original/],
    ["a real volume as the temporary one", { ...volume, temp: "data2" }, /temporary name/],
    ["no name for the original", { ...instance, aside: undefined }, /name for the original/],
    ["an unknown phase", { ...instance, phase: "refresh" }, /phase/],
    ["an unknown kind", { ...instance, kind: "image" }, /kind/],
    ["a project that is a number", { ...instance, project: 5 }, /project/],
    ["a name with a slash", { ...instance, name: "../x" }, /name/],
    ["a volume without a pool", { ...volume, pool: undefined }, /pool/],
    ["restart as a string", { ...instance, restart: "web" }, /instances to stop or start/],
    ["stop with a bad entry", { ...volume, stop: [null] }, /instances to stop or start/],
    ["wasRunning as a string", { ...instance, wasRunning: "yes" }, /wasRunning/],
    ["the original's devices as a list", { ...instance, original: { ...instance.original, devices: [] } }, /original's devices/],
    ["a device value that is a number", { ...instance, original: { ...instance.original, devices: { eth0: { mtu: 1500 } } } }, /original's devices/],
    ["a MAC under a key that is no MAC key", { ...instance, original: { ...instance.original, hwaddr: { "limits.cpu": "4" } } }, /original's devices/],
    ["autostart as a boolean", { ...instance, original: { ...instance.original, config: { "boot.autostart": true } } }, /original's devices/],
    ["another key to put back than the ones a swap changes", { ...instance, original: { ...instance.original, config: { "raw.lxc": "x" } } }, /original's devices/],
    ["an array", [], /not a JSON object/],
  ])("refuses %s", (_label, entry, problem) => {
    const id = (entry as { id?: string }).id ?? "0123456789ab";
    expect(entryProblem(entry, id) ?? "").toMatch(problem);
  });

  it("refuses an id other than its file name, or one that is not hex", () => {
    expect(entryProblem(instance, "ffffffffffff")).toMatch(/id/);
    expect(entryProblem({ ...instance, id: "../../x" }, "../../x")).toMatch(/id/);
  });
});

describe("Journal.list", () => {
  it("returns sound entries and names the others as problems", async () => {
    const root = await tempDir();
    const j = new Journal(root);
    await j.write(instance);
    await writeFile(join(root, "journal", "ffffffffffff.json"), JSON.stringify({ ...volume, id: "ffffffffffff", temp: "data" }));
    await writeFile(join(root, "journal", "eeeeeeeeeeee.json"), "{ nope");
    const { entries, problems } = await j.list();
    expect(entries).toEqual([instance]);
    expect(problems).toEqual([
      expect.stringMatching(/eeeeeeeeeeee\.json is unreadable; check by hand, then delete it$/),
      expect.stringMatching(/ffffffffffff\.json is damaged \(its temporary name is not one this tool makes\); nothing was done with it/),
    ]);
  });

  it("has nothing when there is no journal directory", async () => {
    const root = await tempDir();
    await mkdir(join(root, "other"));
    expect(await new Journal(root).list()).toEqual({ entries: [], problems: [] });
  });
});
