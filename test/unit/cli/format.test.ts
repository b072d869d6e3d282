// Plain-text formatting of sizes, durations and tables.

import { describe, expect, it } from "vitest";
import { formatBytes, formatDuration, table } from "../../../src/cli/format";

describe("formatBytes", () => {
  it.each<[number, string]>([
    [0, "0 B"],
    [1, "1 B"],
    [1023, "1023 B"],
    [512.333, "512 B"],
    [1023.7, "1.0 KiB"],
    [1024, "1.0 KiB"],
    [1536, "1.5 KiB"],
    [10 * 1024 - 1, "10.0 KiB"],
    [99.94 * 1024, "99.9 KiB"],
    [99.96 * 1024, "100 KiB"],
    [100 * 1024, "100 KiB"],
    [1023 * 1024, "1023 KiB"],
    [1024 ** 2 - 1, "1.0 MiB"],
    [1024 ** 2, "1.0 MiB"],
    [1.25 * 1024 ** 3, "1.3 GiB"],
    [3 * 1024 ** 4, "3.0 TiB"],
    [2048 * 1024 ** 4, "2048 TiB"],
  ])("%d -> %s", (n, text) => {
    expect(formatBytes(n)).toBe(text);
  });
});

describe("formatDuration", () => {
  it.each<[number, string]>([
    [0, "0.0s"],
    [0.04, "0.0s"],
    [1.25, "1.3s"],
    [59.9, "59.9s"],
    [59.96, "1m00s"],
    [60, "1m00s"],
    [61.4, "1m01s"],
    [119.4, "1m59s"],
    [119.6, "2m00s"],
    [754, "12m34s"],
    [3599.4, "59m59s"],
    [3599.6, "1h00m"],
    [3600, "1h00m"],
    [3661, "1h01m"],
    [36000 + 59 * 60, "10h59m"],
    [90000, "25h00m"],
  ])("%d s -> %s", (s, text) => {
    expect(formatDuration(s)).toBe(text);
  });
});

describe("table", () => {
  it("aligns columns two spaces apart and does not pad the last one", () => {
    expect(
      table(
        ["TYPE", "NAME", "SIZE"],
        [
          ["instance", "web", "1.0 KiB"],
          ["volume", "fast/data", "12 B"],
        ],
      ),
    ).toBe(["TYPE      NAME       SIZE", "instance  web        1.0 KiB", "volume    fast/data  12 B"].join("\n"));
  });

  it("prints only the header without rows", () => {
    expect(table(["A", "B"], [])).toBe("A  B");
  });

  it("leaves no trailing spaces when the last cells are empty", () => {
    const lines = table(["NAME", "NOTE"], [["a", ""], ["bb", "x"]]).split("\n");
    expect(lines).toEqual(["NAME  NOTE", "a", "bb    x"]);
  });

  it("treats missing cells as empty", () => {
    expect(table(["A", "B", "C"], [["1"]])).toBe("A  B  C\n1");
  });

  it("widens a column for a long header", () => {
    expect(table(["VERSIONS", "X"], [["1", "y"]])).toBe("VERSIONS  X\n1         y");
  });
});
