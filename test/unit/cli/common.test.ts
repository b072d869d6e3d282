// Shared argument checks: options that need a value, --version syntax, the repository directory.

import { describe, expect, it } from "vitest";
import { backupDir, checkValueOptions, checkVersionArg } from "../../../src/cli/common";
import type { CliContext } from "../../../src/cli/context";
import { UsageError } from "../../../src/errors";

describe("checkValueOptions", () => {
  it.each<string[]>([
    ["backup", "--all", "--dir", "/x"],
    ["backup", "--all", "--dir=/x"],
    ["restore", "--all", "--version", "20250914", "--force"],
    ["backup", "--instances", "--name", "web", "--name", "db"],
    ["--version"],
    ["list", "--json"],
    ["list", "--", "--dir"],
  ])("accepts %j", (...argv) => {
    expect(() => checkValueOptions(argv)).not.toThrow();
  });

  it.each<[string[], string]>([
    [["backup", "--all", "--dir"], "option --dir needs a value"],
    [["backup", "--dir", "--all"], "option --dir needs a value"],
    [["backup", "--all", "--dir="], "option --dir needs a value"],
    [["restore", "--all", "--version"], "option --version needs a value"],
    [["backup", "--instances", "--name", "--all"], "option --name needs a value"],
    [["backup", "--all", "--socket="], "option --socket needs a value"],
    [["restore", "--instance", "--name", "web", "--target-name"], "option --target-name needs a value"],
  ])("refuses %j", (argv, message) => {
    expect(() => checkValueOptions(argv)).toThrow(new UsageError(message));
  });
});

describe("checkVersionArg", () => {
  it("passes a version, a prefix, or nothing", () => {
    expect(checkVersionArg(undefined)).toBeUndefined();
    expect(checkVersionArg("20250914")).toBe("20250914");
    expect(checkVersionArg("20250914-030002")).toBe("20250914-030002");
  });

  it.each(["abc", "2025-09-14", "", "latest"])("refuses %j", (v) => {
    expect(() => checkVersionArg(v)).toThrow(UsageError);
    expect(() => checkVersionArg(v)).toThrow(/use YYYYMMDD-HHMMSS or a prefix of it/);
  });
});

describe("backupDir", () => {
  const ctx = (env: NodeJS.ProcessEnv) => ({ env }) as unknown as CliContext;

  it("prefers --dir, then INCUS_BACKUP_DIR, and makes it absolute", () => {
    expect(backupDir(ctx({ INCUS_BACKUP_DIR: "/env" }), "/flag")).toBe("/flag");
    expect(backupDir(ctx({ INCUS_BACKUP_DIR: "/env" }), undefined)).toBe("/env");
    expect(backupDir(ctx({}), "/a/b/../c")).toBe("/a/c");
    expect(backupDir(ctx({}), "rel")).toBe(`${process.cwd()}/rel`);
  });

  it.each<[NodeJS.ProcessEnv]>([[{}], [{ INCUS_BACKUP_DIR: "" }]])("refuses no directory at all (env %j)", (env) => {
    expect(() => backupDir(ctx(env), undefined)).toThrow(new UsageError("no backup directory: pass --dir DIR or set INCUS_BACKUP_DIR"));
  });
});
