// `daemon` from the command line: timestamped log lines, a clean stop when idle, refused settings.

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli";
import { repoDir, tempDir } from "../helpers/repo";

describe("daemon", () => {
  it("starts, plans the next run, and stops at once when signalled while idle", async () => {
    const dir = await repoDir();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const t0 = Date.now();
    const r = await runCli(["daemon", "--dir", dir], {
      env: { INCUS_BACKUP_SCHEDULE: "0 3 * * *", INCUS_BACKUP_TZ: "Europe/Berlin", INCUS_SOCKET: join(dir, "none.sock") },
      signal: controller.signal,
      now: () => new Date(),
    });
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    for (const l of lines) expect(l).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d \S/);
    expect(lines[0]).toMatch(/incus-backup \S+ daemon, repository /);
    expect(r.stdout).toMatch(/started: backups on "0 3 \* \* \*" \(Europe\/Berlin\)/);
    expect(r.stdout).toMatch(/next backup at \d{4}-\d\d-\d\d 03:00:00 \+0[12]:00/);
    expect(lines.at(-1)).toMatch(/ stopped$/);
    const state = JSON.parse(await readFile(join(dir, "state", "daemon.json"), "utf8")) as Record<string, string>;
    expect(state).toMatchObject({ schedule: "0 3 * * *", tz: "Europe/Berlin" });
    expect(state.stopped).toBeDefined();
  });

  it("says why it refuses its settings, schedules nothing, and exits 2 when stopped", async () => {
    const dir = await tempDir();
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);
    const r = await runCli(["daemon", "--dir", dir], { env: { INCUS_BACKUP_SCHEDULE: "61 * * * *" }, signal: controller.signal, now: () => new Date() });
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/error: INCUS_BACKUP_SCHEDULE "61 \* \* \* \*" is not a valid cron expression.*nothing is scheduled until the settings are fixed/);
    expect(r.stdout).not.toMatch(/started:/);
  });
});
