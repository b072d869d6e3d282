// Restore journals: the state of a replace in progress, so a restore that died can be finished or undone.

import { readdir, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { fsError } from "./repository";
import { mkdirPrivate, writeFileAtomic } from "./files";
import { JOURNAL_DIR } from "./layout";

export interface JournalInstanceRef {
  project: string;
  name: string;
}

/**
 * A replace in progress. Phases, in order:
 * - instance: "import" (temp instance being created; original untouched) → "swap" (original
 *   being stopped and renamed aside, temp renamed into place) → "finish" (start, delete the old one);
 * - volume: "import" (temp volume being created) → "stop" (users being stopped) → "refresh"
 *   (original's contents being replaced from the temp) → "finish" (start users, delete the temp).
 */
export interface JournalEntry {
  id: string;
  kind: "instance" | "volume";
  project: string;
  pool?: string;
  name: string;
  /** The imported copy, under a temporary name. */
  temp: string;
  /** Instance only: the name the original is moved to during the swap. */
  aside?: string;
  phase: "import" | "swap" | "stop" | "refresh" | "finish";
  /** Instance only: whether the original was running. */
  wasRunning?: boolean;
  /** Volume only: instances that must be stopped while the contents are replaced. */
  stop?: JournalInstanceRef[];
  /** Instances to start again at the end. */
  restart: JournalInstanceRef[];
  started: string;
}

export class Journal {
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
      try {
        const e = JSON.parse(await readFile(path, "utf8")) as JournalEntry;
        if (typeof e.id !== "string" || typeof e.temp !== "string" || typeof e.name !== "string") throw new Error("bad fields");
        entries.push(e);
      } catch {
        problems.push(`${path} is unreadable; check by hand, then delete it`);
      }
    }
    return { entries, problems };
  }
}
