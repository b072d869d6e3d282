// The daemon's real jobs without Incus: verify on a temp repository, a backup whose Incus is gone, waiting for the lock.

import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { scheduledBackup, scheduledVerify, type ServiceContext, type VerifyRecord } from "../../../src/engine/daemon";
import { takeLock } from "../../../src/engine/locking";
import { openStore } from "../../../src/repository/open";
import { settingsFromEnv } from "../../../src/core/settings";
import { IncusClient } from "../../../src/incus/client";
import { silentReporter } from "../../../src/engine/reporter";
import { InterruptedError } from "../../../src/errors";
import { RepositoryLock, readLock } from "../../../src/repository/lock";
import { DirectoryStore } from "../../../src/repository/directory";
import { data, tempDir, web, writeVersion } from "../helpers/repo";

function service(dir: string, log: string[], env: Record<string, string> = {}): ServiceContext {
  return {
    location: dir,
    openStore: () => openStore(dir, { create: true }),
    connect: () => new IncusClient(join(dir, "no-such.socket")),
    now: () => new Date(),
    sleep: async () => {},
    log: (l) => log.push(l),
    reporter: silentReporter,
    verifyReporter: silentReporter,
    settings: settingsFromEnv({ INCUS_BACKUP_TZ: "UTC", ...env }, "UTC"),
    toolVersion: "test",
  };
}

describe("scheduledVerify", () => {
  it("checks every version, names the damaged one, and records the result for status", async () => {
    const dir = await tempDir();
    const { repo } = await DirectoryStore.open(dir, { create: true });
    await writeVersion(repo, web, "20250913-030000");
    const bad = await writeVersion(repo, web, "20250914-030000");
    await writeVersion(repo, data, "20250914-030000");
    await writeFile(join(bad.location, "instance.tar.zst"), "tampered with, same length?");
    const log: string[] = [];
    const s = await scheduledVerify(service(dir, log, { INCUS_BACKUP_VERIFY_SCHEDULE: "0 5 * * *" }), "schedule", new Date("2025-09-14T05:00:00Z"), new AbortController().signal);
    expect(s.status).toBe("failed");
    expect(s.verify?.checked).toBe(3);
    expect(s.verify?.failed).toEqual([{ label: "instance default/web", version: "20250914-030000", problems: [expect.stringMatching(/instance\.tar\.zst: (size|sha256)/)] }]);
    const record = JSON.parse(await readFile(join(dir, "state", "verify.json"), "utf8")) as VerifyRecord;
    expect(record).toMatchObject({ checked: 3, ok: 2, deep: false, interrupted: false });
  });

  it("is ok on a healthy repository", async () => {
    const dir = await tempDir();
    const { repo } = await DirectoryStore.open(dir, { create: true });
    await writeVersion(repo, web, "20250914-030000");
    const s = await scheduledVerify(service(dir, []), "schedule", new Date(), new AbortController().signal);
    expect(s).toMatchObject({ status: "ok", verify: { checked: 1, failed: [] } });
  });
});

describe("scheduledBackup", () => {
  it("reports a run whose Incus is unreachable as failed, and leaves the repository unlocked", async () => {
    const dir = await tempDir();
    const log: string[] = [];
    const s = await scheduledBackup(service(dir, log), "schedule", new Date(), new AbortController().signal);
    expect(s.status).toBe("failed");
    expect(s.error).toMatch(/no-such\.socket/);
    expect(s.items).toEqual([]);
    expect(await readLock(join(dir, "lock.json"))).toBeUndefined();
    // The directory became a repository, so status and the next run find it.
    expect(await (await DirectoryStore.open(dir, { create: false })).repo.isInitialized()).toBe(true);
  });

  it("fails without touching anything when the backup directory is missing (an unmounted NAS)", async () => {
    const dir = join(await tempDir(), "not-mounted");
    const s = await scheduledBackup(service(dir, []), "schedule", new Date(), new AbortController().signal);
    expect(s.status).toBe("failed");
    expect(s.error).toMatch(/cannot open backup directory .*not-mounted: no such file or directory/);
  });
});

describe("takeLock, waiting (the service)", () => {
  it("waits for a manual run to release the lock, saying so once, then takes it", async () => {
    const dir = await tempDir();
    const manual = await RepositoryLock.acquire(dir, "incus-backup backup --all");
    const log: string[] = [];
    let waits = 0;
    const wait = {
      sleep: async () => {
        waits++;
        if (waits === 3) await manual.release();
      },
    };
    const store = await openStore(dir, { create: false });
    const lock = await takeLock(store, "incus-backup daemon", { info: (l: string) => log.push(l) }, new AbortController().signal, wait);
    expect(waits).toBe(3);
    expect(log).toEqual([expect.stringMatching(/^waiting: repository .* is locked by pid \d+ on host .* \(incus-backup backup --all\)$/)]);
    expect((await readLock(join(dir, "lock.json")))?.command).toBe("incus-backup daemon");
    await lock.release();
  });

  it("gives up when the daemon is stopped while it waits", async () => {
    const dir = await tempDir();
    const manual = await RepositoryLock.acquire(dir, "incus-backup backup --all");
    const controller = new AbortController();
    const store = await openStore(dir, { create: false });
    await expect(takeLock(store, "incus-backup daemon", { info: () => {} }, controller.signal, { sleep: async () => controller.abort() })).rejects.toThrow(InterruptedError);
    expect((await readLock(join(dir, "lock.json")))?.command).toBe("incus-backup backup --all");
    await manual.release();
  });
});
