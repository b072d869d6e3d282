// Retention rules against hand-worked calendars: month ends, leap day, year ends, ISO weeks, DST changes.

import { describe, expect, it } from "vitest";
import {
  EMPTY_POLICY,
  applyPolicy,
  formatLocal,
  formatPolicy,
  formatReason,
  isoWeek,
  planRetention,
  type RetentionPolicy,
} from "../../../src/core/retention";
import { UsageError } from "../../../src/errors";
import type { ItemKey } from "../../../src/core/selection";

/** One line per version, newest first: "keep 2025-03-01T00:30 daily 2025-03-01". */
function decide(times: string[], policy: Partial<RetentionPolicy>, tz = "UTC"): string[] {
  return applyPolicy(
    times.map((t) => new Date(t)),
    (d) => d,
    { ...EMPTY_POLICY, ...policy },
    tz,
  ).map((d) => `${d.keep ? "keep" : "remove"} ${d.time.toISOString().slice(0, 16)}${d.reasons.length ? " " : ""}${d.reasons.map(formatReason).join(", ")}`);
}

describe("applyPolicy: calendar periods", () => {
  const monthEnd = ["2025-02-27T23:30:00Z", "2025-02-28T03:00:00Z", "2025-02-28T22:00:00Z", "2025-03-01T00:30:00Z"];

  it("keeps the newest version of each day, across a month end (UTC)", () => {
    expect(decide(monthEnd, { daily: 3 })).toEqual([
      "keep 2025-03-01T00:30 daily 2025-03-01",
      "keep 2025-02-28T22:00 daily 2025-02-28",
      "remove 2025-02-28T03:00",
      "keep 2025-02-27T23:30 daily 2025-02-27",
    ]);
  });

  it("puts days at local midnight: the same instants in Berlin (UTC+1) fall on two days", () => {
    // Local: 03-01 01:30, 02-28 23:00, 02-28 04:00, 02-28 00:30.
    expect(decide(monthEnd, { daily: 3 }, "Europe/Berlin")).toEqual([
      "keep 2025-03-01T00:30 daily 2025-03-01",
      "keep 2025-02-28T22:00 daily 2025-02-28",
      "remove 2025-02-28T03:00",
      "remove 2025-02-27T23:30",
    ]);
  });

  it("and in New York (UTC-5) on two other days", () => {
    // Local: 02-28 19:30, 02-28 17:00, 02-27 22:00, 02-27 18:30.
    expect(decide(monthEnd, { daily: 3 }, "America/New_York")).toEqual([
      "keep 2025-03-01T00:30 daily 2025-02-28",
      "remove 2025-02-28T22:00",
      "keep 2025-02-28T03:00 daily 2025-02-27",
      "remove 2025-02-27T23:30",
    ]);
  });

  it("keeps one version per month, the month's newest, for the N most recent months", () => {
    const times = ["2025-01-31T23:59:59Z", "2025-02-01T00:00:00Z", "2025-02-28T12:00:00Z", "2025-03-31T23:00:00Z", "2025-04-30T10:00:00Z"];
    expect(decide(times, { monthly: 3 })).toEqual([
      "keep 2025-04-30T10:00 monthly 2025-04",
      "keep 2025-03-31T23:00 monthly 2025-03",
      "keep 2025-02-28T12:00 monthly 2025-02",
      "remove 2025-02-01T00:00",
      "remove 2025-01-31T23:59",
    ]);
  });

  it("handles the leap day: Feb 29 is a day of its own, in ISO week 9, in February", () => {
    const times = ["2024-01-31T12:00:00Z", "2024-02-29T10:00:00Z", "2024-02-29T20:00:00Z", "2024-03-01T00:00:00Z"];
    expect(decide(times, { daily: 2, weekly: 2, monthly: 2 })).toEqual([
      "keep 2024-03-01T00:00 daily 2024-03-01, weekly 2024-W09, monthly 2024-03",
      "keep 2024-02-29T20:00 daily 2024-02-29, monthly 2024-02",
      "remove 2024-02-29T10:00",
      "keep 2024-01-31T12:00 weekly 2024-W05",
    ]);
  });

  it("uses ISO weeks across the year end, and calendar years for yearly", () => {
    // Sat 2024-12-28 and Sun 12-29 are 2024-W52; Mon 12-30 and Thu 2025-01-02 are 2025-W01.
    const times = ["2024-12-28T12:00:00Z", "2024-12-29T12:00:00Z", "2024-12-30T12:00:00Z", "2025-01-02T12:00:00Z"];
    expect(decide(times, { weekly: 2, yearly: 2 })).toEqual([
      "keep 2025-01-02T12:00 weekly 2025-W01, yearly 2025",
      "keep 2024-12-30T12:00 yearly 2024",
      "keep 2024-12-29T12:00 weekly 2024-W52",
      "remove 2024-12-28T12:00",
    ]);
  });

  it("knows week 53: 2020-12-31 and 2021-01-03 share 2020-W53", () => {
    const times = ["2020-12-27T12:00:00Z", "2020-12-31T12:00:00Z", "2021-01-03T12:00:00Z", "2021-01-04T12:00:00Z"];
    expect(decide(times, { weekly: 2 })).toEqual([
      "keep 2021-01-04T12:00 weekly 2021-W01",
      "keep 2021-01-03T12:00 weekly 2020-W53",
      "remove 2020-12-31T12:00",
      "remove 2020-12-27T12:00",
    ]);
  });

  it("skips the missing hour when summer time starts (Berlin, 2025-03-30 02:00 -> 03:00)", () => {
    // Local: 03-30 00:30 CET, 01:30 CET, 03:30 CEST, 03-31 00:30 CEST.
    const times = ["2025-03-29T23:30:00Z", "2025-03-30T00:30:00Z", "2025-03-30T01:30:00Z", "2025-03-30T22:30:00Z"];
    expect(decide(times, { hourly: 3, daily: 2 }, "Europe/Berlin")).toEqual([
      "keep 2025-03-30T22:30 hourly 2025-03-31 00h, daily 2025-03-31",
      "keep 2025-03-30T01:30 hourly 2025-03-30 03h, daily 2025-03-30",
      "keep 2025-03-30T00:30 hourly 2025-03-30 01h",
      "remove 2025-03-29T23:30",
    ]);
    // The same instants in UTC: two days, and the 23:30 one is a day of its own.
    expect(decide(times, { daily: 2 })).toEqual([
      "keep 2025-03-30T22:30 daily 2025-03-30",
      "remove 2025-03-30T01:30",
      "remove 2025-03-30T00:30",
      "keep 2025-03-29T23:30 daily 2025-03-29",
    ]);
  });

  it("counts the repeated hour when summer time ends as one hour (Berlin, 2025-10-26 02:00-03:00 twice)", () => {
    // Local: 02:30 CEST, 02:30 CET, 03:30 CET.
    const times = ["2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z", "2025-10-26T02:30:00Z"];
    expect(decide(times, { hourly: 3 }, "Europe/Berlin")).toEqual([
      "keep 2025-10-26T02:30 hourly 2025-10-26 03h",
      "keep 2025-10-26T01:30 hourly 2025-10-26 02h",
      "remove 2025-10-26T00:30",
    ]);
    expect(decide(times, { hourly: 3 })).toEqual([
      "keep 2025-10-26T02:30 hourly 2025-10-26 02h",
      "keep 2025-10-26T01:30 hourly 2025-10-26 01h",
      "keep 2025-10-26T00:30 hourly 2025-10-26 00h",
    ]);
  });

  it("keeps a day's newest version when the day has 25 hours (Berlin, 2025-10-26)", () => {
    const times = ["2025-10-25T22:30:00Z", "2025-10-26T12:00:00Z", "2025-10-26T22:59:00Z", "2025-10-26T23:00:00Z"];
    // Local: 10-26 00:30 CEST, 13:00 CET, 23:59 CET, 10-27 00:00 CET.
    expect(decide(times, { daily: 2 }, "Europe/Berlin")).toEqual([
      "keep 2025-10-26T23:00 daily 2025-10-27",
      "keep 2025-10-26T22:59 daily 2025-10-26",
      "remove 2025-10-26T12:00",
      "remove 2025-10-25T22:30",
    ]);
  });
});

