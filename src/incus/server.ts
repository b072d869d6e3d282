// The server itself: its configuration and the SQL dumps of its databases.

import type { IncusClient, ServerInfo } from "./client";
import type { Signal } from "./instances";

export function getServer(c: IncusClient, opts: Signal = {}): Promise<ServerInfo> {
  return c.get<ServerInfo>("/1.0", "Get server", opts);
}

/** Replaces the server configuration (PUT /1.0 takes the whole config map). */
export async function updateServer(c: IncusClient, config: Record<string, unknown>, opts: Signal = {}): Promise<void> {
  await c.sync("PUT", "/1.0", "Update server configuration", { body: { config }, ...opts });
}

/** The SQL text dump of the "global" (cluster) or "local" (node) database. */
export async function getDatabaseDump(c: IncusClient, database: "global" | "local", opts: Signal = {}): Promise<string> {
  const r = await c.get<{ text: string }>("/internal/sql", `Dump the ${database} database`, { query: { database }, ...opts });
  return r.text;
}
