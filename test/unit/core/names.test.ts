// Names that become path components or Incus instance names: what is refused, and why.

import { describe, expect, it } from "vitest";
import { UsageError } from "../../../src/errors";
import { checkComponent, checkInstanceName, instanceNameProblem, parseVolumeRef, quote, safePathComponent } from "../../../src/core/names";

describe("safePathComponent", () => {
  it.each([
    "web",
    "my-volume_01",
    "a.b",
    "...",
    ".hidden",
    "with space",
    "données",
    "数据卷",
    "emoji-🦊",
    "x".repeat(255),
    "é".repeat(127) + "x", // 255 bytes in UTF-8
  ])("accepts %j", (name) => {
    expect(safePathComponent(name)).toBeUndefined();
  });

  it.each<[string, RegExp]>([
    ["", /empty/],
    [".", /not allowed/],
    ["..", /not allowed/],
    ["a/b", /"\/"/],
    ["/", /"\/"/],
    ["../x", /"\/"/],
    ["a\\b", /"\\"/],
    ["..\\x", /"\\"/],
    ["tab\there", /control/],
    ["new\nline", /control/],
    ["cr\r", /control/],
    ["\u0001", /control/],
    ["esc\u001b[31m", /control/],
    ["del\u007f", /control/],
    ["x".repeat(256), /255 bytes/],
    ["é".repeat(128), /255 bytes/], // 128 characters, 256 bytes
    ["🦊".repeat(64), /255 bytes/], // 64 characters, 256 bytes
  ])("refuses %j", (name, reason) => {
    expect(safePathComponent(name)).toMatch(reason);
  });

  it("counts the limit in UTF-8 bytes, not characters", () => {
    const name = "é".repeat(128);
    expect(name.length).toBe(128);
    expect(safePathComponent(name)).toBeDefined();
  });
});

describe("instanceNameProblem", () => {
  it.each(["web", "Web01", "a", "1web", "web-01", "a-b-c", "x".repeat(63), "0x1f"])("accepts %j", (name) => {
    expect(instanceNameProblem(name)).toBeUndefined();
  });

  it.each<[string, RegExp]>([
    ["", /1-63/],
    ["x".repeat(64), /1-63/],
    ["-web", /start or end/],
    ["web-", /start or end/],
    ["-", /start or end/],
    ["123", /number/],
    ["0", /number/],
    ["web_01", /letters, digits and hyphens/],
    ["web.example", /letters, digits and hyphens/],
    ["web 01", /letters, digits and hyphens/],
    ["../x", /letters, digits and hyphens/],
    ["..", /letters, digits and hyphens/],
    ["a/b", /letters, digits and hyphens/],
    ["wéb", /letters, digits and hyphens/],
  ])("refuses %j", (name, reason) => {
    expect(instanceNameProblem(name)).toMatch(reason);
  });
});

describe("checkInstanceName / checkComponent", () => {
  it("return the name when it is fine", () => {
    expect(checkInstanceName("web")).toBe("web");
    expect(checkComponent("default", "project name")).toBe("default");
  });

  it("throw a UsageError that quotes the value and names what it is", () => {
    expect(() => checkInstanceName("bad_name", "--target-name")).toThrow(UsageError);
    expect(() => checkInstanceName("bad_name", "--target-name")).toThrow('invalid --target-name "bad_name"');
    expect(() => checkComponent("..", "project name")).toThrow('invalid project name ".."');
  });

  it("makes control characters visible in the message", () => {
    expect(quote("a\nb")).toBe('"a\\nb"');
    expect(() => checkComponent("a\nb", "pool name")).toThrow('"a\\nb"');
  });
});

describe("parseVolumeRef", () => {
  it.each([
    ["data", { name: "data" }],
    ["default/data", { pool: "default", name: "data" }],
    ["pool-1/données", { pool: "pool-1", name: "données" }],
  ])("%j", (text, ref) => {
    expect(parseVolumeRef(text)).toEqual(ref);
  });

  it.each<[string, RegExp]>([
    ["a/b/c", /use NAME or POOL\/NAME/],
    ["/a/b", /use NAME or POOL\/NAME/],
    ["../x", /invalid pool name "\.\."/],
    ["./x", /invalid pool name "\."/],
    ["x/..", /invalid volume name "\.\."/],
    ["..", /invalid volume name "\.\."/],
    ["", /invalid volume name ""/],
    ["/x", /invalid pool name ""/],
    ["x/", /invalid volume name ""/],
    ["p/a\\b", /invalid volume name/],
  ])("refuses %j", (text, reason) => {
    expect(() => parseVolumeRef(text)).toThrow(UsageError);
    expect(() => parseVolumeRef(text)).toThrow(reason);
  });
});
