// The service settings from INCUS_BACKUP_* variables: defaults, checks, and URLs fit for logs.

import { describe, expect, it } from "vitest";
import { DEFAULT_POLICY, nextReadData, policyFromEnv, redactUrl, settingsFromEnv } from "../../../src/core/settings";
import { EMPTY_POLICY } from "../../../src/core/retention";
import { UsageError } from "../../../src/errors";

describe("settingsFromEnv", () => {
  it("has defaults for everything", () => {
    const s = settingsFromEnv({}, "Europe/Berlin");
    expect(s.schedule.expression).toBe("0 3 * * *");
    expect(s.schedule.tz).toBe("Europe/Berlin");
    expect(s.policy).toEqual(DEFAULT_POLICY);
    expect(s.policySource).toBe("default");
    expect(s).toMatchObject({ images: false, parallel: undefined, notify: undefined, catchUp: true, verify: undefined, self: undefined });
  });

  it("reads every variable", () => {
    const s = settingsFromEnv(
      {
        INCUS_BACKUP_SCHEDULE: "*/5 * * * *",
        INCUS_BACKUP_TZ: "America/New_York",
        INCUS_BACKUP_KEEP_LAST: "3",
        INCUS_BACKUP_KEEP_WEEKLY: "2",
        INCUS_BACKUP_IMAGES: "yes",
        INCUS_BACKUP_PARALLEL: "4",
        INCUS_BACKUP_NOTIFY_URL: "https://hooks.example.com/T0/secret?token=x",
        INCUS_BACKUP_NOTIFY: "always",
        INCUS_BACKUP_CATCHUP: "off",
        INCUS_BACKUP_VERIFY_SCHEDULE: "0 5 * * 0",
        INCUS_BACKUP_VERIFY_DEEP: "true",
        INCUS_BACKUP_SELF: "infra/backup",
      },
      "UTC",
    );
    expect(s.schedule.tz).toBe("America/New_York");
    expect(s.policy).toEqual({ ...EMPTY_POLICY, last: 3, weekly: 2 });
    expect(s.policySource).toBe("settings");
    expect(s.images).toBe(true);
    expect(s.parallel).toBe(4);
    expect(s.notify).toEqual({ url: "https://hooks.example.com/T0/secret?token=x", when: "always" });
    expect(s.catchUp).toBe(false);
    expect(s.verify?.schedule.expression).toBe("0 5 * * 0");
    expect(s.verify?.schedule.tz).toBe("America/New_York");
    expect(s.verify?.deep).toBe(true);
    expect(s.self).toEqual({ project: "infra", name: "backup" });
  });

  it("treats empty values as unset", () => {
    const s = settingsFromEnv({ INCUS_BACKUP_SCHEDULE: "", INCUS_BACKUP_NOTIFY_URL: " ", INCUS_BACKUP_KEEP_DAILY: "" }, "UTC");
    expect(s.schedule.expression).toBe("0 3 * * *");
    expect(s.notify).toBeUndefined();
    expect(s.policySource).toBe("default");
  });

  it.each([
    [{ INCUS_BACKUP_SCHEDULE: "every day" }, /INCUS_BACKUP_SCHEDULE/],
    [{ INCUS_BACKUP_TZ: "Nowhere/Special" }, /unknown time zone/],
    [{ INCUS_BACKUP_KEEP_DAILY: "-1" }, /INCUS_BACKUP_KEEP_DAILY/],
    [{ INCUS_BACKUP_KEEP_DAILY: "7.5" }, /INCUS_BACKUP_KEEP_DAILY/],
    [{ INCUS_BACKUP_KEEP_DAILY: "0", INCUS_BACKUP_KEEP_LAST: "0" }, /would remove every version/],
    [{ INCUS_BACKUP_PARALLEL: "0" }, /INCUS_BACKUP_PARALLEL/],
    [{ INCUS_BACKUP_PARALLEL: "65" }, /INCUS_BACKUP_PARALLEL/],
    [{ INCUS_BACKUP_IMAGES: "maybe" }, /INCUS_BACKUP_IMAGES/],
    [{ INCUS_BACKUP_NOTIFY_URL: "not a url" }, /INCUS_BACKUP_NOTIFY_URL/],
    [{ INCUS_BACKUP_NOTIFY_URL: "ftp://example.com/" }, /http or https/],
    [{ INCUS_BACKUP_NOTIFY_URL: "https://example.com/", INCUS_BACKUP_NOTIFY: "sometimes" }, /INCUS_BACKUP_NOTIFY=/],
    [{ INCUS_BACKUP_VERIFY_SCHEDULE: "61 * * * *" }, /INCUS_BACKUP_VERIFY_SCHEDULE/],
    [{ INCUS_BACKUP_SELF: "a/b/c" }, /INCUS_BACKUP_SELF/],
  ])("refuses %j", (env, message) => {
    expect(() => settingsFromEnv(env, "UTC")).toThrow(message);
    expect(() => settingsFromEnv(env, "UTC")).toThrow(UsageError);
  });

  it("never puts the notify URL's secret into an error message", () => {
    try {
      settingsFromEnv({ INCUS_BACKUP_NOTIFY_URL: "https://hooks.example.com/s3cr3t", INCUS_BACKUP_NOTIFY: "bad" }, "UTC");
    } catch (err) {
      expect((err as Error).message).not.toContain("s3cr3t");
    }
  });
});

describe("policyFromEnv", () => {
  it("is undefined with no variable set, and turns unset rules off otherwise", () => {
    expect(policyFromEnv({})).toBeUndefined();
    expect(policyFromEnv({ INCUS_BACKUP_KEEP_HOURLY: "24" })).toEqual({ ...EMPTY_POLICY, hourly: 24 });
  });
});

describe("redactUrl", () => {
  it.each([
    ["https://hooks.slack.com/services/T0/B0/XYZ", "https://hooks.slack.com/…"],
    ["https://ntfy.sh/", "https://ntfy.sh/"],
    ["http://user:pw@example.com:8080/", "http://example.com:8080/…"],
    ["https://example.com/?token=abc", "https://example.com/…"],
    ["nonsense", "(invalid URL)"],
  ])("%s -> %s", (url, shown) => {
    expect(redactUrl(url)).toBe(shown);
  });
});

describe("INCUS_BACKUP_VERIFY_READ_DATA", () => {
  it("is read with the verify schedule, and checked", () => {
    const s = settingsFromEnv({ INCUS_BACKUP_VERIFY_SCHEDULE: "0 5 * * 0", INCUS_BACKUP_VERIFY_READ_DATA: "1/4" }, "UTC");
    expect(s.verify?.readData).toBe("1/4");
    expect(() => settingsFromEnv({ INCUS_BACKUP_VERIFY_SCHEDULE: "0 5 * * 0", INCUS_BACKUP_VERIFY_READ_DATA: "5/4" }, "UTC")).toThrow(
      'INCUS_BACKUP_VERIFY_READ_DATA="5/4": use all, a percentage such as 10%, or a part such as 1/5',
    );
  });

  it("a part rotates, so that m scheduled verifies read all the data", () => {
    expect(nextReadData("1/4", undefined)).toBe("1/4");
    expect(nextReadData("1/4", "1/4")).toBe("2/4");
    expect(nextReadData("1/4", "4/4")).toBe("1/4");
    expect(nextReadData("2/4", "3/5")).toBe("2/4");
    expect(nextReadData("10%", "1/4")).toBe("10%");
    expect(nextReadData("all", undefined)).toBe("all");
  });
});
