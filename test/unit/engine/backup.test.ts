// The backup engine: the order items start in, a run's status, when to compress on several cores, and a cluster's same-named volumes each backed up as its own item.

import { describe, expect, it } from "vitest";
import { backupItems, largestFirst, parallelCompression, runStatus, type BackupDeps, type BackupOptions } from "../../../src/engine/backup";
import { itemId, itemLabel, type ItemKey } from "../../../src/core/selection";
import type { LiveVolume } from "../../../src/engine/discover";
import { silentReporter } from "../../../src/engine/reporter";
import type { StorageVolume } from "../../../src/incus/storage_volumes";
import { FakeIncus } from "../helpers/fake-incus";
import { MemoryStore } from "../helpers/memory-store";

const inst = (name: string): ItemKey => ({ kind: "instance", project: "default", name });

describe("largestFirst", () => {
  it("starts the configuration first, then items never backed up, then the largest", () => {
    const items: ItemKey[] = [inst("small"), inst("new"), inst("big"), { kind: "database", project: "", name: "server" }, inst("mid")];
    const sizes = new Map([
      [itemId(inst("small")), 10],
      [itemId(inst("big")), 1000],
      [itemId(inst("mid")), 100],
    ]);
    expect(largestFirst(items, sizes).map((i) => i.name)).toEqual(["server", "new", "big", "mid", "small"]);
  });
});

describe("runStatus", () => {
  const r = (ok: boolean) => ({ item: inst("x"), ok, seconds: 1 });
  it("names a run by its items", () => {
    expect(runStatus({ items: [r(true), r(true)], interrupted: false })).toBe("ok");
    expect(runStatus({ items: [r(true), r(false)], interrupted: false })).toBe("partial");
    expect(runStatus({ items: [r(false)], interrupted: false })).toBe("failed");
    expect(runStatus({ items: [r(true)], interrupted: true })).toBe("interrupted");
  });
});

describe("parallelCompression", () => {
  it("compresses on several cores only when the items at work leave cores idle", () => {
    // One item alone on two cores: pzstd.
    expect(parallelCompression(1, 0, 2, 2)).toBe(true);
    // Four items, two slots, two cores: both slots busy, so plain zstd for every item.
    expect(parallelCompression(1, 3, 2, 2)).toBe(false);
    expect(parallelCompression(2, 2, 2, 2)).toBe(false);
    expect(parallelCompression(2, 0, 2, 2)).toBe(false);
    // The last item, once the others are done, on eight cores: pzstd.
    expect(parallelCompression(1, 0, 4, 8)).toBe(true);
    // Four slots busy on eight cores still leave four idle.
    expect(parallelCompression(4, 10, 4, 8)).toBe(true);
    // One CPU: never.
    expect(parallelCompression(1, 0, 1, 1)).toBe(false);
  });
});

describe.each([
  ["streamed (direct_backup)", ["direct_backup"]],
  ["exported", []],
])("backupItems, a cluster's volumes of one name on two members, %s", (_label, apiExtensions) => {
  const volumeOn = (member: string): LiveVolume => ({
    kind: "volume",
    project: "default",
    pool: "local",
    name: "vd",
    member,
    volume: { name: "vd", type: "custom", pool: "local", project: "default", description: "", config: {}, content_type: "filesystem", location: member } as StorageVolume,
  });

  it("backs each up as its own item, asking for that member's volume, with a run record entry and series of its own", async () => {
    const fake = new FakeIncus({ apiExtensions });
    fake.addVolume({ name: "vd", pool: "local", location: "node1" });
    fake.addVolume({ name: "vd", pool: "local", location: "node2" });
    const store = new MemoryStore();
    const deps: BackupDeps = { client: fake.client, store, reporter: silentReporter, now: () => new Date("2025-09-14T03:00:02Z"), toolVersion: "test" };
    const opts: BackupOptions = { selection: { kinds: ["volume"], names: [] }, compression: "gzip", snapshots: false, stop: false, parallel: 2, cpus: 2, command: "backup --volumes" };
    const r = await backupItems(deps, opts, [volumeOn("node1"), volumeOn("node2")], new AbortController().signal);

    expect(r.items.map((i) => [itemLabel(i.item), i.ok, i.error]).sort()).toEqual([
      ["volume default/local/vd on node1", true, undefined],
      ["volume default/local/vd on node2", true, undefined],
    ]);
    // Every request about a backup names the member: without it, Incus cannot tell the two apart.
    const backupCalls = fake.requests.filter((q) => q.path.includes("/backups"));
    expect(backupCalls.length).toBeGreaterThanOrEqual(2);
    expect(backupCalls.every((q) => q.target === "node1" || q.target === "node2")).toBe(true);
    expect(new Set(backupCalls.map((q) => q.target))).toEqual(new Set(["node1", "node2"]));

    const { versions } = await store.list();
    expect(versions.map((v) => [v.location, v.manifest.member]).sort()).toEqual([
      ["memory:/volume/default/local/vd/@node1/20250914-030002", "node1"],
      ["memory:/volume/default/local/vd/@node2/20250914-030002", "node2"],
    ]);
    const [run] = await store.listRuns();
    expect(run!.status).toBe("ok");
    expect(run!.items!.map((i) => [i.label, i.key, i.member]).sort((a, b) => String(a[0]).localeCompare(String(b[0])))).toEqual([
      ["volume default/local/vd on node1", { kind: "volume", project: "default", pool: "local", name: "vd", member: "node1" }, "node1"],
      ["volume default/local/vd on node2", { kind: "volume", project: "default", pool: "local", name: "vd", member: "node2" }, "node2"],
    ]);
  });
});
