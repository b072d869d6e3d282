// The server's configuration ("database"): export it declaratively, with the SQL dumps beside it.

import type { IncusClient } from "../incus/client";
import { IncusError } from "../incus/errors";
import { getEntities } from "../incus/entities";
import { ENTITIES, type EntityDescriptor, type EntityRecord } from "../core/entities";
import { getDatabaseDump, getServer } from "../incus/server";

/** The declarative export restore works from (config.json in a database version). */
export interface DatabaseSnapshot {
  format: 1;
  server: { config: Record<string, unknown>; version?: string; name?: string };
  entities: EntityRecord[];
}

export const DATABASE_FILES = { config: "config.json", global: "global.sql", local: "local.sql", members: "members.json" } as const;

/**
 * Reads every project, storage pool, managed network (with ACLs, zones and their records,
 * forwards, load balancers, peers) and profile. A project only has its own networks, zones or
 * profiles when the matching `features.*` is on; otherwise it uses the default project's, which
 * are read once, there.
 */
export async function exportDatabase(c: IncusClient, signal?: AbortSignal): Promise<DatabaseSnapshot> {
  const server = await getServer(c, signal === undefined ? {} : { signal });
  const entities: EntityRecord[] = [];
  const byKind = (k: string) => ENTITIES.find((d) => d.kind === k)!;

  const projects = await getEntities(c, byKind("project"), "", undefined, signal);
  for (const p of projects) entities.push(record(byKind("project"), "", p));
  for (const p of await getEntities(c, byKind("storage-pool"), "", undefined, signal)) entities.push(record(byKind("storage-pool"), "", p));

  for (const p of projects) {
    const project = String(p.name);
    const config = (p.config ?? {}) as Record<string, string>;
    for (const d of ENTITIES) {
      if (!d.projectScoped || d.parent) continue;
      if (project !== "default" && d.feature && config[d.feature] !== "true") continue;
      const list = await getEntities(c, d, project, undefined, signal);
      for (const o of list) {
        if (d.kind === "network" && o.managed !== true) continue;
        entities.push(record(d, project, o));
        for (const child of ENTITIES.filter((x) => x.parent === d.kind)) {
          for (const co of await listChildren(c, child, project, String(o[d.idField]), signal)) {
            entities.push(record(child, project, co, String(o[d.idField])));
          }
        }
      }
    }
  }
  return {
    format: 1,
    server: {
      config: server.config ?? {},
      ...(server.environment?.server_version === undefined ? {} : { version: server.environment.server_version }),
      ...(server.environment?.server_name === undefined ? {} : { name: server.environment.server_name }),
    },
    entities,
  };
}

/** Sub-objects a network type does not support (load balancers and peers on a bridge) count as none. */
async function listChildren(c: IncusClient, d: EntityDescriptor, project: string, parent: string, signal?: AbortSignal) {
  try {
    return await getEntities(c, d, project, parent, signal);
  } catch (err) {
    if (err instanceof IncusError && /not supported|doesn't support|does not support|not implemented/i.test(err.serverMessage)) return [];
    throw err;
  }
}

function record(d: EntityDescriptor, project: string, o: Record<string, unknown>, parent?: string): EntityRecord {
  return {
    kind: d.kind,
    project: d.projectScoped ? project : "",
    ...(parent === undefined ? {} : { parent }),
    id: String(o[d.idField]),
    object: o,
  };
}

export async function databaseDumps(c: IncusClient, signal?: AbortSignal): Promise<{ global: string; local: string }> {
  const opts = signal === undefined ? {} : { signal };
  return { global: await getDatabaseDump(c, "global", opts), local: await getDatabaseDump(c, "local", opts) };
}
