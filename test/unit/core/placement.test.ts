// Where a restored item goes in a cluster: back to its member, --target-member, the member this tool talks to; ignored on a single server.

import { describe, expect, it } from "vitest";
import { checkTargetMember, placeNew, placeReplacement, sameNamedOnMembers, type ClusterInfo } from "../../../src/core/placement";
import { liveVolumeFor } from "../../../src/core/plan";
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

describe("sameNamedOnMembers", () => {
  it("finds a volume name that more than one member has, and only those", () => {
    const got = sameNamedOnMembers([
      { id: "local/v", member: "node2" },
      { id: "local/v", member: "node1" },
      { id: "local/w", member: "node1" },
      { id: "remote/x", member: undefined },
      { id: "remote/x", member: undefined },
    ]);
    expect([...got]).toEqual([["local/v", ["node1", "node2"]]]);
  });
});

describe("liveVolumeFor", () => {
  const key = { kind: "volume" as const, project: "default", pool: "local", name: "v" };
  const users = (name: string) => [{ project: "default", name, running: true }];

  it("a name on one member is found wherever the backup was taken", () => {
    const live = { volumes: new Map([["default/local/v", [{ users: users("a"), location: "node2" }]]]) };
    expect(liveVolumeFor(live, key, "node1")).toEqual({ users: users("a"), location: "node2" });
    expect(liveVolumeFor(live, key, undefined)?.location).toBe("node2");
    expect(liveVolumeFor({ volumes: new Map() }, key, "node1")).toBeUndefined();
  });

  it("a name on two members: the one on the backup's member, with its own users; else refused", () => {
    const live = { volumes: new Map([["default/local/v", [{ users: users("a"), location: "node1" }, { users: users("b"), location: "node2" }]]]) };
    expect(liveVolumeFor(live, key, "node2")).toEqual({ users: users("b"), location: "node2" });
    expect(liveVolumeFor(live, key, "node1")).toEqual({ users: users("a"), location: "node1" });
    expect(() => liveVolumeFor(live, key, "node3")).toThrow(UsageError);
    expect(() => liveVolumeFor(live, key, undefined)).toThrow(/members node1 and node2 each have a volume default\/local\/v, and the backup does not say which member it was on: .*nothing was changed/);
  });
});
