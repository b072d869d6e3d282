// The metrics file: written whole by rename, readable by node_exporter, rewritten by prune, and a failure to write it is only a warning.

import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { writeMetricsFile } from "../../../src/local/metrics_file";
import { DirectoryStore } from "../../../src/repository/directory";
import { runCli } from "../helpers/cli";
import { parseMetrics, sample } from "../helpers/prometheus";
import { tempDir, web, writeVersion } from "../helpers/repo";

describe("writeMetricsFile", () => {
  it("replaces the file whole, world-readable, and leaves no temp file", async () => {
    const dir = await tempDir();
    const path = join(dir, "incus_backup.prom");
    await writeFile(path, "old\n");
    await writeMetricsFile(path, "# TYPE x gauge\nx 1\n");
    expect(await readFile(path, "utf8")).toBe("# TYPE x gauge\nx 1\n");
    expect((await stat(path)).mode & 0o777).toBe(0o644);
    expect(await readdir(dir)).toEqual(["incus_backup.prom"]);
  });

  it("fails, removing its temp file, where the target cannot be replaced", async () => {
    const dir = await tempDir();
    // A directory in the way: the rename fails after the temp file was written.
    const path = join(dir, "in-the-way");
    await writeFile(join(dir, "keep"), "");
    await mkdir(join(path, "sub"), { recursive: true });
    await expect(writeMetricsFile(path, "x 1\n")).rejects.toThrow();
    expect((await readdir(dir)).sort()).toEqual(["in-the-way", "keep"]);
  });
});

describe("INCUS_BACKUP_METRICS_FILE", () => {
  it("prune rewrites it (not a dry run); a file that cannot be written is a warning and the prune still exits 0", async () => {
    const dir = await tempDir();
    const { repo } = await DirectoryStore.open(dir, { create: true });
    for (const v of ["20250912-030000", "20250913-030000", "20250914-030000"]) await writeVersion(repo, web, v);
    const out = await tempDir();
    const path = join(out, "incus_backup.prom");
    const env = { INCUS_BACKUP_METRICS_FILE: path };

    const dry = await runCli(["prune", "--keep-last", "1", "--dry-run", "--dir", dir], { env });
    expect(dry.code).toBe(0);
    expect(await readdir(out)).toEqual([]);

    const r = await runCli(["prune", "--keep-last", "1", "--dir", dir], { env });
    expect(r.code).toBe(0);
    const m = parseMetrics(await readFile(path, "utf8"));
    expect(sample(m, "incus_backup_repository_versions")).toBe(1);
    expect(sample(m, "incus_backup_last_prune_removed_versions")).toBe(2);
    expect(sample(m, "incus_backup_item_last_success_timestamp_seconds", { kind: "instance", name: "web" })).toBeGreaterThan(0);

    const bad = await runCli(["prune", "--keep-last", "1", "--dir", dir], { env: { INCUS_BACKUP_METRICS_FILE: join(out, "missing", "x.prom") } });
    expect(bad.code).toBe(0);
    expect(bad.stderr).toMatch(/^warning: could not write the metrics file: .*missing\/x\.prom: ENOENT/m);
  });
});
