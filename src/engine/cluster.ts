// The server as a cluster: its members, and the one this tool talks to.

import type { ClusterInfo } from "../core/placement";
import { errorMessage } from "../errors";
import type { IncusClient } from "../incus/client";

/** Whether the server is a cluster, its members, and which one this tool talks to. */
export async function clusterInfo(c: IncusClient, signal?: AbortSignal): Promise<ClusterInfo> {
  const server = await c.server(signal);
  if (server.environment?.server_clustered !== true) return { clustered: false, members: [] };
  const urls = await c.list<string>("/1.0/cluster/members", "List cluster members", signal === undefined ? {} : { signal });
  const members = urls.map((u) => decodeURIComponent(u.split("?")[0]!.split("/").pop() ?? "")).filter(Boolean);
  return { clustered: true, members, ...(server.environment.server_name === undefined ? {} : { connected: server.environment.server_name }) };
}

/** One member as its own local database knows it: its cluster record and its server configuration. */
export interface MemberRecord {
  name: string;
  /** GET /1.0/cluster/members/NAME: address, roles, groups, failure domain, member config. */
  member?: Record<string, unknown>;
  /** GET /1.0?target=NAME: the configuration as that member has it, its member-only keys included. */
  config?: Record<string, unknown>;
  /** Why it could not be read (a member that is down). */
  error?: string;
}

/**
 * Every member's own part of the configuration, for the database item (members.json): what each
 * member's local database holds that can be read through one member's API. Incus dumps only the
 * local database of the member it is asked on, so the SQL dump of the others cannot be had. With
 * the one member's local.sql it is all they hold: their other tables (certificates, raft_nodes,
 * patches) have the same rows on every member (test/integration/cluster.test.ts compares).
 * Undefined outside a cluster. A member that cannot be read is recorded with the reason.
 */
export async function memberRecords(c: IncusClient, signal?: AbortSignal): Promise<MemberRecord[] | undefined> {
  const info = await clusterInfo(c, signal);
  if (!info.clustered) return undefined;
  const opts = signal === undefined ? {} : { signal };
  const out: MemberRecord[] = [];
  for (const name of info.members) {
    try {
      const member = await c.get<Record<string, unknown>>(`/1.0/cluster/members/${encodeURIComponent(name)}`, `Get cluster member ${name}`, opts);
      const server = await c.get<{ config?: Record<string, unknown> }>("/1.0", `Get the configuration of member ${name}`, { query: { target: name }, ...opts });
      out.push({ name, member, config: server.config ?? {} });
    } catch (err) {
      if (signal?.aborted) throw err;
      out.push({ name, error: errorMessage(err) });
    }
  }
  return out;
}
