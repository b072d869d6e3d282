// The command line end to end, without Incus: exit codes, one-line errors, and `list` on a real directory.

import { appendFile, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CliContext } from "../../src/cli/context";
import { main, parseErrorLine } from "../../src/main";
import { DirectoryStore } from "../../src/repository/directory";
import { data, repoDir, tempDir, web, writeVersion } from "./helpers/repo";

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the tool in-process with collected output, no terminal, and only the environment given. */
async function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  const collect = (s: PassThrough) => {
    let text = "";
    s.setEncoding("utf8");
    s.on("data", (c: string) => (text += c));
    return () => text;
  };
  const stdout = Object.assign(new PassThrough(), { isTTY: false });
  const stderr = Object.assign(new PassThrough(), { isTTY: false });
  const stdin = Object.assign(new PassThrough(), { isTTY: false });
  const out = collect(stdout);
  const err = collect(stderr);
  const ctx: CliContext = {
    stdout,
    stderr,
    stdin,
    env,
    signal: new AbortController().signal,
    now: () => new Date("2025-09-14T03:00:02Z"),
    argv: ["incus-backup", ...args],
  };
  const code = await main(args, ctx);
  await new Promise((r) => setImmediate(r));
  return { code, stdout: out(), stderr: err() };
}

/** The error line, after checking stderr holds exactly one line, an "error: " without a stack trace. */
function errorLine(r: Run): string {
  expect(r.stderr.endsWith("\n")).toBe(true);
  const lines = r.stderr.slice(0, -1).split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: \S/);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  return lines[0]!;
}

