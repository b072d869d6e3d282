// Per-item backup settings: user.incus-backup.* keys, the service-wide defaults and the command line, decided per item.

import { describe, expect, it } from "vitest";
import { DEFAULT_BACKUP_DEFAULTS, decideItem, globMatch, parsePatternList, type BackupDefaults, type ItemFacts } from "../../../src/core/item_settings";
import { backupDefaultsFromEnv } from "../../../src/core/settings";
import { UsageError } from "../../../src/errors";

const inst = (name: string, config: Record<string, string> = {}, more: Partial<ItemFacts> = {}): ItemFacts => ({ kind: "instance", project: "default", name, config, ...more });
const vol = (name: string, config: Record<string, string> = {}, pool = "tank"): ItemFacts => ({ kind: "volume", project: "default", pool, name, config });
const defaults = (d: Partial<BackupDefaults> = {}): BackupDefaults => ({ ...DEFAULT_BACKUP_DEFAULTS, ...d });

describe("decideItem", () => {
  it("backs up live, without snapshots, by default", () => {
    expect(decideItem(inst("web"), false, defaults())).toEqual({ mode: "live", modeFrom: "default", snapshots: false, snapshotsFrom: "default", warnings: [] });
    expect(decideItem(vol("data"), false, defaults())).toEqual({ snapshots: false, snapshotsFrom: "default", warnings: [] });
  });

  it("takes mode and snapshots from the item's keys, over the defaults", () => {
    const d = decideItem(inst("db", { "user.incus-backup.mode": "stop", "user.incus-backup.snapshots": "true" }), false, defaults({ snapshots: false }));
    expect(d).toMatchObject({ mode: "stop", modeFrom: "key", snapshots: true, snapshotsFrom: "key" });
    expect(decideItem(inst("db", { "user.incus-backup.mode": "LIVE" }), false, defaults({ mode: "stop" }))).toMatchObject({ mode: "live", modeFrom: "key" });
    expect(decideItem(vol("data", { "user.incus-backup.snapshots": "yes" }), false, defaults())).toMatchObject({ snapshots: true, snapshotsFrom: "key" });
  });

  it("reads keys set in a profile (the expanded config); the instance's own win", () => {
    expect(decideItem(inst("a", {}, { expandedConfig: { "user.incus-backup.mode": "stop" } }), false, defaults())).toMatchObject({ mode: "stop" });
    expect(decideItem(inst("a", { "user.incus-backup.mode": "live" }, { expandedConfig: { "user.incus-backup.mode": "stop" } }), false, defaults())).toMatchObject({ mode: "live" });
    expect(decideItem(inst("a", {}, { expandedConfig: { "user.incus-backup.exclude": "true" } }), false, defaults()).skip).toBe("user.incus-backup.exclude=true");
  });

  it("lets the command line win over the keys", () => {
    const item = inst("db", { "user.incus-backup.mode": "stop", "user.incus-backup.snapshots": "true" });
    expect(decideItem(item, false, defaults(), { mode: "live", snapshots: false })).toMatchObject({ mode: "live", modeFrom: "command line", snapshots: false, snapshotsFrom: "command line" });
  });

  it("ignores a value it does not understand, with a warning, and still backs the item up", () => {
    const d = decideItem(inst("x", { "user.incus-backup.mode": "paused", "user.incus-backup.exclude": "maybe", "user.incus-backup.snapshots": "2" }), false, defaults());
    expect(d.skip).toBeUndefined();
    expect(d.mode).toBe("live");
    expect(d.warnings).toHaveLength(3);
    expect(d.warnings.join("\n")).toMatch(/user\.incus-backup\.mode="paused" is not stop or live/);
  });

  it("skips excluded items and says why", () => {
    expect(decideItem(inst("tmp", { "user.incus-backup.exclude": "true" }), false, defaults()).skip).toBe("user.incus-backup.exclude=true");
    expect(decideItem(vol("scratch", { "user.incus-backup.exclude": "on" }), false, defaults()).skip).toBe("user.incus-backup.exclude=true");
    expect(decideItem(inst("ci-runner-3"), false, defaults({ exclude: ["ci-*"] })).skip).toBe('excluded by "ci-*"');
    expect(decideItem(inst("web", {}, { project: "dev" }), false, defaults({ excludeProjects: ["de?"] })).skip).toBe('project dev is excluded ("de?")');
    expect(decideItem(inst("web"), false, defaults({ exclude: ["ci-*"], excludeProjects: ["dev"] })).skip).toBeUndefined();
  });

  it("matches patterns against the short name and the forms with pool and project", () => {
    expect(decideItem(vol("cache"), false, defaults({ exclude: ["tank/*"] })).skip).toBeDefined();
    expect(decideItem(vol("cache"), false, defaults({ exclude: ["default/tank/cache"] })).skip).toBeDefined();
    expect(decideItem(vol("cache", {}, "ssd"), false, defaults({ exclude: ["tank/*"] })).skip).toBeUndefined();
    expect(decideItem(inst("web"), false, defaults({ exclude: ["default/w*"] })).skip).toBeDefined();
    expect(decideItem(inst("web", {}, { project: "prod" }), false, defaults({ exclude: ["default/w*"] })).skip).toBeUndefined();
  });

  it("skips ephemeral instances unless asked for", () => {
    expect(decideItem(inst("e", {}, { ephemeral: true }), false, defaults()).skip).toBe("ephemeral");
    expect(decideItem(inst("e", {}, { ephemeral: true }), false, defaults({ ephemeral: true })).skip).toBeUndefined();
  });

  it("keeps an item whose key says exclude=false, whatever the service-wide rules say", () => {
    const keep = { "user.incus-backup.exclude": "false" };
    expect(decideItem(inst("ci-main", keep, { ephemeral: true, project: "dev" }), false, defaults({ exclude: ["ci-*"], excludeProjects: ["dev"] })).skip).toBeUndefined();
  });

  it("backs up an excluded item named on the command line, and notes it", () => {
    const d = decideItem(inst("tmp", { "user.incus-backup.exclude": "true" }), true, defaults());
    expect(d.skip).toBeUndefined();
    expect(d.warnings).toEqual(["user.incus-backup.exclude=true, but it was named with --name: backed up"]);
    expect(decideItem(inst("e", {}, { ephemeral: true }), true, defaults()).skip).toBeUndefined();
  });

  it("never skips the database or images", () => {
    expect(decideItem({ kind: "database", project: "", name: "server" }, false, defaults({ exclude: ["*"] })).skip).toBeUndefined();
    expect(decideItem({ kind: "image", project: "default", name: "abc" }, false, defaults({ exclude: ["*"], excludeProjects: ["*"] })).skip).toBeUndefined();
  });
});

