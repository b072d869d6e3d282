// The benchmark scripts (bench/bench.mjs, bench/files.mjs) keep working: a small run against this
// run's lab prints its table, writes its JSON, and leaves no instance behind.
import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, inject, it } from "vitest";
import { incusOk, labSocket, labVersion, tracker } from "../lab/lab";
import { repoDir } from "./helpers/server";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

function runBench(args: string[], script = "bench/bench.mjs"): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [join(ROOT, script), ...args], {
      env: { ...process.env, INCUS_BACKUP_LAB_STATE: inject("labStateFile") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("error", fail);
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

describe("bench/bench.mjs", () => {
  const track = tracker();
  afterAll(() => track.cleanup());

  it("compares the tool with the export and import loops in one run, and cleans up", async () => {
    const version = labVersion();
    const instances = async () => (await incusOk(["list", "--format", "csv", "--columns", "n"], { socket: labSocket(version) })).split("\n").filter((n) => n.startsWith("bench-"));
    const before = await instances();
    const dir = await repoDir(track);
    const json = join(dir, "bench.json");
    const r = await runBench(["--lab", version, "--instances", "2", "--size", "2", "--runs", "1", "--data", "cheap", "--by-hand", "--json", json]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^backup\s+[\d.]+ s\s+[\d.]+ s\s+[\d.]+$/m);
    expect(r.stdout).toMatch(/^restore\s+[\d.]+ s\s+[\d.]+ s\s+[\d.]+$/m);
    expect(r.stdout).toMatch(/by hand: the 2 exports all at once/);
    expect(r.stdout).toMatch(/2 x 2 MiB of cheap data/);
    expect(r.stdout).toMatch(/peak RSS of incus-backup: \d+ MiB/);
    const summary = JSON.parse(await readFile(json, "utf8")) as { rows: Array<{ label: string; ratio: number }>; peakRssMiB: number; exportAtOnce: number; data: string };
    expect(summary.data).toBe("cheap");
    expect(summary.rows.map((x) => x.label)).toEqual(["backup", "restore"]);
    for (const row of summary.rows) expect(row.ratio).toBeGreaterThan(0);
    expect(summary.peakRssMiB).toBeGreaterThan(0);
    expect(summary.exportAtOnce).toBeGreaterThan(0);
    expect(await instances()).toEqual(before);
  });

  it("files: the first and repeated listing and one small file against zstd and tar, in one run, and cleans up", async () => {
    const version = labVersion();
    const instances = async () => (await incusOk(["list", "--format", "csv", "--columns", "n"], { socket: labSocket(version) })).split("\n").filter((n) => n.startsWith("bench-"));
    const before = await instances();
    const json = join(await repoDir(track), "files.json");
    const r = await runBench(["--lab", version, "--size", "4", "--runs", "1", "--json", json], "bench/files.mjs");
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^  first listing +[\d.]+ s \/ zstd -dc \| tar -t [\d.]+ s = [\d.]+$/m);
    expect(r.stdout).toMatch(/^  repeated listing +[\d.]+ s$/m);
    expect(r.stdout).toMatch(/^  one small file .* = [\d.]+ and [\d.]+$/m);
    const summary = JSON.parse(await readFile(json, "utf8")) as { ratios: Record<string, number>; tarEntries: number };
    expect(Object.keys(summary.ratios)).toEqual(["firstListing", "extractNoCatalog", "extractWithCatalog"]);
    for (const x of Object.values(summary.ratios)) expect(x).toBeGreaterThan(0);
    expect(summary.tarEntries).toBeGreaterThan(2000);
    expect(await instances()).toEqual(before);
  });
});
