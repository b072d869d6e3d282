import { describe, expect, it } from "vitest";
import { largestFirst, parallelCompression, runStatus } from "../../../src/engine/backup";
import { itemId, type ItemKey } from "../../../src/core/selection";

const inst = (name: string): ItemKey => ({ kind: "instance", project: "default", name });

describe("largestFirst", () => {
  it("starts the configuration first, then items never backed up, then the largest", () => {
    const items: ItemKey[] = [inst("small"), inst("new"), inst("big"), { kind: "database", project: "", name: "server" }, inst("mid")];
    const sizes = new Map([
      [itemId(inst("small")), 10],
      [itemId(inst("big")), 1000],
      [itemId(inst("mid")), 100],
    ]);
    expect(largestFirst(items, sizes).map((i) => i.name)).toEqual(["server", "new", "big", "mid", "small"]);
  });
});

describe("runStatus", () => {
  const r = (ok: boolean) => ({ item: inst("x"), ok, seconds: 1 });
  it("names a run by its items", () => {
    expect(runStatus({ items: [r(true), r(true)], interrupted: false })).toBe("ok");
    expect(runStatus({ items: [r(true), r(false)], interrupted: false })).toBe("partial");
    expect(runStatus({ items: [r(false)], interrupted: false })).toBe("failed");
    expect(runStatus({ items: [r(true)], interrupted: true })).toBe("interrupted");
  });
});

describe("parallelCompression", () => {
  it("compresses on several cores only when the items at work leave cores idle", () => {
    // One item alone on two cores: pzstd.
    expect(parallelCompression(1, 0, 2, 2)).toBe(true);
    // Four items, two slots, two cores: both slots busy, so plain zstd for every item.
    expect(parallelCompression(1, 3, 2, 2)).toBe(false);
    expect(parallelCompression(2, 2, 2, 2)).toBe(false);
    expect(parallelCompression(2, 0, 2, 2)).toBe(false);
    // The last item, once the others are done, on eight cores: pzstd.
    expect(parallelCompression(1, 0, 4, 8)).toBe(true);
    // Four slots busy on eight cores still leave four idle.
    expect(parallelCompression(4, 10, 4, 8)).toBe(true);
    // One CPU: never.
    expect(parallelCompression(1, 0, 1, 1)).toBe(false);
  });
});
