// Selector flags to a Selection, and matching items against it.

import { describe, expect, it } from "vitest";
import { UsageError } from "../../../src/errors";
import {
  itemId,
  itemLabel,
  keyOf,
  matches,
  nameMatches,
  selectionFrom,
  unmatchedNames,
  type ItemKey,
  type Kind,
  type Selection,
} from "../../../src/core/selection";

const BACKUP_ALL: Kind[] = ["instance", "volume"];

describe("selectionFrom", () => {
  it("refuses no selector at all when the command needs one", () => {
    expect(() => selectionFrom({}, BACKUP_ALL, false)).toThrow(UsageError);
    expect(() => selectionFrom({ names: ["web"] }, BACKUP_ALL, false)).toThrow(/--all, --instances, --volumes/);
    expect(() => selectionFrom({ project: "default" }, BACKUP_ALL, false)).toThrow(UsageError);
  });

  it("treats no selector as --all when the command allows it", () => {
    expect(selectionFrom({}, BACKUP_ALL, true)).toEqual({ kinds: ["volume", "instance"], names: [] });
  });

  it.each<[string, Parameters<typeof selectionFrom>[0], Kind[]]>([
    ["--all", { all: true }, ["volume", "instance"]],
    ["--instances", { instances: true }, ["instance"]],
    ["--volumes", { volumes: true }, ["volume"]],
    ["--instances --volumes", { instances: true, volumes: true }, ["volume", "instance"]],
    ["--all --images", { all: true, images: true }, ["image", "volume", "instance"]],
    ["--database", { database: true }, ["database"]],
    ["--instances (defaultAll)", { instances: true }, ["instance"]],
  ])("%s gives kinds in restore order", (_label, flags, kinds) => {
    expect(selectionFrom(flags, BACKUP_ALL, true).kinds).toEqual(kinds);
  });

  it("expands --all to the command's kinds", () => {
    expect(selectionFrom({ all: true }, ["database", "image", "volume", "instance"], false).kinds).toEqual([
      "database",
      "image",
      "volume",
      "instance",
    ]);
    expect(selectionFrom({ all: true }, ["instance"], false).kinds).toEqual(["instance"]);
  });

  it("keeps names and a valid project", () => {
    expect(selectionFrom({ instances: true, names: ["web", "db"], project: "prod" }, BACKUP_ALL, false)).toEqual({
      kinds: ["instance"],
      names: ["web", "db"],
      project: "prod",
    });
  });

  it("keeps --member, and leaves it out when none is given", () => {
    expect(selectionFrom({ volumes: true, names: ["vd"], member: "node2" }, BACKUP_ALL, false)).toEqual({ kinds: ["volume"], names: ["vd"], member: "node2" });
    expect(selectionFrom({ all: true, member: undefined }, BACKUP_ALL, false)).not.toHaveProperty("member");
  });

  it("leaves the project out when none is given", () => {
    expect(selectionFrom({ all: true, project: undefined }, BACKUP_ALL, false)).not.toHaveProperty("project");
  });

  it.each<[string, Parameters<typeof selectionFrom>[0], RegExp]>([
    ["empty name", { all: true, names: [""] }, /must not be empty/],
    ["instance name with a slash", { instances: true, names: ["../x"] }, /only volumes/],
    ["instance name that is not a hostname", { instances: true, names: ["web_01"] }, /invalid instance name/],
    ["instance name that is a number", { instances: true, names: ["42"] }, /cannot be a number/],
    ["dot-dot with --all", { all: true, names: [".."] }, /invalid name/],
    ["dot-dot volume", { volumes: true, names: [".."] }, /invalid name/],
    ["volume with two slashes", { volumes: true, names: ["a/b/c"] }, /POOL\/NAME/],
    ["volume with an unsafe pool", { volumes: true, names: ["../x"] }, /invalid pool name/],
    ["volume with an unsafe name", { volumes: true, names: ["pool/.."] }, /invalid volume name/],
    ["control character", { all: true, names: ["a\u0007"] }, /control/],
    ["unsafe project", { all: true, project: "../etc" }, /invalid project name/],
    ["empty project", { all: true, project: "" }, /invalid project name/],
    ["unsafe member", { all: true, member: "../node1" }, /invalid --member/],
    ["empty member", { volumes: true, member: "" }, /invalid --member/],
  ])("refuses %s", (_label, flags, reason) => {
    expect(() => selectionFrom(flags, BACKUP_ALL, false)).toThrow(UsageError);
    expect(() => selectionFrom(flags, BACKUP_ALL, false)).toThrow(reason);
  });

  it.each<[string, Parameters<typeof selectionFrom>[0]]>([
    ["a POOL/NAME volume", { volumes: true, names: ["default/data"] }],
    ["a POOL/NAME with --all", { all: true, names: ["default/data"] }],
    ["an image alias with slashes", { images: true, names: ["ubuntu/24.04/cloud"] }],
    ["a volume name that is not a hostname", { volumes: true, names: ["data_01.v2"] }],
    ["a unicode volume name", { volumes: true, names: ["données"] }],
  ])("accepts %s", (_label, flags) => {
    expect(() => selectionFrom(flags, BACKUP_ALL, false)).not.toThrow();
  });
});

