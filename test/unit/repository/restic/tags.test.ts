// How versions are written into restic tags, and read back: a manifest survives the trip, and a
// tag that was tampered with or belongs to another item is never taken for a version.

import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { Manifest } from "../../../../src/core/manifest";
import { dataTags, itemTag, keyOfTag, manifestOf, manifestTags, MAX_MANIFEST_TAG, type ResticSnapshot } from "../../../../src/repository/restic/tags";

const manifest = (over: Partial<Manifest> = {}): Manifest => ({
  format: 1,
  kind: "instance",
  project: "default",
  name: "web",
  pool: "default",
  version: "20250914-030000",
  created: "2025-09-14T03:00:00.000Z",
  tool: { name: "incus-backup", version: "0.1.0" },
  server: { name: "host", version: "6.0.4" },
  options: { compression: "none" },
  object: { name: "web", config: { "user.note": "a, b, c" } },
  status: "Running",
  files: [{ name: "instance.tar", size: 10, sha256: "a".repeat(64), ref: "0123abcd" }],
  ...over,
});

const snapshot = (tags: string[] | undefined): ResticSnapshot => ({ id: "f".repeat(64), time: "2025-09-14T03:00:01Z", tags });

describe("restic tags", () => {
  it("carry the whole manifest, with no comma (restic splits tags at commas)", () => {
    const m = manifest();
    const tags = manifestTags(m)!;
    for (const t of tags) expect(t).not.toContain(",");
    expect(manifestOf(snapshot(tags))).toEqual(m);
  });

  it("name an instance without its pool and a volume with it, URI-encoded", () => {
    expect(itemTag({ kind: "instance", project: "default", name: "web", pool: "default" })).toBe("instance/default//web");
    expect(itemTag({ kind: "volume", project: "p,1", pool: "fast", name: "data/x" })).toBe("volume/p%2C1/fast/data%2Fx");
    const tags = dataTags({ kind: "volume", project: "p,1", pool: "fast", name: "v" }, "20250914-030000", "volume.tar");
    expect(tags).toEqual(["incus-backup", "incus-backup-data", "item=volume/p%2C1/fast/v", "version=20250914-030000", "file=volume.tar"]);
  });

  it("refuse a manifest too large for a command-line argument", () => {
    const random = randomBytes(MAX_MANIFEST_TAG).toString("base64");
    expect(manifestTags(manifest({ object: { junk: random } }))).toBeUndefined();
  });

  it("never take a tampered, foreign or incomplete manifest for a version", () => {
    const tags = manifestTags(manifest())!;
    const swap = (prefix: string, value: string) => tags.map((t) => (t.startsWith(prefix) ? `${prefix}${value}` : t));
    expect(manifestOf(snapshot(swap("m=", "not-deflate")))).toBe("the manifest tag cannot be decoded");
    expect(manifestOf(snapshot(swap("version=", "20250915-030000")))).toBe("the manifest describes another item or version than its tags");
    expect(manifestOf(snapshot(swap("item=", "instance/default//db")))).toBe("the manifest describes another item or version than its tags");
    expect(manifestOf(snapshot(tags.filter((t) => !t.startsWith("m="))))).toBe("the manifest snapshot has no manifest tag");
    const noRef = manifest({ files: [{ name: "instance.tar", size: 10, sha256: "a".repeat(64) }] });
    expect(manifestOf(snapshot(manifestTags(noRef)))).toBe("file instance.tar has no snapshot id");
    expect(manifestOf(snapshot(manifestTags(manifest({ files: [{ name: "../x", size: 1, sha256: "a".repeat(64), ref: "0123abcd" }] }))))).toBe(
      "manifest: a file entry has a bad name",
    );
  });

  it("name a cluster's local volume with its member as a fifth part, and read it back; never an instance's member", () => {
    const vd = { kind: "volume" as const, project: "default", pool: "local", name: "vd", member: "node 2" };
    expect(itemTag(vd)).toBe("volume/default/local/vd/node%202");
    expect(keyOfTag(itemTag(vd))).toEqual(vd);
    expect(itemTag({ kind: "instance", project: "default", name: "web", member: "node2" })).toBe("instance/default//web");
    const m = manifest({ kind: "volume", name: "vd", pool: "local", member: "node2", files: [{ name: "volume.tar", size: 10, sha256: "a".repeat(64), ref: "0123abcd" }] });
    const tags = manifestTags(m)!;
    expect(tags).toContain("item=volume/default/local/vd/node2");
    expect(manifestOf(snapshot(tags))).toEqual(m);
    expect(dataTags(vd, "20250914-030000", "volume.tar")).toContain("item=volume/default/local/vd/node%202");
  });

  it("read the four-part tags written before volumes were keyed by member: the manifest's member is the item's", () => {
    expect(keyOfTag("volume/default/local/vd")).toEqual({ kind: "volume", project: "default", pool: "local", name: "vd" });
    expect(keyOfTag("instance/default//web")).toEqual({ kind: "instance", project: "default", name: "web" });
    const m = manifest({ kind: "volume", name: "vd", pool: "local", member: "node2", files: [{ name: "volume.tar", size: 10, sha256: "a".repeat(64), ref: "0123abcd" }] });
    const old = manifestTags(m)!.map((t) => (t.startsWith("item=") ? "item=volume/default/local/vd" : t));
    expect(manifestOf(snapshot(old))).toEqual(m);
  });

  it("never take a volume's manifest for another member's, and refuse tags that are no item", () => {
    const m = manifest({ kind: "volume", name: "vd", pool: "local", member: "node2", files: [{ name: "volume.tar", size: 10, sha256: "a".repeat(64), ref: "0123abcd" }] });
    const as = (item: string) => manifestTags(m)!.map((t) => (t.startsWith("item=") ? `item=${item}` : t));
    expect(manifestOf(snapshot(as("volume/default/local/vd/node1")))).toBe("the manifest describes another item or version than its tags");
    const none = manifest({ kind: "volume", name: "vd", pool: "local", files: m.files });
    expect(manifestOf(snapshot(manifestTags(none)!.map((t) => (t.startsWith("item=") ? "item=volume/default/local/vd/node2" : t))))).toBe(
      "the manifest describes another item or version than its tags",
    );
    for (const bad of ["volume/default/local", "volume/default/local/vd/node2/x", "instance/default//web/node2", "volume/default/local/vd/", "disk/default//x", "volume/%E0/local/vd"]) {
      expect(keyOfTag(bad)).toBeUndefined();
    }
  });
});
