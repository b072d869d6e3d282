import { describe, expect, it } from "vitest";
import { hostToContainer } from "../../../src/core/idmap";

describe("hostToContainer", () => {
  const map = JSON.stringify([
    { Isuid: true, Isgid: false, Hostid: 1000000, Nsid: 0, Maprange: 65536 },
    { Isuid: false, Isgid: true, Hostid: 2000000, Nsid: 0, Maprange: 65536 },
  ]);
  it("maps host ids in a range back to the container's, and leaves the rest", () => {
    const shift = hostToContainer(map)!;
    expect(shift(1000999, "uid")).toBe(999);
    expect(shift(1000999, "gid")).toBe(1000999);
    expect(shift(2000055, "gid")).toBe(55);
    expect(shift(1065536, "uid")).toBe(1065536);
    expect(shift(0, "uid")).toBe(0);
  });
  it("no map, an empty one or garbage: nothing to map", () => {
    expect(hostToContainer(undefined)).toBeUndefined();
    expect(hostToContainer("[]")).toBeUndefined();
    expect(hostToContainer("not json")).toBeUndefined();
    expect(hostToContainer('{"a":1}')).toBeUndefined();
  });
});