const web: ItemKey = { kind: "instance", project: "default", name: "web" };
const webProd: ItemKey = { kind: "instance", project: "prod", name: "web" };
const data: ItemKey = { kind: "volume", project: "default", pool: "fast", name: "data" };
const dataSlow: ItemKey = { kind: "volume", project: "default", pool: "slow", name: "data" };
const FP = "9f3c1e2a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";
const image: ItemKey = { kind: "image", project: "default", name: FP, aliases: ["ubuntu/24.04", "noble"] };
const database: ItemKey = { kind: "database", project: "", name: "server" };
/** A cluster's local volume of one name on two members: two items. */
const vdNode1: ItemKey = { kind: "volume", project: "default", pool: "default", name: "vd", member: "node1" };
const vdNode2: ItemKey = { kind: "volume", project: "default", pool: "default", name: "vd", member: "node2" };
/** An instance's manifest records its member; it is no part of its identity. */
const webOnNode2: ItemKey = { ...web, member: "node2" };

describe("nameMatches", () => {
  it.each<[string, ItemKey, boolean]>([
    ["web", web, true],
    ["we", web, false],
    ["WEB", web, false],
    ["data", web, false],
    ["data", data, true],
    ["data", dataSlow, true],
    ["fast/data", data, true],
    ["fast/data", dataSlow, false],
    ["slow/data", dataSlow, true],
    ["fast/", data, false],
    ["/data", data, false],
    ["fast", data, false],
    [FP, image, true],
    [FP.slice(0, 12), image, true],
    [FP.slice(0, 11), image, false],
    [FP.slice(1, 13), image, false],
    ["noble", image, true],
    ["ubuntu/24.04", image, true],
    ["ubuntu", image, false],
    ["server", database, false],
    ["anything", database, false],
  ])("%j against %j -> %s", (filter, item, expected) => {
    expect(nameMatches(filter, item)).toBe(expected);
  });

  it("matches an image without aliases by fingerprint only", () => {
    const bare: ItemKey = { kind: "image", project: "default", name: FP };
    expect(nameMatches(FP.slice(0, 12), bare)).toBe(true);
    expect(nameMatches("noble", bare)).toBe(false);
  });
});