describe("usage errors: exit 2, one line on stderr", () => {
  it.each<[string, string[], RegExp]>([
    ["an unknown flag", ["backup", "--all", "--bogus"], /^error: unknown arguments: --bogus \(try 'incus-backup backup --help'\)$/],
    ["an unknown flag on list", ["list", "--frobnicate"], /--frobnicate/],
    ["an unknown subcommand", ["frobnicate"], /^error: not a valid subcommand name: frobnicate \(try 'incus-backup --help'\)$/],
    ["a misspelt subcommand", ["bakup", "--all"], /^error: not a valid subcommand name: bakup; did you mean backup\? \(try/],
    ["backup without a selector", ["backup", "--dir", "/tmp"], /--all, --instances, --volumes/],
    ["restore without a selector", ["restore", "--dir", "/tmp"], /--all, --instances, --volumes/],
    ["backup without --dir or INCUS_BACKUP_DIR", ["backup", "--all"], /INCUS_BACKUP_DIR/],
    ["--dir without a value at the end", ["backup", "--all", "--dir"], /option --dir needs a value/],
    ["--dir followed by another flag", ["backup", "--dir", "--all"], /option --dir needs a value/],
    ["--dir= with nothing after it", ["list", "--dir="], /option --dir needs a value/],
    ["--name ../x for instances", ["backup", "--instances", "--name", "../x", "--dir", "/tmp"], /"\.\.\/x"/],
    ["--name .. for volumes", ["backup", "--volumes", "--name", "..", "--dir", "/tmp"], /invalid name "\.\."/],
    ["--name ''", ["backup", "--all", "--name", "", "--dir", "/tmp"], /--name must not be empty/],
    ["--name a/b/c for volumes", ["backup", "--volumes", "--name", "a/b/c", "--dir", "/tmp"], /"a\/b\/c": use NAME or POOL\/NAME/],
    ["--project ..", ["list", "--project", "..", "--dir", "/tmp"], /invalid project name/],
    ["restore --version abc", ["restore", "--all", "--version", "abc", "--dir", "/tmp"], /invalid --version "abc"/],
    ["restore --version 2025-09", ["restore", "--all", "--version", "2025-09", "--dir", "/tmp"], /invalid --version "2025-09"/],
    ["restore --target-name that is not an instance name", ["restore", "--instances", "--name", "web", "--target-name", "a_b", "--dir", "/tmp"], /invalid --target-name/],
    ["--parallel 0", ["backup", "--all", "--parallel", "0", "--dir", "/tmp"], /--parallel/],
    ["backup --stop-timeout abc", ["backup", "--all", "--stop", "--stop-timeout", "abc", "--dir", "/tmp"], /^error: --stop-timeout="abc": use a whole number of seconds from 0 to 86400$/],
    ["restore --stop-timeout -5", ["restore", "--all", "--stop-timeout=-5", "--dir", "/tmp"], /^error: --stop-timeout="-5": use a whole number of seconds/],
    ["restore --stop-timeout 1.5", ["restore", "--all", "--stop-timeout", "1.5", "--dir", "/tmp"], /^error: --stop-timeout="1\.5"/],
    ["prune --keep-daily 1.5", ["prune", "--keep-daily", "1.5", "--dir", "/tmp"], /^error: --keep-daily="1\.5": use a whole number from 0 to 1000000$/],
    ["--compression rar", ["backup", "--all", "--compression", "rar", "--dir", "/tmp"], /rar/],
  ])("%s", async (_label, args, message) => {
    const r = await run(args);
    expect(r.code).toBe(2);
    expect(errorLine(r)).toMatch(message);
    expect(r.stdout).toBe("");
  });
});

describe("parseErrorLine", () => {
  const cmdTs = (line: string, caret: string, ...after: string[]) =>
    ["error: found 1 error", "", `  ${line}`, caret, ...after, "", "", "hint: for more information, try 'incus-backup --help'"].join("\n");

  it.each<[string, string, string]>([
    ["an unknown argument", cmdTs("backup --bogus", "         ^ Unknown arguments"), "unknown arguments: --bogus (try 'incus-backup --help')"],
    ["a caret inside the word", cmdTs("frobnicate", "   ^ Not a valid subcommand name"), "not a valid subcommand name: frobnicate (try 'incus-backup --help')"],
    [
      "a suggestion under the caret",
      cmdTs("bakup --all", "   ^ Not a valid subcommand name", "     Did you mean backup?"),
      "not a valid subcommand name: bakup; did you mean backup? (try 'incus-backup --help')",
    ],
    ["no caret", "something odd\nhappened", "something odd happened"],
  ])("%s", (_label, message, line) => {
    expect(parseErrorLine(message)).toBe(line);
  });
});

describe("errors from the world", () => {
  it("exits 8 for a missing backup directory", async () => {
    const r = await run(["list", "--dir", "/nonexistent"]);
    expect(r.code).toBe(8);
    expect(errorLine(r)).toBe("error: cannot open backup directory /nonexistent: no such file or directory");
  });

  it("takes the directory from INCUS_BACKUP_DIR", async () => {
    const r = await run(["list"], { INCUS_BACKUP_DIR: "/nonexistent-env" });
    expect(r.code).toBe(8);
    expect(errorLine(r)).toMatch(/\/nonexistent-env/);
  });

  it("exits 8 for a directory that is not a repository", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "other"), "x");
    const r = await run(["backup", "--all", "--dir", dir]);
    expect(r.code).toBe(8);
    expect(errorLine(r)).toMatch(/is not an incus-backup repository/);
  });

  it("exits 4 naming the socket when Incus is not there, and leaves the directory untouched", async () => {
    const dir = await repoDir();
    const socket = join(await tempDir(), "missing.sock");
    const r = await run(["backup", "--all", "--dir", dir, "--socket", socket]);
    expect(r.code).toBe(4);
    expect(errorLine(r)).toContain(socket);
    expect(r.stdout).toBe("");
    expect(await readdir(dir)).toEqual(["incus-backup.json"]);
  });

  it("refuses an empty directory (an unmounted NAS) with exit 8 before anything else, and writes nothing", async () => {
    const dir = await tempDir();
    const socket = join(await tempDir(), "missing.sock");
    const s = ["--socket", socket];
    for (const args of [["backup", "--all", ...s], ["prune", "--keep-last", "1"], ["list"], ["verify"], ["restore", "--all", "--force", ...s], ["unlock"]]) {
      const r = await run([...args, "--dir", dir]);
      expect(r.code, args.join(" ")).toBe(8);
      expect(errorLine(r), args.join(" ")).toBe(`error: ${dir} is not an incus-backup repository (is the NAS mounted?); nothing was written (make a new one with \`incus-backup init --dir ${dir}\`)`);
      expect(await readdir(dir)).toEqual([]);
    }
  });

  it("takes the socket from INCUS_SOCKET", async () => {
    const dir = await repoDir();
    const socket = join(await tempDir(), "env.sock");
    const r = await run(["backup", "--all", "--dir", dir], { INCUS_SOCKET: socket });
    expect(r.code).toBe(4);
    expect(errorLine(r)).toContain(socket);
  });

  it("prints a stack trace only with INCUS_BACKUP_DEBUG", async () => {
    const r = await run(["list", "--dir", "/nonexistent"], { INCUS_BACKUP_DEBUG: "1" });
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/^\s+at /m);
    expect(r.stderr.trimEnd().split("\n").at(-1)).toMatch(/^error: cannot open backup directory/);
  });
});