describe("applyPolicy: rules", () => {
  it("counts only periods that have versions", () => {
    const times = ["2025-06-01T03:00:00Z", "2025-06-05T03:00:00Z", "2025-06-10T03:00:00Z", "2025-06-20T03:00:00Z"];
    expect(decide(times, { daily: 3 })).toEqual([
      "keep 2025-06-20T03:00 daily 2025-06-20",
      "keep 2025-06-10T03:00 daily 2025-06-10",
      "keep 2025-06-05T03:00 daily 2025-06-05",
      "remove 2025-06-01T03:00",
    ]);
  });

  it("lists every rule that keeps a version", () => {
    const times = ["2025-05-01T01:00:00Z", "2025-05-01T02:00:00Z", "2025-05-02T01:00:00Z", "2025-05-02T02:00:00Z"];
    expect(decide(times, { last: 2, daily: 2 })).toEqual([
      "keep 2025-05-02T02:00 last, daily 2025-05-02",
      "keep 2025-05-02T01:00 last",
      "keep 2025-05-01T02:00 daily 2025-05-01",
      "remove 2025-05-01T01:00",
    ]);
  });

  it("keeps everything when the rules ask for more than there is", () => {
    const times = ["2025-05-01T01:00:00Z", "2025-05-02T01:00:00Z"];
    expect(decide(times, { last: 10, yearly: 10 }).every((l) => l.startsWith("keep"))).toBe(true);
  });

  it("does not depend on the order of its input", () => {
    const times = ["2025-05-02T01:00:00Z", "2025-04-01T01:00:00Z", "2025-05-03T01:00:00Z", "2025-05-01T01:00:00Z"];
    expect(decide(times, { daily: 2, monthly: 2 })).toEqual(decide([...times].sort(), { daily: 2, monthly: 2 }));
  });

  it("always keeps the newest version, and never keeps more than the rules allow", () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const times = Array.from({ length: 1 + rand(40) }, () => new Date(Date.UTC(2024, 0, 1) + rand(800 * 24) * 3_600_000 + rand(3600) * 1000));
      const policy: RetentionPolicy = { last: rand(3), hourly: rand(3), daily: rand(4), weekly: rand(3), monthly: rand(3), yearly: rand(2) };
      if (Object.values(policy).every((n) => n === 0)) policy.daily = 1;
      const d = applyPolicy(times, (t) => t, policy, round % 2 ? "Europe/Berlin" : "UTC");
      expect(d[0]!.keep).toBe(true);
      expect(d[0]!.time.getTime()).toBe(Math.max(...times.map((t) => t.getTime())));
      const kept = d.filter((x) => x.keep).length;
      expect(kept).toBeLessThanOrEqual(Object.values(policy).reduce((a, b) => a + b, 0));
      for (const x of d) expect(x.keep).toBe(x.reasons.length > 0);
    }
  });

  it("refuses an empty policy and bad counts", () => {
    expect(() => applyPolicy([new Date()], (d) => d, EMPTY_POLICY, "UTC")).toThrow(UsageError);
    expect(() => applyPolicy([new Date()], (d) => d, { ...EMPTY_POLICY, daily: -1 }, "UTC")).toThrow(/keep-daily/);
    expect(() => applyPolicy([new Date()], (d) => d, { ...EMPTY_POLICY, daily: 1.5 }, "UTC")).toThrow(/keep-daily/);
  });

  it("refuses an unknown time zone", () => {
    expect(() => applyPolicy([new Date()], (d) => d, { ...EMPTY_POLICY, daily: 1 }, "Mars/Olympus")).toThrow(/unknown time zone/);
  });

  it("decides nothing for no versions", () => {
    expect(applyPolicy([], (d: Date) => d, { ...EMPTY_POLICY, last: 1 }, "UTC")).toEqual([]);
  });
});

