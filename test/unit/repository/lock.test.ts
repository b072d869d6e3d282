// When a repository lock counts as abandoned, and how a holder is described to the user.

import { describe, expect, it } from "vitest";
import { STALE_AFTER_MS, describeLock, staleReason, type LockInfo } from "../../../src/repository/lock";

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