describe("globMatch", () => {
  it("has * and ? within one path part, and everything else literal", () => {
    expect(globMatch("web-*", "web-1")).toBe(true);
    expect(globMatch("web-*", "web-")).toBe(true);
    expect(globMatch("*", "a/b")).toBe(false);
    expect(globMatch("w?b", "web")).toBe(true);
    expect(globMatch("w.b", "web")).toBe(false);
    expect(globMatch("a+b", "a+b")).toBe(true);
    expect(globMatch("[ab]", "a")).toBe(false);
  });
});

describe("the service-wide backup settings", () => {
  it("default to live, no snapshots, no exclusions, ephemeral skipped, the repository's compression", () => {
    expect(backupDefaultsFromEnv({})).toEqual({ backup: DEFAULT_BACKUP_DEFAULTS, compression: undefined });
  });

  it("read INCUS_BACKUP_EXCLUDE, _EXCLUDE_PROJECTS, _MODE, _SNAPSHOTS, _EPHEMERAL and _COMPRESSION", () => {
    const s = backupDefaultsFromEnv({
      INCUS_BACKUP_EXCLUDE: "ci-*, tank/cache  dev/scratch",
      INCUS_BACKUP_EXCLUDE_PROJECTS: "sandbox,test-*",
      INCUS_BACKUP_MODE: "Stop",
      INCUS_BACKUP_SNAPSHOTS: "yes",
      INCUS_BACKUP_EPHEMERAL: "true",
      INCUS_BACKUP_COMPRESSION: "gzip",
    });
    expect(s).toEqual({
      backup: { exclude: ["ci-*", "tank/cache", "dev/scratch"], excludeProjects: ["sandbox", "test-*"], mode: "stop", snapshots: true, ephemeral: true },
      compression: "gzip",
    });
  });

  it("refuses bad values, naming the variable", () => {
    for (const [k, v, msg] of [
      ["INCUS_BACKUP_MODE", "paused", /INCUS_BACKUP_MODE="paused": use stop or live/],
      ["INCUS_BACKUP_SNAPSHOTS", "maybe", /INCUS_BACKUP_SNAPSHOTS/],
      ["INCUS_BACKUP_COMPRESSION", "brotli", /INCUS_BACKUP_COMPRESSION="brotli": use one of zstd, gzip/],
      ["INCUS_BACKUP_EXCLUDE", "a/b/c/d", /INCUS_BACKUP_EXCLUDE: "a\/b\/c\/d" is not a pattern/],
      ["INCUS_BACKUP_EXCLUDE", "../x", /not a pattern/],
      ["INCUS_BACKUP_EXCLUDE_PROJECTS", "a/b", /use a project name/],
    ] as const) {
      expect(() => backupDefaultsFromEnv({ [k]: v }), k).toThrow(UsageError);
      expect(() => backupDefaultsFromEnv({ [k]: v }), k).toThrow(msg);
    }
  });

  it("splits pattern lists on commas and white space", () => {
    expect(parsePatternList(" a ,b\tc\n", "X")).toEqual(["a", "b", "c"]);
    expect(parsePatternList(undefined, "X")).toEqual([]);
  });
});
