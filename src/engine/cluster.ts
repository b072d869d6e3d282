// The server as a cluster: its members, and the one this tool talks to.

import type { ClusterInfo } from "../core/placement";
import type { IncusClient } from "../incus/client";

/** Whether the server is a cluster, its members, and which one this tool talks to. */
export async function clusterInfo(c: IncusClient, signal?: AbortSignal): Promise<ClusterInfo> {
  const server = await c.server(signal);
  if (server.environment?.server_clustered !== true) return { clustered: false, members: [] };
  const urls = await c.list<string>("/1.0/cluster/members", "List cluster members", signal === undefined ? {} : { signal });
  const members = urls.map((u) => decodeURIComponent(u.split("?")[0]!.split("/").pop() ?? "")).filter(Boolean);
  return { clustered: true, members, ...(server.environment.server_name === undefined ? {} : { connected: server.environment.server_name }) };
}
