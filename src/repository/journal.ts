// Restore journals: the state of a replace in progress, so a restore that died can be finished or undone.

import { readdir, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { fsError } from "./files";
import { mkdirPrivate, writeFileAtomic } from "./files";
import { JOURNAL_DIR } from "./layout";
import { safePathComponent } from "../core/names";
import { INERT_KEYS, type SavedIdentity } from "../core/nics";
import { DRILL_COPY_NAME, DRILL_PROJECT } from "../core/drill";
import type { JournalEntry, JournalInstanceRef, JournalStore } from "./store";

export type { JournalEntry, JournalInstanceRef } from "./store";

export class Journal implements JournalStore {
  private readonly dir: string;

  constructor(root: string) {
    this.dir = join(root, JOURNAL_DIR);
  }

  async write(entry: JournalEntry): Promise<void> {
    const path = join(this.dir, `${entry.id}.json`);
    try {
      await mkdirPrivate(this.dir);
      await writeFileAtomic(path, JSON.stringify(entry, null, 2) + "\n");
    } catch (err) {
      throw fsError("write restore journal", path, err);
    }
  }

  async remove(id: string): Promise<void> {
    await unlink(join(this.dir, `${id}.json`)).catch(() => undefined);
  }

  /** Unfinished entries; unreadable files are returned as problems so the user hears of them. */
  async list(): Promise<{ entries: JournalEntry[]; problems: string[] }> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => n.endsWith(".json"));
    } catch {
      return { entries: [], problems: [] };
    }
    const entries: JournalEntry[] = [];
    const problems: string[] = [];
    for (const n of names.sort()) {
      const path = join(this.dir, n);
      let e: unknown;
      try {
        e = JSON.parse(await readFile(path, "utf8"));
      } catch {
        problems.push(`${path} is unreadable; check by hand, then delete it`);
        continue;
      }
      const problem = entryProblem(e, n.slice(0, -".json".length));
      if (problem) problems.push(`${path} is damaged (${problem}); nothing was done with it: check by hand, then delete it`);
      else entries.push(e as JournalEntry);
    }
    return { entries, problems };
  }
}

const PHASES: Record<JournalEntry["kind"], readonly JournalEntry["phase"][]> = {
  instance: ["import", "swap", "finish", "undo"],
  volume: ["import", "stop", "refresh", "finish"],
  stopped: ["stopped"],
  drill: ["drill"],
  move: ["move"],
};

/**
 * Why an entry cannot be acted on, or undefined. Recovery deletes the entry's temporary names
 * and renames instances, so only names this tool makes (ibk-restore-*, ibk-old-*) are accepted
 * there: a damaged or hand-edited journal must never make it delete a real instance or volume.
 */
export function entryProblem(v: unknown, id: string): string | undefined {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return "not a JSON object";
  const e = v as Record<string, unknown>;
  const safe = (x: unknown) => typeof x === "string" && safePathComponent(x) === undefined;
  const refs = (x: unknown) => Array.isArray(x) && x.every((r) => typeof r === "object" && r !== null && safe((r as JournalInstanceRef).project) && safe((r as JournalInstanceRef).name));
  if (e.id !== id || !/^[0-9a-f]{1,64}$/.test(id)) return "its id does not match its file name";
  if (e.kind !== "instance" && e.kind !== "volume" && e.kind !== "stopped" && e.kind !== "drill" && e.kind !== "move") return "unknown kind";
  if (!PHASES[e.kind].includes(e.phase as JournalEntry["phase"])) return "unknown phase";
  if (e.member !== undefined && !safe(e.member)) return "bad member";
  if (e.kind === "drill") return drillProblem(e, safe);
  if (e.kind === "move") return moveProblem(e, safe);
  if (!safe(e.project) || !safe(e.name) || (e.kind === "volume" && !safe(e.pool))) return "bad project, pool or name";
  if (typeof e.temp !== "string" || !(e.kind === "stopped" ? e.temp === "" : /^ibk-restore-[0-9a-f]{8}$/.test(e.temp))) {
    return "its temporary name is not one this tool makes";
  }
  if (e.kind === "instance" && (typeof e.aside !== "string" || !/^ibk-old-[0-9a-f]{8}$/.test(e.aside))) return "its name for the original is not one this tool makes";
  if (!refs(e.restart) || (e.stop !== undefined && !refs(e.stop))) return "bad list of instances to stop or start";
  if (e.wasRunning !== undefined && typeof e.wasRunning !== "boolean") return "bad wasRunning";
  if (e.original !== undefined && !isSavedIdentity(e.original)) return "bad record of the original's devices";
  return undefined;
}

function isSavedIdentity(v: unknown): v is SavedIdentity {
  const o = v as Partial<Record<keyof SavedIdentity, unknown>> | null;
  const strings = (x: unknown) => typeof x === "object" && x !== null && !Array.isArray(x) && Object.values(x).every((y) => typeof y === "string");
  return (
    typeof o === "object" &&
    o !== null &&
    typeof o.devices === "object" &&
    o.devices !== null &&
    !Array.isArray(o.devices) &&
    Object.values(o.devices).every(strings) &&
    strings(o.hwaddr) &&
    Object.keys(o.hwaddr as object).every((k) => /^volatile\.[^.]+\.hwaddr$/.test(k)) &&
    typeof o.config === "object" &&
    o.config !== null &&
    !Array.isArray(o.config) &&
    Object.entries(o.config).every(([k, v]) => k in INERT_KEYS && (v === null || typeof v === "string"))
  );
}

/**
 * A move's entry: recovery moves the instance it names (if it is still on the member it was
 * imported on) and deletes only volumes that are marked as stand-ins and attached to nothing.
 */
function moveProblem(e: Record<string, unknown>, safe: (x: unknown) => boolean): string | undefined {
  if (!safe(e.project) || !safe(e.name) || !safe(e.member)) return "bad project, name or member";
  if (e.temp !== "") return "a move has no temporary name";
  const m = e.move as Record<string, unknown> | undefined;
  if (typeof m !== "object" || m === null || !safe(m.from) || m.from === e.member) return "bad move record";
  const si = m.standIns;
  if (!Array.isArray(si) || !si.every((p) => typeof p === "object" && p !== null && safe((p as { pool?: unknown }).pool) && safe((p as { name?: unknown }).name))) {
    return "bad list of stand-in volumes";
  }
  if (!Array.isArray(e.restart) || e.restart.length !== 0) return "a move starts nothing";
  return undefined;
}

/** A drill's entry may only ever name things in the scratch project, under names drills make. */
function drillProblem(e: Record<string, unknown>, safe: (x: unknown) => boolean): string | undefined {
  if (e.project !== DRILL_PROJECT) return `a drill entry outside the ${DRILL_PROJECT} project`;
  if (typeof e.temp !== "string" || !DRILL_COPY_NAME.test(e.temp)) return "its copy's name is not one this tool makes";
  if (!safe(e.name) || (e.pool !== undefined && !safe(e.pool))) return "bad pool or name";
  const d = e.drill as Record<string, unknown> | undefined;
  if (typeof d !== "object" || d === null || (d.of !== "instance" && d.of !== "volume")) return "bad drill record";
  if (d.of === "volume" && !safe(e.pool)) return "a volume drill without its pool";
  const ph = d.placeholders;
  if (!Array.isArray(ph) || !ph.every((p) => typeof p === "object" && p !== null && safe((p as { pool?: unknown }).pool) && safe((p as { name?: unknown }).name))) {
    return "bad list of stand-in volumes";
  }
  if (!Array.isArray(e.restart) || e.restart.length !== 0) return "a drill starts nothing again";
  return undefined;
}
