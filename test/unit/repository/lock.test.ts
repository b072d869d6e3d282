// The repository lock: when it counts as abandoned, how its holder is named, taking and releasing it.

import { spawnSync } from "node:child_process";
import { readdir, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ExitCode, LockedError, LockLostError } from "../../../src/errors";
import { RepositoryLock, STALE_AFTER_MS, describeLock, processGone, readLock, staleReason, type LockInfo } from "../../../src/repository/lock";
import { processStart } from "../../../src/local/identity";
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

const gone = () => true;
const running = () => false;
const ME = { install: "aaaabbbbccccdddd" };

describe("staleReason", () => {
  it.each<[string, LockInfo, { install?: string }, (pid: number, start?: string) => boolean, RegExp | undefined]>([
    ["this install, live process, fresh", lock({ install: ME.install }), ME, running, undefined],
    ["this install, process gone", lock({ install: ME.install }), ME, gone, /process 4242 is gone/],
    ["this install, process gone, even when fresh", lock({ install: ME.install, refreshed: NOW.toISOString() }), ME, gone, /process 4242 is gone/],
    // Every deployed container is called `backup`: the host name says nothing about whose PID it is.
    ["another install, same host name, its pid not here: fresh, so held", lock({ install: "1111222233334444" }), ME, gone, undefined],
    ["a lock without an install id (an older version), pid not here: held", lock(), ME, gone, undefined],
    ["this process without an install id: no pid is judged", lock({ install: ME.install }), {}, gone, undefined],
    ["another install, refreshed 11 min ago", lock({ install: "1111222233334444", refreshed: ago(11 * 60_000) }), ME, running, /not refreshed for 11 min/],
    ["this install, live process, refreshed 11 min ago", lock({ install: ME.install, refreshed: ago(11 * 60_000) }), ME, running, /not refreshed for 11 min/],
    ["refreshed exactly at the limit", lock({ refreshed: ago(STALE_AFTER_MS) }), ME, running, undefined],
    ["refreshed just past the limit", lock({ refreshed: ago(STALE_AFTER_MS + 1000) }), ME, running, /not refreshed for 10 min/],
    ["refreshed a day ago", lock({ refreshed: ago(24 * 3600_000) }), ME, running, /not refreshed for 1440 min/],
    ["unparseable refresh time", lock({ refreshed: "garbage" }), ME, running, undefined],
    ["pid 0 (an unreadable lock) is not checked", lock({ pid: 0, install: ME.install }), ME, gone, undefined],
  ])("%s", (_label, info, self, isGone, expected) => {
    const reason = staleReason(info, NOW, self, isGone);
    if (expected === undefined) expect(reason).toBeUndefined();
    else expect(reason).toMatch(expected);
  });

  it("asks about the holder's pid and start time", () => {
    const asked: Array<[number, string | undefined]> = [];
    staleReason(lock({ pid: 777, install: ME.install, start: "12345" }), NOW, ME, (pid, start) => (asked.push([pid, start]), false));
    expect(asked).toEqual([[777, "12345"]]);
  });

  it("is ten minutes", () => {
    expect(STALE_AFTER_MS).toBe(10 * 60_000);
  });
});

describe("processGone", () => {
  it("tells a live process from a dead one, and from a reused PID (another start time)", () => {
    const start = processStart(process.pid);
    expect(start).toMatch(/^\d+$/);
    expect(processGone(process.pid, start)).toBe(false);
    expect(processGone(process.pid)).toBe(false);
    expect(processGone(process.pid, String(Number(start) + 1))).toBe(true);
    expect(processGone(deadPid(), start)).toBe(true);
  });
});

