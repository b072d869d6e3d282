// Where in a cluster a restored instance or volume goes (pure): back to the member it was backed
// up on if the cluster still has it, else --target-member, else the member this tool talks to;
// a replacement goes where the item is now. On a server that is not a cluster, members are ignored.

import { UsageError } from "../errors";
import type { Manifest } from "./manifest";

export interface ClusterInfo {
  clustered: boolean;
  /** The member this tool talks to (its socket's): where Incus puts an uploaded instance. */
  connected?: string;
  members: string[];
}

export interface Placement {
  /** The member it goes to; undefined: not a cluster. */
  member?: string;
  /** What the plan says about it, if anything. */
  note?: string;
}

/** --target-member must name a member of this cluster. */
export function checkTargetMember(cluster: ClusterInfo, member: string | undefined): void {
  if (member === undefined) return;
  if (!cluster.clustered) throw new UsageError(`--target-member ${member}: this server is not a cluster`);
  if (!cluster.members.includes(member)) throw new UsageError(`--target-member ${member}: not a member of this cluster (members: ${cluster.members.join(", ")})`);
}

/** A new instance or volume. */
export function placeNew(m: Pick<Manifest, "member">, cluster: ClusterInfo, targetMember: string | undefined): Placement {
  const recorded = m.member;
  if (!cluster.clustered) return recorded === undefined ? {} : { note: `it was on member ${recorded} of a cluster; this server is not one: members are ignored` };
  if (recorded !== undefined && cluster.members.includes(recorded)) return { member: recorded, note: `on member ${recorded}, where it was backed up` };
  if (targetMember !== undefined) {
    return { member: targetMember, note: recorded === undefined ? `on member ${targetMember} (--target-member)` : `member ${recorded} is not in this cluster: on member ${targetMember} (--target-member)` };
  }
  const here = cluster.connected;
  return { ...(here === undefined ? {} : { member: here }), note: recorded === undefined ? `on member ${here ?? "?"}, the one this tool talks to` : `member ${recorded} is not in this cluster: on member ${here ?? "?"}, the one this tool talks to (or give --target-member)` };
}

/** A replacement: where the existing instance or volume is. */
export function placeReplacement(location: string | undefined, cluster: ClusterInfo): Placement {
  if (!cluster.clustered || location === undefined || location === "" || location === "none") return {};
  return { member: location, note: `on member ${location}, where it is` };
}
