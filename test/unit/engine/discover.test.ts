// Which live volumes belong to the backup container alone (its state volume stays out of backups).
import { describe, expect, it } from "vitest";
import { instancesUsingVolume, usedOnlyBy } from "../../../src/engine/discover";
import type { Instance } from "../../../src/incus/instances";
import type { StorageVolume } from "../../../src/incus/storage_volumes";

const vol = (used_by: string[]) => ({ name: "backup-state", type: "custom", project: "default", used_by }) as unknown as StorageVolume;
const self = { project: "default", name: "backup" };

describe("usedOnlyBy", () => {
  it("is true for a volume only the backup container uses", () => {
    expect(usedOnlyBy(vol(["/1.0/instances/backup"]), self)).toBe(true);
    expect(usedOnlyBy(vol(["/1.0/instances/backup?project=default"]), self)).toBe(true);
    expect(usedOnlyBy(vol(["/1.0/instances/backup?project=ops"]), { project: "ops", name: "backup" })).toBe(true);
  });

  it("is false when anything else uses it, or nothing does, or it is another project's instance", () => {
    expect(usedOnlyBy(vol(["/1.0/instances/backup", "/1.0/instances/web"]), self)).toBe(false);
    expect(usedOnlyBy(vol(["/1.0/profiles/default"]), self)).toBe(false);
    expect(usedOnlyBy(vol([]), self)).toBe(false);
    expect(usedOnlyBy(vol(["/1.0/instances/backup?project=ops"]), self)).toBe(false);
    expect(usedOnlyBy(vol(["/1.0/instances/backup-old"]), self)).toBe(false);
  });
});

describe("instancesUsingVolume", () => {
  const inst = (name: string, location: string, source = "vd") =>
    ({ name, project: "default", location, status: "Running", profiles: [], devices: { vd: { type: "disk", pool: "local", source, path: "/mnt" } } }) as unknown as Instance;
  const volume = (location: string | undefined) => ({ name: "vd", type: "custom", project: "default", used_by: [], ...(location === undefined ? {} : { location }) }) as unknown as StorageVolume;

  it("in a cluster, a local volume is used only by instances on its own member (the others name their member's volume of that name)", () => {
    const all = [inst("c1", "node1"), inst("c2", "node2"), inst("c3", "node1", "other")];
    expect(instancesUsingVolume(all, volume("node1"), "local").map((i) => i.name)).toEqual(["c1"]);
    expect(instancesUsingVolume(all, volume("node2"), "local").map((i) => i.name)).toEqual(["c2"]);
  });

  it("outside a cluster, or on a remote pool (location none), every instance that names it", () => {
    const all = [inst("c1", "node1"), inst("c2", "node2")];
    expect(instancesUsingVolume(all, volume(undefined), "local").map((i) => i.name)).toEqual(["c1", "c2"]);
    expect(instancesUsingVolume(all, volume("none"), "local").map((i) => i.name)).toEqual(["c1", "c2"]);
  });
});