describe("describeLock", () => {
  it("names pid, host, start time and command", () => {
    expect(describeLock(lock())).toBe("locked by pid 4242 on host nas since 2025-09-14 03:00:02Z (incus-backup backup --all)");
  });

  it("names the install, by the start of its id", () => {
    expect(describeLock(lock({ install: "0123456789abcdef" }))).toBe("locked by pid 4242 on host nas (install 01234567) since 2025-09-14 03:00:02Z (incus-backup backup --all)");
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
        new RegExp(`^repository ${dir} is locked by pid ${process.pid} on host ${hostname()} \\(install [0-9a-f]{8}\\) since .* \\(incus-backup backup --all\\)$`),
      );
      expect((err as LockedError).hint).toMatch(/unlock/);
      expect((await lockFile(dir)).command).toBe("incus-backup backup --all");
    } finally {
      await lock.release();
    }
    const again = await RepositoryLock.acquire(dir, "incus-backup restore --all");
    await again.release();
  });

  it("records the install id and the process's start time", async () => {
    const dir = await tempDir();
    const lock = await RepositoryLock.acquire(dir, "run", { install: ME.install });
    expect(await lockFile(dir)).toMatchObject({ install: ME.install, start: processStart(process.pid), pid: process.pid });
    await lock.release();
    const without = await RepositoryLock.acquire(dir, "run", { install: "" });
    expect((await lockFile(dir)).install).toBeUndefined();
    await without.release();
  });

  it("takes its install id from the state directory by default, the same every time", async () => {
    const dir = await tempDir();
    const first = await RepositoryLock.acquire(dir, "run");
    const id = (await lockFile(dir)).install;
    await first.release();
    expect(id).toMatch(/^[0-9a-f]{16}$/);
    const second = await RepositoryLock.acquire(dir, "run");
    expect((await lockFile(dir)).install).toBe(id);
    await second.release();
  });

  it("takes over a lock of this install whose process is gone, and says so", async () => {
    const dir = await tempDir();
    const pid = deadPid();
    const now = new Date().toISOString();
    await writeFile(join(dir, "lock.json"), JSON.stringify({ host: hostname(), pid, install: ME.install, command: "old run", started: now, refreshed: now, id: "dead" }));
    const messages: string[] = [];
    const lock = await RepositoryLock.acquire(dir, "new run", { install: ME.install, onMessage: (t) => messages.push(t) });
    try {
      expect(messages).toEqual([expect.stringMatching(new RegExp(`^taking over a stale lock: locked by pid ${pid} on host .*\\(old run\\) \\(process ${pid} is gone\\)$`))]);
      expect((await lockFile(dir)).command).toBe("new run");
    } finally {
      await lock.release();
    }
    expect(await readdir(dir)).toEqual([]);
  });

  it("respects a fresh lock of another install with the same host name, whose pid is not running here", async () => {
    const dir = await tempDir();
    const now = new Date().toISOString();
    const other = { host: hostname(), pid: deadPid(), install: "1111222233334444", command: "other host's run", started: now, refreshed: now, id: "theirs" };
    await writeFile(join(dir, "lock.json"), JSON.stringify(other));
    const err = await RepositoryLock.acquire(dir, "new run", { install: ME.install }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockedError);
    expect((err as Error).message).toContain(`locked by pid ${other.pid} on host ${hostname()} (install 11112222)`);
    expect((await lockFile(dir)).id).toBe("theirs");
  });

  it("check() passes while the lock is ours, and throws LockLostError once another run took it over or it was removed", async () => {
    const dir = await tempDir();
    const lock = await RepositoryLock.acquire(dir, "first", { install: ME.install });
    await lock.check();
    const now = new Date().toISOString();
    await writeFile(join(dir, "lock.json"), JSON.stringify({ host: "elsewhere", pid: 1, install: "1111222233334444", command: "second", started: now, refreshed: now, id: "other" }));
    const err = await lock.check().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockLostError);
    expect((err as LockLostError).exitCode).toBe(ExitCode.Locked);
    expect((err as Error).message).toMatch(/^the repository lock of this run was taken over: the repository is now locked by pid 1 on host elsewhere \(install 11112222\) since .* \(second\); stopped before writing more$/);
    await lock.release();
    expect((await lockFile(dir)).command).toBe("second");

    const dir2 = await tempDir();
    const lock2 = await RepositoryLock.acquire(dir2, "first", { install: ME.install });
    await rm(join(dir2, "lock.json"));
    await expect(lock2.check()).rejects.toThrow(/lock of this run is gone: another run took it over \(and has ended\), or `unlock --force` removed it/);
    await lock2.release();
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
    const record = (pid: number, host = hostname()) => JSON.stringify({ host, pid, ...(host === hostname() ? { install: ME.install } : {}), command: "x", started: now, refreshed: now, id: "c" });
    await writeFile(join(dir, ".lock.json-dead0000dead0000"), record(deadPid()));
    await writeFile(join(dir, "lock.json.tmp-1-abc"), record(deadPid()));
    await writeFile(join(dir, ".lock.json-stale-0123456789ab"), record(1, "elsewhere"));
    await writeFile(join(dir, ".lock.json-live0000live0000"), record(process.pid));
    await writeFile(join(dir, ".lock.json-other000other000"), record(1, "elsewhere"));
    const lock = await RepositoryLock.acquire(dir, "new run", { install: ME.install });
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