describe("planRetention", () => {
  const web: ItemKey = { kind: "instance", project: "default", name: "web" };
  const data: ItemKey = { kind: "volume", project: "default", pool: "default", name: "data" };

  it("applies the policy to each item on its own, timing versions by their names (UTC)", () => {
    const versions = [
      { key: web, version: "20250101-030000" },
      { key: data, version: "20250101-030000" },
      { key: web, version: "20250102-030000" },
      { key: web, version: "20250102-040000" },
    ];
    const plan = planRetention(versions, { ...EMPTY_POLICY, daily: 5 }, "UTC");
    const summary = plan.map((p) => [p.key.name, p.decisions.map((d) => `${d.keep ? "keep" : "remove"} ${d.entry.version}`)]);
    expect(summary).toEqual([
      ["web", ["keep 20250102-040000", "remove 20250102-030000", "keep 20250101-030000"]],
      ["data", ["keep 20250101-030000"]],
    ]);
  });
});

describe("isoWeek", () => {
  it.each([
    [2020, 12, 31, "2020-53"],
    [2021, 1, 3, "2020-53"],
    [2021, 1, 4, "2021-1"],
    [2024, 12, 29, "2024-52"],
    [2024, 12, 30, "2025-1"],
    [2026, 1, 1, "2026-1"],
    [2027, 1, 1, "2026-53"],
    [2008, 12, 29, "2009-1"],
    [2010, 1, 3, "2009-53"],
    [2024, 2, 29, "2024-9"],
  ])("%i-%i-%i is week %s", (y, m, d, expected) => {
    const w = isoWeek(y, m, d);
    expect(`${w.year}-${w.week}`).toBe(expected);
  });
});

describe("formatting", () => {
  it("shows local times with their offset", () => {
    expect(formatLocal(new Date("2025-03-30T00:30:00Z"), "Europe/Berlin")).toBe("2025-03-30 01:30:00 +01:00");
    expect(formatLocal(new Date("2025-03-30T01:30:00Z"), "Europe/Berlin")).toBe("2025-03-30 03:30:00 +02:00");
    expect(formatLocal(new Date("2025-03-30T01:30:00.900Z"), "America/St_Johns")).toBe("2025-03-29 23:00:00 -02:30");
    expect(formatLocal(new Date("2025-03-30T01:30:00Z"), "UTC")).toBe("2025-03-30 01:30:00 +00:00");
  });

  it("names the rules that are on", () => {
    expect(formatPolicy({ ...EMPTY_POLICY, daily: 7, weekly: 4, monthly: 6 })).toBe("daily 7, weekly 4, monthly 6");
    expect(formatPolicy(EMPTY_POLICY)).toBe("none");
  });
});
