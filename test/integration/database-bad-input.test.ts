// Bad input to `restore --database` (issue 4): a manifest or JSON file of the backup truncated or
// tampered with makes the restore refuse (exit 9) before it changes anything, even with --force.
//
// The repository holds two database versions (the profile at v=1, then v=2) and the server has
// drifted to v=3; each case damages the newest version in its own copy of the repository.
import { cp, readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tracker } from "../lab/lab";
import { configObjects, extraServer, query } from "./helpers/config-objects";
import { expectOneLineError, flipByte, repoDir, tempDir } from "./helpers/server";
import { listJson, toolOk } from "./helpers/tool";

describe("restore --database from a damaged backup", () => {
  const track = tracker();
  let socket: string;
  let repo: string;
  let versions: string[];
  let drifted: Record<string, unknown>;

  const setV = (v: string) => query(socket, "/1.0/profiles/web", "PATCH", { config: { "user.v": v } });
  const profileV = async () => (await query<{ config: Record<string, string> }>(socket, "/1.0/profiles/web")).config["user.v"];

  /** A copy of the repository with its newest database version damaged by `damage(dir)`. */
  async function damagedCopy(damage: (versionDir: string) => Promise<void>): Promise<string> {
    const copy = await tempDir(track, "ibk-copy-");
    await cp(repo, copy, { recursive: true, preserveTimestamps: true });
    await damage(join(copy, "database", versions[1]!));
    return copy;
  }

  beforeAll(async () => {
    socket = (await extraServer(track)).socket;
    repo = await repoDir(track);
    await query(socket, "/1.0/profiles", "POST", { name: "web", description: "web", config: { "user.v": "1" } });
    await toolOk(["backup", "--database", `--dir=${repo}`], { socket });
    await setV("2");
    await toolOk(["backup", "--database", `--dir=${repo}`], { socket });
    versions = (await listJson(repo, "--database")).map((r) => r.version).sort();
    expect(versions).toHaveLength(2);
    await setV("3");
    drifted = await configObjects(socket);
  });
  afterAll(() => track.cleanup());

  const cases: Array<[string, (dir: string) => Promise<void>, RegExp]> = [
    ["config.json with a byte changed", (d) => flipByte(join(d, "config.json")), /config\.json: sha256 mismatch/],
    ["config.json truncated", (d) => truncate(join(d, "config.json"), 100), /config\.json: size is 100 bytes, the manifest says \d+/],
    [
      "manifest.json with a value changed",
      async (d) => {
        const path = join(d, "manifest.json");
        await writeFile(path, (await readFile(path, "utf8")).replace(/"created": "[^"]*"/, '"created": "2001-01-01T00:00:00.000Z"'));
      },
      /manifest\.json does not match its checksum in SHA256SUMS/,
    ],
    ["manifest.json truncated", (d) => truncate(join(d, "manifest.json"), 10), /manifest\.json does not match its checksum in SHA256SUMS/],
    ["SHA256SUMS with a checksum changed", (d) => flipByte(join(d, "SHA256SUMS")), /SHA256SUMS|checksum/],
  ];

  it.each(cases)("%s: exit 9, nothing changed, even with --force", async (_what, damage, message) => {
    const copy = await damagedCopy(damage);
    const r = await toolOk(["restore", "--database", "--force", `--dir=${copy}`], { socket }, 9);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).not.toMatch(/configuration: \d+ change/);
    expect(await profileV()).toBe("3");
    expect(await configObjects(socket)).toEqual(drifted);
  });

  it("the error is one line naming the damaged version", async () => {
    const copy = await damagedCopy((d) => flipByte(join(d, "manifest.json")));
    const r = await toolOk(["restore", "--database", "--force", `--dir=${copy}`], { socket }, 9);
    expect(expectOneLineError(r)).toContain(versions[1]!);
  });

  it("an intact older version asked for with --version is still restored", async () => {
    const copy = await damagedCopy((d) => flipByte(join(d, "manifest.json")));
    await toolOk(["restore", "--database", "--force", `--version=${versions[0]}`, `--dir=${copy}`], { socket });
    expect(await profileV()).toBe("1");
    await setV("3");
  });

  it("the intact repository restores (the cases above failed only because of the damage)", async () => {
    await toolOk(["restore", "--database", "--force", `--dir=${repo}`], { socket });
    expect(await profileV()).toBe("2");
    await setV("3");
  });
});
