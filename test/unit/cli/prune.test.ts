// `prune` on real temp repositories: refusing empty policies, --dry-run decisions, removal, the lock, the record.

import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DirectoryStore } from "../../../src/repository/directory";
import { RepositoryLock } from "../../../src/repository/lock";
import { runCli } from "../helpers/cli";
import { data, tempDir, web, writeVersion } from "../helpers/repo";

const WEB_VERSIONS = ["20250901-030000", "20250902-030000", "20250902-150000", "20250908-030000", "20250914-030000"];

async function fixture(): Promise<{ dir: string; repo: DirectoryStore }> {
  const dir = await tempDir();
  const { repo } = await DirectoryStore.open(dir, { create: true });
  for (const v of WEB_VERSIONS) await writeVersion(repo, web, v);
  await writeVersion(repo, data, "20250914-030000");
  return { dir, repo };
}

async function versionsOf(dir: string, ...path: string[]): Promise<string[]> {
  return (await readdir(join(dir, ...path))).sort();
}

describe("prune: refusals", () => {
  it.each<[string[]]>([[["--name", "webb"]], [["--instances", "--name", "web", "--name", "db"]], [["--name", "名前"]], [["--dry-run", "--volumes", "--name", "fast/other"]]])(
    "%j: a --name that matches nothing exits 5 and records nothing",
    async (args) => {
      const { dir } = await fixture();
      const r = await runCli(["prune", "--keep-last", "1", "--dir", dir, ...args]);
      expect(r.code).toBe(5);
      expect(r.stderr).toMatch(/^error: nothing in the repository is named "(webb|db|名前|fast\/other)"/);
      expect(await versionsOf(dir)).not.toContain("state");
      expect(await versionsOf(dir, "instances", "default", "web")).toEqual(WEB_VERSIONS);
    },
  );

  it.each<[string[], RegExp]>([
    [[], /no retention policy/],
    [["--keep-daily", "0", "--keep-last", "0"], /every --keep-\* option is 0/],
    [["--keep-daily", "seven"], /--keep-daily="seven": use a whole number/],
    [["--keep-daily", "-1"], /needs a value|whole number/],
    [["--keep-last"], /option --keep-last needs a value/],
    [["--keep-last", "--dry-run"], /option --keep-last needs a value/],
  ])("%j exits 2", async (args, message) => {
    const { dir } = await fixture();
    const r = await runCli(["prune", "--dir", dir, ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(await versionsOf(dir, "instances", "default", "web")).toEqual(WEB_VERSIONS);
  });

  it("refuses an unknown INCUS_BACKUP_TZ", async () => {
    const { dir } = await fixture();
    const r = await runCli(["prune", "--dir", dir, "--keep-last", "1"], { env: { INCUS_BACKUP_TZ: "Moon/Tranquility" } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown time zone/);
  });
});

describe("prune --dry-run", () => {
  it("lists every version as keep or remove with the rules that keep it, and removes nothing", async () => {
    const { dir } = await fixture();
    const r = await runCli(["prune", "--dir", dir, "--keep-daily", "2", "--keep-weekly", "2", "--dry-run"]);
    expect(r.code).toBe(0);
    const rows = r.stdout.split("\n").filter((l) => /^(keep|remove) /.test(l)).map((l) => l.split(/\s{2,}/));
    expect(rows.map((c) => [c[0], c[1], c[2], c[5] ?? ""])).toEqual([
      ["keep", "instance default/web", "20250914-030000", "daily 2025-09-14, weekly 2025-W37"],
      ["keep", "instance default/web", "20250908-030000", "daily 2025-09-08"],
      ["keep", "instance default/web", "20250902-150000", "weekly 2025-W36"],
      ["remove", "instance default/web", "20250902-030000", ""],
      ["remove", "instance default/web", "20250901-030000", ""],
      ["keep", "volume default/fast/data", "20250914-030000", "daily 2025-09-14, weekly 2025-W37"],
    ]);
    expect(r.stdout).toMatch(/dry run: would remove 2 and keep 4 version\(s\) of 2 item\(s\)/);
    expect(await versionsOf(dir, "instances", "default", "web")).toEqual(WEB_VERSIONS);
  });

  it("puts periods in INCUS_BACKUP_TZ", async () => {
    const { dir } = await fixture();
    const r = await runCli(["prune", "--dir", dir, "--keep-daily", "1", "--dry-run", "--json"], { env: { INCUS_BACKUP_TZ: "America/New_York" } });
    const j = JSON.parse(r.stdout) as { tz: string; items: Array<{ name: string; versions: Array<{ version: string; time: string; reasons: string[]; action: string }> }> };
    expect(j.tz).toBe("America/New_York");
    const newest = j.items.find((i) => i.name === "web")!.versions[0]!;
    expect(newest).toMatchObject({ version: "20250914-030000", time: "2025-09-13 23:00:00 -04:00", action: "keep", reasons: ["daily 2025-09-13"] });
  });

  it("uses the INCUS_BACKUP_KEEP_* settings without --keep-* options, and says so", async () => {
    const { dir } = await fixture();
    const r = await runCli(["prune", "--dir", dir, "--dry-run"], { env: { INCUS_BACKUP_KEEP_LAST: "3" } });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/using the policy of the INCUS_BACKUP_KEEP_\* settings: last 3/);
    expect(r.stdout).toMatch(/would remove 2 and keep 4/);
  });
});

describe("prune", () => {
  it("removes what the policy does not keep, per item, and records the result", async () => {
    const { dir, repo } = await fixture();
    const r = await runCli(["prune", "--dir", dir, "--keep-last", "2", "--instances"], { now: new Date("2025-09-14T04:00:00Z") });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/prune: removed 3 and kept 2 version\(s\) of 1 item\(s\)/);
    expect(await versionsOf(dir, "instances", "default", "web")).toEqual(["20250908-030000", "20250914-030000"]);
    expect(await versionsOf(dir, "volumes", "default", "fast", "data")).toEqual(["20250914-030000"]);
    // Nothing half-deleted is left in the temp area, and the repository lists cleanly.
    expect(await readdir(join(dir, ".tmp"))).toEqual([]);
    const listing = await repo.list();
    expect(listing.damaged).toEqual([]);
    const record = JSON.parse(await readFile(join(dir, "state", "prune.json"), "utf8")) as Record<string, unknown>;
    expect(record).toMatchObject({ trigger: "manual", removed: 3, kept: 2, failed: [], interrupted: false, tz: "UTC" });
    expect(record.policy).toMatchObject({ last: 2, daily: 0 });
  });

  it("never removes the newest version of an item", async () => {
    const { dir } = await fixture();
    const r = await runCli(["prune", "--dir", dir, "--keep-yearly", "1"]);
    expect(r.code).toBe(0);
    expect(await versionsOf(dir, "instances", "default", "web")).toEqual(["20250914-030000"]);
    expect(await versionsOf(dir, "volumes", "default", "fast", "data")).toEqual(["20250914-030000"]);
  });

  it("fails at once with exit 7 while another run holds the lock", async () => {
    const { dir } = await fixture();
    const lock = await RepositoryLock.acquire(dir, "incus-backup daemon (scheduled backup and prune)");
    try {
      const r = await runCli(["prune", "--dir", dir, "--keep-last", "1"]);
      expect(r.code).toBe(7);
      expect(r.stderr).toMatch(/locked by pid \d+ on host .* \(incus-backup daemon/);
      expect(await versionsOf(dir, "instances", "default", "web")).toEqual(WEB_VERSIONS);
    } finally {
      await lock.release();
    }
  });

  it("refuses an empty directory (an unmounted NAS, not an empty repository): exit 8, nothing written", async () => {
    const dir = await tempDir();
    const r = await runCli(["prune", "--dir", dir, "--keep-last", "1"]);
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/is not an incus-backup repository \(is the NAS mounted\?\)/);
    expect(await readdir(dir)).toEqual([]);
  });
});