describe("matches", () => {
  const sel = (s: Partial<Selection>): Selection => ({ kinds: ["database", "image", "volume", "instance"], names: [], ...s });

  it.each<[string, Selection, ItemKey, boolean]>([
    ["no filter", sel({}), web, true],
    ["kind not selected", sel({ kinds: ["volume"] }), web, false],
    ["project filter, same project", sel({ project: "default" }), web, true],
    ["project filter, other project", sel({ project: "default" }), webProd, false],
    ["name filter, match", sel({ names: ["db", "web"] }), web, true],
    ["name filter, no match", sel({ names: ["db"] }), web, false],
    ["name and project", sel({ names: ["web"], project: "prod" }), webProd, true],
    ["name and other project", sel({ names: ["web"], project: "prod" }), web, false],
    ["volume by POOL/NAME", sel({ names: ["slow/data"] }), dataSlow, true],
    ["volume by other pool", sel({ names: ["slow/data"] }), data, false],
    ["image by alias", sel({ names: ["noble"] }), image, true],
    ["database ignores names", sel({ names: ["web"] }), database, true],
    ["database ignores project", sel({ project: "prod" }), database, true],
    ["database not selected", sel({ kinds: ["instance"] }), database, false],
    ["--member, a volume of that member", sel({ member: "node2", names: ["vd"] }), vdNode2, true],
    ["--member, the same name on another member", sel({ member: "node2", names: ["vd"] }), vdNode1, false],
    ["--member, an instance backed up there (its manifest)", sel({ member: "node2" }), webOnNode2, true],
    ["--member, an instance without a member (not a cluster)", sel({ member: "node2" }), web, false],
    ["--member, a volume without a member", sel({ member: "node2" }), data, false],
    ["--member leaves the database in", sel({ member: "node2" }), database, true],
    ["--member leaves images in", sel({ member: "node2" }), image, true],
  ])("%s", (_label, s, item, expected) => {
    expect(matches(s, item)).toBe(expected);
  });
});

describe("unmatchedNames", () => {
  const items = [web, webProd, data, dataSlow, image];

  it("lists the names that matched nothing", () => {
    const s: Selection = { kinds: ["volume", "instance"], names: ["web", "nope", "fast/data", "other/data"] };
    expect(unmatchedNames(s, items)).toEqual(["nope", "other/data"]);
  });

  it("counts a match only within the selected kinds", () => {
    const s: Selection = { kinds: ["instance"], names: ["web", "data"] };
    expect(unmatchedNames(s, items)).toEqual(["data"]);
  });

  it("counts a match only within the selected project", () => {
    const s: Selection = { kinds: ["volume", "instance"], names: ["web", "data"], project: "prod" };
    expect(unmatchedNames(s, items)).toEqual(["data"]);
  });

  it("is empty without names", () => {
    expect(unmatchedNames({ kinds: ["instance"], names: [] }, [])).toEqual([]);
  });

  it("matches images by alias and by fingerprint prefix", () => {
    const s: Selection = { kinds: ["image"], names: ["noble", FP.slice(0, 12), FP.slice(0, 8)] };
    expect(unmatchedNames(s, items)).toEqual([FP.slice(0, 8)]);
  });
});

describe("itemLabel", () => {
  it.each<[ItemKey, string]>([
    [web, "instance default/web"],
    [webProd, "instance prod/web"],
    [data, "volume default/fast/data"],
    [image, "image default/ubuntu/24.04"],
    [{ kind: "image", project: "default", name: FP }, `image default/${FP.slice(0, 12)}`],
    [database, "database"],
    [vdNode2, "volume default/default/vd on node2"],
    [webOnNode2, "instance default/web"],
  ])("%j -> %s", (item, label) => {
    expect(itemLabel(item)).toBe(label);
  });
});

describe("itemId", () => {
  it("tells apart items that differ only by pool, project or kind", () => {
    const dataInstance: ItemKey = { kind: "instance", project: "default", name: "data" };
    const ids = [web, webProd, data, dataSlow, dataInstance].map(itemId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("includes a volume's member (a local pool has one volume of a name per member), never an instance's", () => {
    const vd: ItemKey = { kind: "volume", project: "default", pool: "default", name: "vd" };
    expect(new Set([vd, vdNode1, vdNode2].map(itemId)).size).toBe(3);
    expect(itemId(webOnNode2)).toBe(itemId(web));
    expect(itemId({ ...webOnNode2, member: "node1" })).toBe(itemId(web));
  });
});

describe("keyOf", () => {
  it("keeps the identity only: a volume's member, not an instance's, and nothing a manifest adds", () => {
    expect(keyOf({ ...vdNode2, aliases: [] } as ItemKey)).toEqual(vdNode2);
    expect(keyOf(webOnNode2)).toEqual(web);
    expect(keyOf({ kind: "instance", project: "default", pool: "default", name: "web", member: "node1", version: "20250914-030002" } as ItemKey)).toEqual({ ...web, pool: "default" });
  });
});
