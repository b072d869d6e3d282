// Version names: formatting in UTC, strict parsing, prefixes, picking and the next free name.

import { describe, expect, it } from "vitest";
import { isVersion, isVersionPrefix, nextVersion, pickVersion, versionAt, versionDate } from "../../../src/core/version";

describe("versionAt", () => {
  it.each([
    ["2025-09-14T03:00:02Z", "20250914-030002"],
    ["2025-01-02T03:04:05.999Z", "20250102-030405"],
    ["0999-01-01T00:00:00Z", "09990101-000000"],
    ["2025-12-31T23:59:59Z", "20251231-235959"],
  ])("%s -> %s", (iso, version) => {
    expect(versionAt(new Date(iso))).toBe(version);
  });

  it("uses UTC, not the local time zone", () => {
    // 23:30 the day before in UTC, whatever TZ the test runs in.
    expect(versionAt(new Date("2025-03-01T01:30:00+02:00"))).toBe("20250228-233000");
  });
});

describe("isVersion", () => {
  it.each(["20250914-030002", "20240229-000000", "20251231-235959", "20250101-000000"])("accepts %s", (v) => {
    expect(isVersion(v)).toBe(true);
  });

  it.each([
    ["20250230-000000", "February 30th"],
    ["20250229-000000", "February 29th outside a leap year"],
    ["20251301-000000", "month 13"],
    ["20250001-000000", "month 0"],
    ["20250100-000000", "day 0"],
    ["20250101-240000", "hour 24"],
    ["20250101-006000", "minute 60"],
    ["20250101-000060", "second 60"],
    ["2025091-030002", "short date"],
    ["20250914-03000", "short time"],
    ["20250914030002", "no dash"],
    ["20250914_030002", "underscore"],
    ["20250914-030002 ", "trailing space"],
    [" 20250914-030002", "leading space"],
    ["2025-09-14T03:00:02Z", "ISO"],
    ["abcdefgh-ijklmn", "letters"],
    ["", "empty"],
  ])("rejects %s (%s)", (v) => {
    expect(isVersion(v)).toBe(false);
    expect(versionDate(v)).toBeUndefined();
  });

  it("round-trips through versionDate", () => {
    expect(versionDate("20250914-030002")?.toISOString()).toBe("2025-09-14T03:00:02.000Z");
  });
});

describe("isVersionPrefix", () => {
  it.each(["2", "2025", "202509", "20250914", "20250914-", "20250914-03", "20250914-030002"])("accepts %s", (p) => {
    expect(isVersionPrefix(p)).toBe(true);
  });

  it.each([
    "",
    "abc",
    "latest",
    "2025-09-14",
    "2025-",
    "2025-09",
    "2025091-",
    "202509140",
    "20250914-0300021",
    "20250914--03",
    "-030002",
    "20250914-03:00",
    " 20250914",
  ])("rejects %j", (p) => {
    expect(isVersionPrefix(p)).toBe(false);
  });
});

describe("pickVersion", () => {
  const versions = ["20250913-230000", "20250914-030002", "20250914-150000", "20250914-090000", "20250915-000001"];

  it.each<[string | undefined, string | undefined]>([
    [undefined, "20250915-000001"],
    ["20250914", "20250914-150000"],
    ["20250914-0", "20250914-090000"],
    ["20250914-03", "20250914-030002"],
    ["20250914-030002", "20250914-030002"],
    ["202509", "20250915-000001"],
    ["2025091", "20250915-000001"],
    ["20250916", undefined],
    ["2024", undefined],
    ["20250914-030003", undefined],
  ])("prefix %s -> %s", (prefix, expected) => {
    expect(pickVersion(versions, prefix)).toBe(expected);
  });

  it("does not depend on the order of its input", () => {
    const orders = [versions, [...versions].reverse(), [...versions].sort(), [versions[2]!, versions[0]!, versions[4]!, versions[1]!, versions[3]!]];
    for (const order of orders) {
      expect(pickVersion(order, "20250914")).toBe("20250914-150000");
      expect(pickVersion(order, undefined)).toBe("20250915-000001");
    }
  });

  it("finds nothing in an empty list", () => {
    expect(pickVersion([], undefined)).toBeUndefined();
    expect(pickVersion([], "2025")).toBeUndefined();
  });
});

describe("nextVersion", () => {
  it.each([
    ["20250914-030002", "20250914-030003", "second"],
    ["20250914-030059", "20250914-030100", "minute"],
    ["20250914-035959", "20250914-040000", "hour"],
    ["20250914-235959", "20250915-000000", "day"],
    ["20250930-235959", "20251001-000000", "month"],
    ["20240228-235959", "20240229-000000", "leap day"],
    ["20251231-235959", "20260101-000000", "year"],
  ])("%s -> %s (%s rollover)", (v, next) => {
    expect(nextVersion(v)).toBe(next);
    expect(isVersion(nextVersion(v))).toBe(true);
  });

  it("throws on something that is not a version", () => {
    expect(() => nextVersion("20250230-000000")).toThrow(/not a version/);
    expect(() => nextVersion("abc")).toThrow(/not a version/);
  });
});
