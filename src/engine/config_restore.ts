// Restoring the server's configuration from a database version: load it, plan it, apply it.

import { IntegrityError, errorMessage } from "../errors";
import type { IncusClient } from "../incus/client";
import { IncusAlreadyExistsError, IncusNotFoundError } from "../incus/errors";
import { createEntity, updateEntity } from "../incus/entities";
import { descriptor, type EntityRecord } from "../core/entities";
import { updateServer } from "../incus/server";
import type { ConfigPlan } from "../core/config_plan";
import type { Store, StoredVersion } from "../repository/store";
import { DATABASE_FILES, type DatabaseSnapshot } from "./database";
import type { Reporter } from "./reporter";
import { clusterInfo } from "./cluster";

/** Reads config.json of a database version after checking it against the manifest. */
export async function loadSnapshot(store: Store, entry: StoredVersion): Promise<DatabaseSnapshot> {
  const file = entry.manifest.files.find((f) => f.name === DATABASE_FILES.config);
  if (!file) throw new IntegrityError(`${entry.location}: the manifest lists no ${DATABASE_FILES.config}`);
  const where = `${entry.location}/${file.name}`;
  let snap: DatabaseSnapshot;
  try {
    snap = JSON.parse((await store.readSmallFile(entry, file)).toString("utf8")) as DatabaseSnapshot;
  } catch (err) {
    if (err instanceof IntegrityError) throw err;
    throw new IntegrityError(`${where}: ${errorMessage(err)}`);
  }
  if (snap?.format !== 1 || !Array.isArray(snap.entities) || typeof snap.server !== "object") {
    throw new IntegrityError(`${where} is not a configuration export this tool understands`);
  }
  return snap;
}

export function entityLabel(rec: Pick<EntityRecord, "kind" | "project" | "parent" | "id">): string {
  const d = descriptor(rec.kind);
  const where = [rec.project, rec.parent].filter(Boolean).join("/");
  return `${d.label} ${where ? `${where}/` : ""}${rec.id}`;
}

/**
 * Creates an object; if an earlier step made it exist meanwhile (a new project comes with its own
 * default profile), sets its writable fields instead.
 */
async function createOrUpdate(c: IncusClient, rec: EntityRecord, body: Record<string, unknown>, members: string[]): Promise<void> {
  const d = descriptor(rec.kind);
  try {
    if (members.length > 0 && rec.kind in MEMBER_KEYS) await createOnCluster(c, rec, body, members);
    else await createEntity(c, d, rec, body);
  } catch (err) {
    if (!(err instanceof IncusAlreadyExistsError)) throw err;
    const put: Record<string, unknown> = {};
    for (const f of d.writable) if (body[f] !== undefined) put[f] = body[f];
    // "Already exists" can also be about something else (a network interface of that name on the
    // host); if there is no such object to update, the create's own error is the one to tell.
    await updateEntity(c, d, rec, put).catch((updateErr: unknown) => {
      throw updateErr instanceof IncusNotFoundError ? err : updateErr;
    });
  }
}

/**
 * Config keys of networks and storage pools that are per member in a cluster: each member gets
 * them in its own pending create (the values are the backed-up member's; a pool's source and
 * size are that host's, so none is passed on: each member makes its own, as `incus storage create`
 * does on a new server).
 */
const MEMBER_KEYS: Record<string, { keep: readonly string[]; drop: readonly string[] }> = {
  network: { keep: ["bridge.external_interfaces", "parent", "bgp.ipv4.nexthop", "bgp.ipv6.nexthop"], drop: [] },
  "storage-pool": { keep: [], drop: ["source", "size", "zfs.pool_name", "lvm.vg_name", "lvm.thinpool_name", "volatile.initial_source"] },
};

/**
 * In a cluster, a network or a storage pool is made in two steps: a pending create on every
 * member (`?target=`, with the member-specific keys), then the create that sets it up everywhere.
 */
async function createOnCluster(c: IncusClient, rec: EntityRecord, body: Record<string, unknown>, members: string[]): Promise<void> {
  const d = descriptor(rec.kind);
  const keys = MEMBER_KEYS[rec.kind]!;
  const config = (body.config ?? {}) as Record<string, string>;
  const own = Object.fromEntries(Object.entries(config).filter(([k]) => keys.keep.includes(k)));
  const global = Object.fromEntries(Object.entries(config).filter(([k]) => !keys.keep.includes(k) && !keys.drop.includes(k)));
  const kind = Object.fromEntries(Object.entries(body).filter(([k]) => k === "name" || k === "type" || k === "driver"));
  for (const m of members) {
    await c.sync("POST", d.collection(rec.parent), `Create ${d.label} ${rec.id} on member ${m}`, {
      query: { ...(d.projectScoped ? { project: rec.project } : {}), target: m },
      body: { ...kind, config: own },
    });
  }
  await createEntity(c, d, rec, { ...body, config: global });
}

export interface ConfigResult {
  applied: number;
  failed: Array<{ label: string; error: string }>;
}

/** Applies creates and updates in dependency order; one failure does not stop the rest. */
export async function applyConfigPlan(c: IncusClient, plan: ConfigPlan, reporter: Reporter, signal: AbortSignal): Promise<ConfigResult> {
  const result: ConfigResult = { applied: 0, failed: [] };
  const { members } = await clusterInfo(c, signal);
  for (const a of plan.actions) {
    if (signal.aborted) break;
    if (a.action === "conflict") continue;
    const label = entityLabel(a.rec);
    try {
      if (a.action === "create") await createOrUpdate(c, a.rec, a.body, members);
      else await updateEntity(c, descriptor(a.rec.kind), a.rec, a.body);
      result.applied++;
      reporter.info(`${a.action === "create" ? "created" : "updated"} ${label}`);
    } catch (err) {
      result.failed.push({ label, error: errorMessage(err) });
      reporter.warn(`could not ${a.action} ${label}: ${errorMessage(err)}`);
    }
  }
  if (plan.server && !signal.aborted) {
    try {
      await updateServer(c, plan.server.body);
      result.applied++;
      reporter.info("updated the server configuration");
    } catch (err) {
      result.failed.push({ label: "server configuration", error: errorMessage(err) });
    }
  }
  return result;
}
