// The daemon's real jobs without Incus: verify on a temp repository, a backup whose Incus is gone, waiting for the lock.

import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { scheduledBackup, scheduledBackupOptions, scheduledVerify, serviceDeps, type ServiceContext, type VerifyRecord } from "../../../src/engine/daemon";
import { takeLock } from "../../../src/engine/locking";
import { openStore } from "../../../src/repository/open";
import { settingsFromEnv } from "../../../src/core/settings";
import { IncusClient } from "../../../src/incus/client";
import { silentReporter } from "../../../src/engine/reporter";
import { InterruptedError, RepositoryError } from "../../../src/errors";
import { RepositoryLock, readLock } from "../../../src/repository/lock";
import { DirectoryStore } from "../../../src/repository/directory";
import { data, repoDir, tempDir, web, writeVersion } from "../helpers/repo";
import { FakeIncus } from "../helpers/fake-incus";
import { MemoryStore } from "../helpers/memory-store";
import { backup } from "../../../src/engine/backup";

function service(dir: string, log: string[], env: Record<string, string> = {}): ServiceContext {
  return {
    location: dir,
    openStore: () => openStore(dir, { create: false }),
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
    const dir = await repoDir();
    const log: string[] = [];
    const s = await scheduledBackup(service(dir, log), "schedule", new Date(), new AbortController().signal);
    expect(s.status).toBe("failed");
    expect(s.error).toMatch(/no-such\.socket/);
    expect(s.items).toEqual([]);
    expect(await readLock(join(dir, "lock.json"))).toBeUndefined();
  });

  it("follows the service-wide settings and each instance's user.incus-backup.* keys", async () => {
    const fake = new FakeIncus({ apiExtensions: [] });
    fake.addInstance({ name: "web", status: "Running" });
    fake.addInstance({ name: "db", status: "Running", config: { "user.incus-backup.mode": "live", "user.incus-backup.snapshots": "true" } });
    fake.addInstance({ name: "tmp", config: { "user.incus-backup.exclude": "true" } });
    fake.addInstance({ name: "ci-7" });
    fake.addInstance({ name: "eph", status: "Running", ephemeral: true });
    const settings = settingsFromEnv({ INCUS_BACKUP_TZ: "UTC", INCUS_BACKUP_MODE: "stop", INCUS_BACKUP_EXCLUDE: "ci-*", INCUS_BACKUP_COMPRESSION: "gzip" }, "UTC");
    const store = new MemoryStore();
    const opts = scheduledBackupOptions(settings, undefined);
    expect(opts.selection.kinds).toEqual(["database", "volume", "instance"]);
    // The fake has instances only; the options are otherwise the service's.
    const deps = { client: fake.client, store, reporter: silentReporter, now: () => new Date("2025-09-14T03:00:00Z"), toolVersion: "test" };
    const r = await backup(deps, { ...opts, selection: { kinds: ["instance"], names: [] }, command: "test" }, new AbortController().signal);
    expect(r?.items.map((i) => [i.item.name, i.ok])).toEqual(expect.arrayContaining([["web", true], ["db", true]]));
    expect(r?.items).toHaveLength(2);
    const posts = fake.requests.filter((q) => q.method === "POST" && /\/backups$/.test(q.path));
    const body = (name: string) => posts.find((q) => q.path.includes(`/instances/${name}/`))?.body as Record<string, unknown> | undefined;
    expect(body("web")).toMatchObject({ instance_only: true, compression_algorithm: "gzip" });
    expect(body("db")).toMatchObject({ instance_only: false });
    // web is stopped for its backup (INCUS_BACKUP_MODE=stop); db's key keeps it live.
    const stops = fake.requests.filter((q) => q.method === "PUT" && q.path.endsWith("/state") && (q.body as { action?: string }).action === "stop");
    expect(stops.map((q) => q.path)).toEqual(["/1.0/instances/web/state"]);
    const [run] = await store.listRuns();
    expect(run?.skipped).toEqual([
      { label: "instance default/tmp", reason: "user.incus-backup.exclude=true" },
      { label: "instance default/ci-7", reason: 'excluded by "ci-*"' },
      { label: "instance default/eph", reason: "ephemeral" },
    ]);
    expect(run?.items?.find((i) => i.label === "instance default/web")).toMatchObject({ ok: true, mode: "stop" });
    expect(run?.items?.find((i) => i.label === "instance default/db")).toMatchObject({ ok: true, snapshots: true });
  });

  it("never makes a repository: an empty directory (an unmounted NAS) fails the run, and nothing is written", async () => {
    const dir = await tempDir();
    const ctx = service(dir, []);
    const s = await scheduledBackup(ctx, "schedule", new Date(), new AbortController().signal);
    expect(s.status).toBe("failed");
    expect(s.error).toBe(`${dir} is not an incus-backup repository (is the NAS mounted?); nothing was written`);
    const v = await scheduledVerify(ctx, "schedule", new Date(), new AbortController().signal);
    expect(v).toMatchObject({ status: "failed", error: s.error });
    const deps = serviceDeps(ctx, { host: "h", pid: 1 });
    await expect(deps.saveState({ host: "h", pid: 1, started: "", schedule: "", tz: "UTC", updated: "" })).rejects.toThrow(RepositoryError);
    expect(await deps.loadState().catch((e: unknown) => e)).toBeInstanceOf(RepositoryError);
    expect(await readdir(dir)).toEqual([]);
  });

  it("refuses a repository other than the one it was set up with, and one without an id; runs on its own", async () => {
    const dir = await repoDir();
    const id = await (await openStore(dir, { create: false })).repositoryId();
    const other = await scheduledBackup(service(dir, [], { INCUS_BACKUP_REPOSITORY_ID: "00000000deadbeef" }), "schedule", new Date(), new AbortController().signal);
    expect(other).toMatchObject({ status: "failed", error: `${dir} holds repository ${id}, not repository 00000000deadbeef that this service was set up with; nothing was written` });
    const before = await readdir(dir);
    const v = await scheduledVerify(service(dir, [], { INCUS_BACKUP_REPOSITORY_ID: "00000000deadbeef" }), "schedule", new Date(), new AbortController().signal);
    expect(v.status).toBe("failed");
    expect(await readdir(dir)).toEqual(before);
    // Its own: on to Incus, which is not there in this test.
    const own = await scheduledBackup(service(dir, [], { INCUS_BACKUP_REPOSITORY_ID: id! }), "schedule", new Date(), new AbortController().signal);
    expect(own.error).toMatch(/no-such\.socket/);
    // A repository made before ids (its marker has none) is refused by a service that expects one, until `init` gives it one.
    const old = await tempDir();
    await writeFile(join(old, "incus-backup.json"), JSON.stringify({ format: "incus-backup", version: 1, created: "2025-01-01T00:00:00Z" }));
    const o = await scheduledBackup(service(old, [], { INCUS_BACKUP_REPOSITORY_ID: id! }), "schedule", new Date(), new AbortController().signal);
    expect(o.error).toMatch(/holds a repository without an id, not repository/);
    const given = await (await openStore(old, { create: false })).ensureId();
    expect(given).toMatch(/^[0-9a-f]{16}$/);
    expect(await (await openStore(old, { create: false })).ensureId()).toBe(given);
    expect(JSON.parse(await readFile(join(old, "incus-backup.json"), "utf8"))).toMatchObject({ format: "incus-backup", version: 1, created: "2025-01-01T00:00:00Z", id: given });
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
    const dir = await repoDir();
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
    const dir = await repoDir();
    const manual = await RepositoryLock.acquire(dir, "incus-backup backup --all");
    const controller = new AbortController();
    const store = await openStore(dir, { create: false });
    await expect(takeLock(store, "incus-backup daemon", { info: () => {} }, controller.signal, { sleep: async () => controller.abort() })).rejects.toThrow(InterruptedError);
    expect((await readLock(join(dir, "lock.json")))?.command).toBe("incus-backup backup --all");
    await manual.release();
  });
});
