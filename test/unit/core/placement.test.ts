// Where a restored item goes in a cluster: back to its member, --target-member, the member this tool talks to; ignored on a single server.

import { describe, expect, it } from "vitest";
import { checkTargetMember, placeNew, placeReplacement, type ClusterInfo } from "../../../src/core/placement";
import { volumeLanding } from "../../../src/core/plan";
import { UsageError } from "../../../src/errors";

const cluster: ClusterInfo = { clustered: true, connected: "node1", members: ["node1", "node2"] };
const single: ClusterInfo = { clustered: false, members: [] };

describe("placeNew", () => {
  it("goes back to the member it was backed up on, when the cluster has it (over --target-member)", () => {
    expect(placeNew({ member: "node2" }, cluster, undefined)).toEqual({ member: "node2", note: "on member node2, where it was backed up" });
    expect(placeNew({ member: "node2" }, cluster, "node1").member).toBe("node2");
  });

  it("else to --target-member, else to the member this tool talks to, and says so", () => {
    expect(placeNew({ member: "node3" }, cluster, "node2")).toEqual({ member: "node2", note: "member node3 is not in this cluster: on member node2 (--target-member)" });
    expect(placeNew({ member: "node3" }, cluster, undefined)).toEqual({ member: "node1", note: "member node3 is not in this cluster: on member node1, the one this tool talks to (or give --target-member)" });
    expect(placeNew({}, cluster, "node2")).toEqual({ member: "node2", note: "on member node2 (--target-member)" });
  });

  it("ignores members on a server that is not a cluster, and says so", () => {
    expect(placeNew({ member: "node2" }, single, undefined)).toEqual({ note: "it was on member node2 of a cluster; this server is not one: members are ignored" });
    expect(placeNew({}, single, undefined)).toEqual({});
  });
});

describe("placeReplacement", () => {
  it("replaces on the member that holds the item", () => {
    expect(placeReplacement("node2", cluster)).toEqual({ member: "node2", note: "on member node2, where it is" });
    expect(placeReplacement("none", single)).toEqual({});
  });
});

describe("checkTargetMember", () => {
  it("must name a member of the cluster, and only in a cluster", () => {
    expect(() => checkTargetMember(cluster, "node2")).not.toThrow();
    expect(() => checkTargetMember(cluster, "node9")).toThrow(/not a member of this cluster \(members: node1, node2\)/);
    expect(() => checkTargetMember(single, "node1")).toThrow(UsageError);
    expect(() => checkTargetMember(single, undefined)).not.toThrow();
  });
});

describe("volumeLanding", () => {
  const label = "default/local/v";
  const users = (name: string) => [{ project: "default", name, running: true }];
  const one = [{ users: users("a"), location: "node2" }];
  const two = [
    { users: users("a"), location: "node1" },
    { users: users("b"), location: "node2" },
  ];

  it("a volume backed up on a member of this cluster replaces only that member's volume of its name, with its own users", () => {
    expect(volumeLanding(two, label, { member: "node2" }, cluster)).toEqual({ existing: two[1], placement: { member: "node2", note: "on member node2, where it is" } });
    expect(volumeLanding(two, label, { member: "node1" }, cluster).existing).toBe(two[0]);
  });

  it("where only another member has one of its name, it is created on its own member: the other is another volume", () => {
    expect(volumeLanding(one, label, { member: "node1" }, cluster)).toEqual({ placement: { member: "node1", note: "on member node1, where it was backed up" } });
    expect(volumeLanding([], label, { member: "node2" }, cluster)).toEqual({ placement: { member: "node2", note: "on member node2, where it was backed up" } });
  });

  it("a member the cluster lacks: where a new item goes (--target-member, else the member talked to), replacing the volume of its name there only", () => {
    expect(volumeLanding(two, label, { member: "node3" }, cluster, "node2")).toEqual({ existing: two[1], placement: { member: "node2", note: "member node3 is not in this cluster: on member node2 (--target-member)" } });
    expect(volumeLanding(one, label, { member: "node3" }, cluster).existing).toBeUndefined();
    expect(volumeLanding(one, label, { member: "node3" }, cluster).placement.member).toBe("node1");
  });

  it("onto a single server, the one volume of its name, whatever member it was on", () => {
    const here = [{ users: users("a"), location: "none" }];
    expect(volumeLanding(here, label, { member: "node2" }, single)).toEqual({ existing: here[0], placement: {} });
    expect(volumeLanding([], label, { member: "node2" }, single).placement.note).toBe("it was on member node2 of a cluster; this server is not one: members are ignored");
  });

  it("a volume without a member (a remote pool's, a single server's) replaces the one of its name wherever it is; on two members it is refused", () => {
    expect(volumeLanding(one, label, {}, cluster)).toEqual({ existing: one[0], placement: { member: "node2", note: "on member node2, where it is" } });
    expect(volumeLanding([{ users: [], location: "none" }], label, {}, cluster).placement).toEqual({});
    expect(() => volumeLanding(two, label, {}, cluster)).toThrow(UsageError);
    expect(() => volumeLanding(two, label, {}, cluster)).toThrow(/members node1 and node2 each have a volume default\/local\/v, and the backup does not say which member it was on: .*nothing was changed/);
  });
});
