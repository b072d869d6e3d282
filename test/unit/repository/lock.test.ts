// The repository lock: when it counts as abandoned, how its holder is named, taking and releasing it.

import { spawnSync } from "node:child_process";
import { readdir, readFile, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ExitCode, LockedError } from "../../../src/errors";
import { RepositoryLock, STALE_AFTER_MS, describeLock, readLock, staleReason, type LockInfo } from "../../../src/repository/lock";
import { tempDir } from "../helpers/repo";

const NOW = new Date("2025-09-14T03:30:00.000Z");
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString();

function lock(over: Partial<LockInfo> = {}): LockInfo {
  return {
    host: "nas",
    pid: 4242,
    command: "incus-backup backup --all",
    started: "2025-09-14T03:00:02.123Z",
    refreshed: ago(30_000),
    id: "0011223344556677",
    ...over,
  };
}

const alive = () => true;
const dead = () => false;

describe("staleReason", () => {
  it.each<[string, LockInfo, string, (pid: number) => boolean, RegExp | undefined]>([
    ["same host, live pid, fresh", lock(), "nas", alive, undefined],
    ["same host, dead pid", lock(), "nas", dead, /process 4242 is gone/],
    ["same host, dead pid, even when fresh", lock({ refreshed: NOW.toISOString() }), "nas", dead, /process 4242 is gone/],
    ["other host, fresh: its pid cannot be checked", lock(), "other", dead, undefined],
    ["other host, refreshed 11 min ago", lock({ refreshed: ago(11 * 60_000) }), "other", dead, /not refreshed for 11 min/],
    ["same host, live pid, refreshed 11 min ago", lock({ refreshed: ago(11 * 60_000) }), "nas", alive, /not refreshed for 11 min/],
    ["refreshed exactly at the limit", lock({ refreshed: ago(STALE_AFTER_MS) }), "other", alive, undefined],
    ["refreshed just past the limit", lock({ refreshed: ago(STALE_AFTER_MS + 1000) }), "other", alive, /not refreshed for 10 min/],
    ["refreshed a day ago", lock({ refreshed: ago(24 * 3600_000) }), "other", alive, /not refreshed for 1440 min/],
    ["unparseable refresh time", lock({ refreshed: "garbage" }), "other", alive, undefined],
    ["pid 0 (an unreadable lock) on this host is not checked", lock({ pid: 0, host: "nas" }), "nas", dead, undefined],
  ])("%s", (_label, info, host, isAlive, expected) => {
    const reason = staleReason(info, NOW, host, isAlive);
    if (expected === undefined) expect(reason).toBeUndefined();
    else expect(reason).toMatch(expected);
  });

  it("asks about the holder's pid", () => {
    const asked: number[] = [];
    staleReason(lock({ pid: 777 }), NOW, "nas", (pid) => (asked.push(pid), true));
    expect(asked).toEqual([777]);
  });

  it("is ten minutes", () => {
    expect(STALE_AFTER_MS).toBe(10 * 60_000);
  });
});

describe("describeLock", () => {
  it("names pid, host, start time and command", () => {
    expect(describeLock(lock())).toBe("locked by pid 4242 on host nas since 2025-09-14 03:00:02Z (incus-backup backup --all)");
  });
});

/** A pid that belonged to a process that has exited. */
function deadPid(): number {
  const pid = spawnSync(process.execPath, ["-e", ""]).pid;
  if (pid === undefined) throw new Error("could not start a child process");
  return pid;
}

async function lockFile(dir: string): Promise<LockInfo> {
  return JSON.parse(await readFile(join(dir, "lock.json"), "utf8")) as LockInfo;
}

