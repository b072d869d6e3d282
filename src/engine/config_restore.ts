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
async function createOrUpdate(c: IncusClient, rec: EntityRecord, body: Record<string, unknown>): Promise<void> {
  const d = descriptor(rec.kind);
  try {
    await createEntity(c, d, rec, body);
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

export interface ConfigResult {
  applied: number;
  failed: Array<{ label: string; error: string }>;
}

/** Applies creates and updates in dependency order; one failure does not stop the rest. */
export async function applyConfigPlan(c: IncusClient, plan: ConfigPlan, reporter: Reporter, signal: AbortSignal): Promise<ConfigResult> {
  const result: ConfigResult = { applied: 0, failed: [] };
  for (const a of plan.actions) {
    if (signal.aborted) break;
    if (a.action === "conflict") continue;
    const label = entityLabel(a.rec);
    try {
      if (a.action === "create") await createOrUpdate(c, a.rec, a.body);
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
