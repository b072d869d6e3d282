// Restore drills, the pure parts: what a copy keeps, the stand-ins its import needs, the rotation, limits, the volume comparison.

import { describe, expect, it } from "vitest";
import { DRILL_PROJECT, drillCopy, parseLimits, placeholdersFor, rotation } from "../../../src/core/drill";
import { decideItem, DEFAULT_BACKUP_DEFAULTS } from "../../../src/core/item_settings";
import { compareEntries } from "../../../src/engine/drill";
import type { CatalogEntry } from "../../../src/engine/catalog";
import { entryProblem } from "../../../src/repository/journal";
import { UsageError } from "../../../src/errors";

describe("drillCopy", () => {
  const inst = {
    config: {
      "limits.memory": "256MiB",
      "boot.autostart": "true",
      "volatile.eth0.hwaddr": "10:66:6a:00:00:01",
      "volatile.eth0.host_name": "veth1234",
      "volatile.uuid": "u",
      "cloud-init.user-data": "#cloud-config",
    },
    devices: {
      root: { type: "disk", path: "/", pool: "default" },
      eth0: { type: "nic", network: "incusbr0", "ipv4.address": "10.77.0.50" },
      eth1: { type: "nic", nictype: "bridged", parent: "br0" },
      data: { type: "disk", path: "/srv", pool: "tank", source: "data" },
      host: { type: "disk", path: "/mnt/h", source: "/srv/share" },
      web: { type: "proxy", listen: "tcp:0.0.0.0:80", connect: "tcp:127.0.0.1:80" },
      gpu: { type: "gpu" },
    },
  };

  it("keeps the root disk only, and says what it dropped", () => {
    const c = drillCopy(inst, { "limits.cpu": "1" });
    expect(c.devices).toEqual({ root: { type: "disk", path: "/", pool: "default" } });
    expect(c.dropped).toEqual(["data (disk volume tank/data)", "eth0 (nic on incusbr0)", "eth1 (nic on br0)", "gpu (gpu)", "host (disk host path /srv/share)", "web (proxy tcp:0.0.0.0:80)"]);
  });

  it("drops the NICs' MACs and host names, never starts at boot, applies the drill's limits, keeps the rest", () => {
    const c = drillCopy(inst, { "limits.cpu": "1", "limits.memory": "128MiB" });
    expect(c.config).toEqual({ "limits.memory": "128MiB", "limits.cpu": "1", "boot.autostart": "false", "volatile.uuid": "u", "cloud-init.user-data": "#cloud-config" });
  });
});

describe("placeholdersFor", () => {
  it("names each custom volume the instance's own disks use, once; not host paths, the root disk or snapshots", () => {
    expect(
      placeholdersFor({
        root: { type: "disk", path: "/", pool: "default" },
        a: { type: "disk", path: "/a", pool: "tank", source: "data" },
        b: { type: "disk", path: "/b", pool: "tank", source: "data" },
        c: { type: "disk", path: "/c", source: "/srv" },
        d: { type: "disk", path: "/d", pool: "tank", source: "data/snap0" },
        e: { type: "nic", network: "x" },
      }),
    ).toEqual([{ pool: "tank", name: "data" }]);
    expect(placeholdersFor(undefined)).toEqual([]);
  });
});

describe("rotation", () => {
  const items = ["a", "b", "c", "d"].map((name) => ({ kind: "instance" as const, project: "default", name }));
  const id = (n: string) => `instance\u0000default\u0000\u0000${n}`;

  it("takes the never-drilled first, then the longest ago, at most max", () => {
    const last = new Map([
      [id("a"), "2025-05-03T00:00:00Z"],
      [id("b"), "2025-05-01T00:00:00Z"],
      [id("d"), "2025-05-02T00:00:00Z"],
    ]);
    expect(rotation(items, last, 2).map((i) => i.name)).toEqual(["c", "b"]);
  });

  it("over runs, drills every item in turn", () => {
    const last = new Map<string, string>();
    const seen: string[] = [];
    for (let run = 0; run < 4; run++) {
      const picked = rotation(items, last, 1);
      seen.push(picked[0]!.name);
      last.set(id(picked[0]!.name), `2025-05-0${run + 1}T00:00:00Z`);
    }
    expect(seen.sort()).toEqual(["a", "b", "c", "d"]);
  });
});

describe("parseLimits", () => {
  it("takes limits.* keys and refuses anything else", () => {
    expect(parseLimits(["limits.cpu=2", "limits.memory=1GiB"], "X")).toEqual({ "limits.cpu": "2", "limits.memory": "1GiB" });
    expect(() => parseLimits(["security.privileged=true"], "--limit")).toThrow(UsageError);
    expect(() => parseLimits(["limits.cpu"], "--limit")).toThrow(/is not a limit/);
  });
});

describe("compareEntries", () => {
  const e = (path: string, size = 0, type: CatalogEntry["type"] = "file"): CatalogEntry => ({ snapshot: "", path, type, mode: 0o644, uid: 0, gid: 0, size, mtime: 0 });

  it("finds missing, extra, retyped and resized entries", () => {
    expect(compareEntries([e("/a", 1), e("/b", 2), e("/c"), e("/d", 4)], [e("/a", 1), e("/b", 3), e("/c", 0, "dir"), e("/x")])).toEqual([
      "/b has 3 bytes, not 2",
      "/c is a dir, not a file",
      "/d is missing",
      "/x is not in the backup",
    ]);
    expect(compareEntries([e("/a", 1)], [e("/a", 1)])).toEqual([]);
  });
});

describe("the scratch project", () => {
  it("is never backed up, even when named", () => {
    const item = { kind: "instance" as const, project: DRILL_PROJECT, name: "ibk-drill-0123abcd" };
    expect(decideItem(item, true, DEFAULT_BACKUP_DEFAULTS).skip).toBe("a restore drill's scratch copy");
  });

  it("nor is a stand-in volume of a cluster restore", () => {
    const v = { kind: "volume" as const, project: "default", pool: "default", name: "data", config: { "user.incus-backup.stand-in": "true" } };
    expect(decideItem(v, true, DEFAULT_BACKUP_DEFAULTS).skip).toMatch(/stand-in/);
  });

  it("a drill's journal entry may name only drill copies in the scratch project", () => {
    const ok = { id: "ab12", kind: "drill", phase: "drill", project: DRILL_PROJECT, name: "web", temp: "ibk-drill-0123abcd", drill: { of: "instance", placeholders: [{ pool: "tank", name: "data" }] }, restart: [], started: "2025-01-01T00:00:00Z" };
    expect(entryProblem(ok, "ab12")).toBeUndefined();
    expect(entryProblem({ ...ok, project: "default" }, "ab12")).toMatch(/outside the incus-backup-drill project/);
    expect(entryProblem({ ...ok, temp: "web" }, "ab12")).toMatch(/not one this tool makes/);
    expect(entryProblem({ ...ok, drill: { of: "volume", placeholders: [] } }, "ab12")).toMatch(/without its pool/);
    expect(entryProblem({ ...ok, drill: { of: "instance", placeholders: [{ pool: "../x", name: "y" }] } }, "ab12")).toMatch(/stand-in/);
  });
});