describe("RepositoryLock", () => {
  it("writes who holds it, and removes the file on release", async () => {
    const dir = await tempDir();
    const lock = await RepositoryLock.acquire(dir, "incus-backup backup --all");
    const info = await lockFile(dir);
    expect(info).toMatchObject({ host: hostname(), pid: process.pid, command: "incus-backup backup --all" });
    expect(info.started).toBe(info.refreshed);
    await lock.release();
    expect(await readdir(dir)).toEqual([]);
    await lock.release(); // twice is harmless
  });

  it("refuses a second holder with LockedError naming the first", async () => {
    const dir = await tempDir();
    const lock = await RepositoryLock.acquire(dir, "incus-backup backup --all");
    try {
      const err = await RepositoryLock.acquire(dir, "incus-backup restore --all").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LockedError);
      expect((err as LockedError).exitCode).toBe(ExitCode.Locked);
      expect((err as LockedError).exitCode).toBe(7);
      expect((err as Error).message).toMatch(
        new RegExp(`^repository ${dir} is locked by pid ${process.pid} on host ${hostname()} since .* \\(incus-backup backup --all\\)$`),
      );
      expect((err as LockedError).hint).toMatch(/unlock/);
      expect((await lockFile(dir)).command).toBe("incus-backup backup --all");
    } finally {
      await lock.release();
    }
    const again = await RepositoryLock.acquire(dir, "incus-backup restore --all");
    await again.release();
  });

  it("takes over a lock whose process on this host is gone, and says so", async () => {
    const dir = await tempDir();
    const pid = deadPid();
    const now = new Date().toISOString();
    await writeFile(join(dir, "lock.json"), JSON.stringify({ host: hostname(), pid, command: "old run", started: now, refreshed: now, id: "dead" }));
    const messages: string[] = [];
    const lock = await RepositoryLock.acquire(dir, "new run", { onMessage: (t) => messages.push(t) });
    try {
      expect(messages).toEqual([expect.stringMatching(new RegExp(`^taking over a stale lock: locked by pid ${pid} on host .*\\(old run\\) \\(process ${pid} is gone\\)$`))]);
      expect((await lockFile(dir)).command).toBe("new run");
    } finally {
      await lock.release();
    }
    expect(await readdir(dir)).toEqual([]);
  });

  it("takes over a lock from another host that has not been refreshed for too long", async () => {
    const dir = await tempDir();
    const old = "2025-09-14T01:00:00.000Z";
    await writeFile(join(dir, "lock.json"), JSON.stringify({ host: "elsewhere", pid: 1, command: "old run", started: old, refreshed: old, id: "old" }));
    const messages: string[] = [];
    const lock = await RepositoryLock.acquire(dir, "new run", { onMessage: (t) => messages.push(t), now: () => new Date("2025-09-14T02:00:00Z") });
    await lock.release();
    expect(messages).toEqual([expect.stringMatching(/not refreshed for 60 min\)$/)]);
  });

  it("respects a fresh lock from another host", async () => {
    const dir = await tempDir();
    const now = new Date().toISOString();
    await writeFile(join(dir, "lock.json"), JSON.stringify({ host: "elsewhere", pid: 1, command: "other run", started: now, refreshed: now, id: "x" }));
    await expect(RepositoryLock.acquire(dir, "new run")).rejects.toThrow(/locked by pid 1 on host elsewhere/);
  });

  it("treats an unreadable lock as held", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "lock.json"), "{ half a lo");
    await expect(RepositoryLock.acquire(dir, "new run")).rejects.toThrow(LockedError);
    expect(await readLock(join(dir, "lock.json"))).toMatchObject({ host: "?", pid: 0 });
  });

  it.each<[string, unknown]>([
    ["fields missing", { host: "elsewhere", pid: 5 }],
    ["times that are numbers", { host: "elsewhere", pid: 5, command: "x", started: 1, refreshed: 2, id: "i" }],
    ["a time that is not a date", { host: "elsewhere", pid: 5, command: "x", started: "soon", refreshed: "soon", id: "i" }],
    ["a pid that is a string", { host: "elsewhere", pid: "5", command: "x", started: NOW.toISOString(), refreshed: NOW.toISOString(), id: "i" }],
    ["an array", [1, 2]],
    ["null", null],
  ])("reads a lock with %s as unreadable, and names it so", async (_label, record) => {
    const dir = await tempDir();
    await writeFile(join(dir, "lock.json"), JSON.stringify(record));
    const info = await readLock(join(dir, "lock.json"));
    expect(info).toMatchObject({ host: "?", pid: 0, id: "?" });
    expect(describeLock(info!)).toMatch(/^locked by a lock file that cannot be read \(written \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\)$/);
    await expect(RepositoryLock.acquire(dir, "new run")).rejects.toThrow(/locked by a lock file that cannot be read/);
  });

  it("takes over an unreadable lock once its file is old enough", async () => {
    const dir = await tempDir();
    const path = join(dir, "lock.json");
    await writeFile(path, "");
    const hourAgo = new Date(Date.now() - 3600_000);
    await utimes(path, hourAgo, hourAgo);
    const messages: string[] = [];
    const lock = await RepositoryLock.acquire(dir, "new run", { onMessage: (t) => messages.push(t) });
    await lock.release();
    expect(messages).toEqual([expect.stringMatching(/^taking over a stale lock: locked by a lock file that cannot be read \(written .*\) \(not refreshed for 60 min\)$/)]);
  });

  it("removes what runs killed while taking or refreshing the lock left beside it, and keeps a live run's candidate", async () => {
    const dir = await tempDir();
    const now = new Date().toISOString();
    const record = (pid: number, host = hostname()) => JSON.stringify({ host, pid, command: "x", started: now, refreshed: now, id: "c" });
    await writeFile(join(dir, ".lock.json-dead0000dead0000"), record(deadPid()));
    await writeFile(join(dir, "lock.json.tmp-1-abc"), record(deadPid()));
    await writeFile(join(dir, ".lock.json-stale-0123456789ab"), record(1, "elsewhere"));
    await writeFile(join(dir, ".lock.json-live0000live0000"), record(process.pid));
    await writeFile(join(dir, ".lock.json-other000other000"), record(1, "elsewhere"));
    const lock = await RepositoryLock.acquire(dir, "new run");
    await lock.release();
    expect((await readdir(dir)).sort()).toEqual([".lock.json-live0000live0000", ".lock.json-other000other000"]);
  });

  it("does not remove a lock that another run holds by now", async () => {
    const dir = await tempDir();
    const lock = await RepositoryLock.acquire(dir, "first");
    const now = new Date().toISOString();
    await writeFile(join(dir, "lock.json"), JSON.stringify({ host: "elsewhere", pid: 1, command: "second", started: now, refreshed: now, id: "other" }));
    await lock.release();
    expect((await lockFile(dir)).command).toBe("second");
  });
});