describe("help and version: exit 0, on stdout", () => {
  it.each<[string[], RegExp]>([
    [["--help"], /backup[\s\S]*restore[\s\S]*list/],
    [["backup", "--help"], /--dir/],
    [["restore", "--help"], /--target-name/],
    [["list", "--help"], /--json/],
    // Numbers show as numbers: <N>, not <str>.
    [["prune", "--help"], /--keep-last <N> +- keep the N newest versions[\s\S]*--keep-yearly <N> /],
    [["restore", "--help"], /--stop-timeout <N> +- seconds an instance gets to shut down cleanly/],
    [["backup", "--help"], /--stop-timeout <N> /],
    // --all and --images say what they mean for the command.
    [["backup", "--help"], /--all +- the database, every custom volume and every instance \(images only with --images as well\)/],
    [["restore", "--help"], /--all +- everything in the repository: the database, volumes, instances, and images if it holds any/],
    [["list", "--help"], /--all +- everything \(the default when no selector is given\)/],
    [["--version"], /^\d+\.\d+\.\d+/],
  ])("%j", async (args, text) => {
    const r = await run(args);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(text);
    expect(r.stderr).toBe("");
  });
});

describe("list", () => {
  const V1 = "20250914-030002";
  const V2 = "20250915-030002";

  async function sample() {
    const dir = await tempDir();
    const { repo } = await DirectoryStore.open(dir, { create: true });
    const w1 = await writeVersion(repo, web, V1, "a".repeat(2048));
    const w2 = await writeVersion(repo, web, V2, "b".repeat(1024));
    const d1 = await writeVersion(repo, data, V1, "c".repeat(10));
    return { dir, repo, w1, w2, d1 };
  }

  it("prints one row per item", async () => {
    const { dir } = await sample();
    const r = await run(["list", "--dir", dir]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(
      [
        "TYPE      PROJECT  NAME       VERSIONS  LATEST           SIZE",
        `instance  default  web        2         ${V2}  3.0 KiB`,
        `volume    default  fast/data  1         ${V1}  10 B`,
        "",
      ].join("\n"),
    );
  });

  it("prints one row per version with --name", async () => {
    const { dir } = await sample();
    const r = await run(["list", "--instances", "--name", "web", "--dir", dir]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")).toEqual([
      "TYPE      PROJECT  NAME  VERSION          CREATED               SIZE",
      `instance  default  web   ${V1}  2025-09-14T03:00:02Z  2.0 KiB`,
      `instance  default  web   ${V2}  2025-09-14T03:00:02Z  1.0 KiB`,
      "",
    ]);
  });

  it("prints JSON with --json", async () => {
    const { dir, w1, w2, d1 } = await sample();
    const r = await run(["list", "--json", "--dir", dir]);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    expect(rows).toHaveLength(3);
    const byPath = new Map(rows.map((row) => [row.path, row]));
    for (const entry of [w1, w2, d1]) {
      const m = entry.manifest;
      const row = byPath.get(entry.location);
      expect(row).toMatchObject({
        type: m.kind,
        project: "default",
        name: m.name,
        version: m.version,
        created: "2025-09-14T03:00:02.123Z",
        size: entry.size,
        sha256: m.files[0]!.sha256,
      });
      if (m.kind === "volume") expect(row).toHaveProperty("pool", "fast");
      else expect(row).not.toHaveProperty("pool");
    }
  });

  it("prints an empty JSON array for an empty repository, and a note for the table", async () => {
    const dir = await repoDir();
    const json = await run(["list", "--json", "--dir", dir]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([]);
    const text = await run(["list", "--dir", dir]);
    expect(text.code).toBe(0);
    expect(text.stdout).toBe("");
    expect(text.stderr).toBe("no backups found\n");
  });

  it("leaves out a version whose manifest does not match SHA256SUMS, with a warning", async () => {
    const { dir, w2 } = await sample();
    await appendFile(join(w2.location, "manifest.json"), "\n");
    const r = await run(["list", "--json", "--dir", dir]);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<{ version: string; name: string }>;
    expect(rows.map((row) => `${row.name} ${row.version}`).sort()).toEqual([`data ${V1}`, `web ${V1}`]);
    const lines = r.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^warning: damaged backup at ${w2.location}: manifest\\.json does not match its checksum`));
  });

  it("never shows an unfinished version", async () => {
    const { dir, repo } = await sample();
    const w = await repo.begin(web, "20250916-030002");
    await w.writeFile("instance.tar.zst", "partial");
    const r = await run(["list", "--json", "--dir", dir]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe("");
    expect((JSON.parse(r.stdout) as Array<{ version: string }>).map((row) => row.version)).not.toContain("20250916-030002");
  });

  it("filters by kind and project", async () => {
    const { dir } = await sample();
    const volumes = await run(["list", "--volumes", "--json", "--dir", dir]);
    expect((JSON.parse(volumes.stdout) as Array<{ name: string }>).map((row) => row.name)).toEqual(["data"]);
    const prod = await run(["list", "--project", "prod", "--json", "--dir", dir]);
    expect(JSON.parse(prod.stdout)).toEqual([]);
  });
});
