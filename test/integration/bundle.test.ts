// The bundle is the whole tool: copied alone into a directory with no node_modules anywhere above
// it, it still runs (the container image ships nothing else).
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TOOL } from "./helpers/tool";

describe("the bundle", () => {
  const dir = mkdtempSync(join(tmpdir(), "ibk-bundle-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("runs --help and --version alone, from a directory without node_modules", () => {
    for (let d = dir; d !== "/"; d = join(d, "..")) expect(existsSync(join(d, "node_modules"))).toBe(false);
    const copy = join(dir, "incus-backup");
    copyFileSync(TOOL, copy);
    const run = (args: string[]) => spawnSync(process.execPath, [copy, ...args], { cwd: dir, encoding: "utf8", env: { PATH: process.env.PATH ?? "" } });
    const help = run(["--help"]);
    expect(help.status).toBe(0);
    for (const cmd of ["backup", "restore", "list", "verify", "prune", "daemon", "status"]) expect(help.stdout).toContain(cmd);
    const version = run(["--version"]);
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
