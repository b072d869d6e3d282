// Taking a drill copy away: the copy (instance or volume) and the stand-in volumes its import
// needed, all in the scratch project. Used at the end of each drill and by recovery after a drill
// that died (its journal entry names what it made).

import { DRILL_COPY_NAME, DRILL_PROJECT } from "../core/drill";
import type { IncusClient } from "../incus/client";
import { IncusNotFoundError } from "../incus/errors";
import { deleteInstance, getInstance, updateInstanceState } from "../incus/instances";
import { deleteStoragePoolVolume, getStoragePoolVolume } from "../incus/storage_volumes";
import type { JournalEntry } from "../repository/store";

const gone = (err: unknown) => {
  if (err instanceof IncusNotFoundError) return undefined;
  throw err;
};

/** Deletes what a drill made; what is already gone is fine. Returns what it deleted. */
export async function removeDrillCopy(c: IncusClient, e: Pick<JournalEntry, "project" | "temp" | "pool" | "drill">): Promise<string[]> {
  // Never anything outside the scratch project, nor under a name drills do not make.
  if (e.project !== DRILL_PROJECT || !DRILL_COPY_NAME.test(e.temp)) throw new Error(`refusing to remove ${e.project}/${e.temp}: not a drill copy`);
  const done: string[] = [];
  if (e.drill?.of === "volume") {
    if (await getStoragePoolVolume(c, DRILL_PROJECT, e.pool ?? "", e.temp).catch(gone)) {
      await deleteStoragePoolVolume(c, DRILL_PROJECT, e.pool ?? "", e.temp).catch(gone);
      done.push(`volume ${e.pool}/${e.temp}`);
    }
  } else {
    const inst = await getInstance(c, DRILL_PROJECT, e.temp).catch(gone);
    if (inst) {
      if (inst.status !== "Stopped") await updateInstanceState(c, DRILL_PROJECT, e.temp, { action: "stop", force: true }).catch(gone);
      await deleteInstance(c, DRILL_PROJECT, e.temp).catch(gone);
      done.push(`instance ${e.temp}`);
    }
  }
  done.push(...(await removePlaceholders(c, e.drill?.placeholders ?? [])));
  return done;
}

/** Deletes the stand-in volumes a drill made for its import: only those marked as stand-ins and attached to nothing. */
export async function removePlaceholders(c: IncusClient, placeholders: ReadonlyArray<{ pool: string; name: string }>): Promise<string[]> {
  const done: string[] = [];
  for (const p of placeholders) {
    const v = await getStoragePoolVolume(c, DRILL_PROJECT, p.pool, p.name).catch(gone);
    // A stand-in is empty and attached to nothing once the copy is gone; anything else is not ours to delete.
    if (!v || (v.used_by ?? []).length > 0 || v.config?.["user.incus-backup.drill-placeholder"] !== "true") continue;
    await deleteStoragePoolVolume(c, DRILL_PROJECT, p.pool, p.name).catch(gone);
    done.push(`stand-in volume ${p.pool}/${p.name}`);
  }
  return done;
}
