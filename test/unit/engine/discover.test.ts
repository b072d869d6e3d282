// Which live volumes belong to the backup container alone (its state volume stays out of backups).
import { describe, expect, it } from "vitest";
import { usedOnlyBy } from "../../../src/engine/discover";
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
