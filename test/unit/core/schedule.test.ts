// Cron schedules in a time zone, and the anacron-like catch-up decision.

import { describe, expect, it } from "vitest";
import { missedRun, parseSchedule } from "../../../src/core/schedule";
import { UsageError } from "../../../src/errors";

const iso = (d: Date | undefined) => d?.toISOString();

describe("parseSchedule", () => {
  it("reads the expression in the given time zone, summer and winter", () => {
    const s = parseSchedule("0 3 * * *", "Europe/Berlin");
    expect(iso(s.next(new Date("2025-01-15T12:00:00Z")))).toBe("2025-01-16T02:00:00.000Z");
    expect(iso(s.next(new Date("2025-07-15T12:00:00Z")))).toBe("2025-07-16T01:00:00.000Z");
    expect(iso(s.prev(new Date("2025-07-15T12:00:00Z")))).toBe("2025-07-15T01:00:00.000Z");
  });

  it("runs once on the days summer time starts and ends", () => {
    const s = parseSchedule("30 2 * * *", "Europe/Berlin");
    // 02:30 does not exist on 2025-03-30: it runs at 03:30 CEST.
    expect(iso(s.next(new Date("2025-03-29T23:00:00Z")))).toBe("2025-03-30T01:30:00.000Z");
    // 02:30 happens twice on 2025-10-26: the first one only.
    const first = s.next(new Date("2025-10-25T23:00:00Z"));
    expect(iso(first)).toBe("2025-10-26T00:30:00.000Z");
    expect(iso(s.next(first))).toBe("2025-10-27T01:30:00.000Z");
  });

  it("is strict about next and prev: a scheduled time is not its own next", () => {
    const s = parseSchedule("* * * * *", "UTC");
    const t = new Date("2025-05-05T10:00:00Z");
    expect(iso(s.next(t))).toBe("2025-05-05T10:01:00.000Z");
    expect(iso(s.prev(t))).toBe("2025-05-05T09:59:00.000Z");
    expect(iso(s.prev(new Date("2025-05-05T10:00:00.500Z")))).toBe("2025-05-05T10:00:00.000Z");
  });

  it("accepts six fields (seconds) and the @ names", () => {
    expect(iso(parseSchedule("*/20 * * * * *", "UTC").next(new Date("2025-05-05T10:00:05Z")))).toBe("2025-05-05T10:00:20.000Z");
    expect(iso(parseSchedule("@daily", "UTC").next(new Date("2025-05-05T10:00:05Z")))).toBe("2025-05-06T00:00:00.000Z");
  });

  it.each([
    ["", /empty/],
    ["61 * * * *", /not a valid cron expression/],
    ["bogus", /not a valid cron expression/],
    ["0 0 30 2 *", /not a valid cron expression/],
  ])("refuses %j", (expr, message) => {
    expect(() => parseSchedule(expr, "UTC", "INCUS_BACKUP_SCHEDULE")).toThrow(message);
    expect(() => parseSchedule(expr, "UTC")).toThrow(UsageError);
  });

  it("refuses an unknown time zone", () => {
    expect(() => parseSchedule("0 3 * * *", "Europe/Atlantis")).toThrow(/unknown time zone/);
  });
});

describe("missedRun", () => {
  const daily = parseSchedule("0 3 * * *", "UTC");

  it("catches up when the scheduled time passed while the daemon was down", () => {
    // Last covered at 02:00, back at 04:00: 03:00 was missed.
    expect(iso(missedRun(daily, new Date("2025-05-05T02:00:00Z"), new Date("2025-05-05T04:00:00Z")))).toBe("2025-05-05T03:00:00.000Z");
  });

  it("does not when the daemon covered that time (it stopped after the run)", () => {
    expect(missedRun(daily, new Date("2025-05-05T03:10:00Z"), new Date("2025-05-05T09:00:00Z"))).toBeUndefined();
  });

  it("runs once, for the latest missed time, however many were missed", () => {
    expect(iso(missedRun(daily, new Date("2025-05-01T02:00:00Z"), new Date("2025-05-05T04:00:00Z")))).toBe("2025-05-05T03:00:00.000Z");
  });

  it("does not on a first start (nothing recorded)", () => {
    expect(missedRun(daily, undefined, new Date("2025-05-05T04:00:00Z"))).toBeUndefined();
  });

  it("works in the schedule's time zone", () => {
    const berlin = parseSchedule("0 3 * * *", "Europe/Berlin");
    // 03:00 CEST is 01:00Z.
    expect(iso(missedRun(berlin, new Date("2025-05-05T00:30:00Z"), new Date("2025-05-05T01:30:00Z")))).toBe("2025-05-05T01:00:00.000Z");
    expect(missedRun(berlin, new Date("2025-05-05T00:30:00Z"), new Date("2025-05-05T00:59:00Z"))).toBeUndefined();
  });
});
