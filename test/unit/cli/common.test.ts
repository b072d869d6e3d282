// Shared argument checks: options that need a value, --version syntax, the repository directory.

import { describe, expect, it } from "vitest";
import { repoSpec, checkValueOptions, checkVersionArg } from "../../../src/cli/common";
import type { CliContext } from "../../../src/cli/context";
import { checkReadData } from "../../../src/cli/verify";
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

describe("repoSpec", () => {
  const ctx = (env: NodeJS.ProcessEnv) => ({ env }) as unknown as CliContext;
  const dir = (path: string) => ({ backend: "dir", path });

  it("prefers --repo, then --dir, then INCUS_BACKUP_REPO, then INCUS_BACKUP_DIR, and makes a directory absolute", () => {
    const env = { INCUS_BACKUP_REPO: "restic:/env-repo", INCUS_BACKUP_DIR: "/env" };
    expect(repoSpec(ctx(env), { repo: "/flag", dir: undefined })).toEqual(dir("/flag"));
    expect(repoSpec(ctx(env), { repo: undefined, dir: "/flag" })).toEqual(dir("/flag"));
    expect(repoSpec(ctx(env), { repo: undefined, dir: undefined })).toEqual({ backend: "restic", location: "/env-repo" });
    expect(repoSpec(ctx({ INCUS_BACKUP_DIR: "/env" }), { repo: undefined, dir: undefined })).toEqual(dir("/env"));
    expect(repoSpec(ctx({}), { repo: undefined, dir: "/a/b/../c" })).toEqual(dir("/a/c"));
    expect(repoSpec(ctx({}), { repo: "dir:rel", dir: undefined })).toEqual(dir(`${process.cwd()}/rel`));
    expect(repoSpec(ctx({}), { repo: "restic:sftp:u@h:/r", dir: undefined })).toEqual({ backend: "restic", location: "sftp:u@h:/r" });
  });

  it.each<[NodeJS.ProcessEnv]>([[{}], [{ INCUS_BACKUP_DIR: "" }], [{ INCUS_BACKUP_REPO: "" }]])("refuses no repository at all (env %j)", (env) => {
    expect(() => repoSpec(ctx(env), { repo: undefined, dir: undefined })).toThrow(
      new UsageError("no repository: pass --repo (restic:LOCATION or a directory) or --dir DIR, or set INCUS_BACKUP_REPO or INCUS_BACKUP_DIR"),
    );
  });

  it.each<[string, string]>([
    ["restic:", "--repo=restic: needs a restic repository after the colon (a path, sftp:…, rest:…, s3:…)"],
    ["dir:", "--repo=dir: needs a directory after the colon"],
    ["sftp:u@h:/r", "--repo=sftp:u@h:/r: for a restic repository write restic:sftp:u@h:/r (a bare value is a directory)"],
    ["rest:http://127.0.0.1:8000/", "--repo=rest:http://127.0.0.1:8000/: for a restic repository write restic:rest:http://127.0.0.1:8000/ (a bare value is a directory)"],
  ])("refuses --repo %s", (repo, message) => {
    expect(() => repoSpec(ctx({}), { repo, dir: undefined })).toThrow(new UsageError(message));
  });

  it("refuses --repo with --dir", () => {
    expect(() => repoSpec(ctx({}), { repo: "/a", dir: "/b" })).toThrow(new UsageError("give --repo or --dir, not both"));
  });
});

describe("checkReadData", () => {
  it.each(["all", "10%", "0.5%", "100%", "1/5", "5/5"])("takes %s", (v) => expect(checkReadData(v)).toBe(v));
  it.each(["0%", "101%", "0/5", "6/5", "ten", "1/"])("refuses %s", (v) => expect(() => checkReadData(v)).toThrow(UsageError));
});
