// Judging restic's own locks before clearing them. `restic unlock` removes every lock it thinks
// stale: older than 30 minutes, or of this host name with a PID that does not run here. Every
// deployed container is called `backup`, so on a repository that two hosts share, that second
// rule would remove the other host's live lock. So before an unlock the tool looks at the locks
// itself: one of this host name is ours to clear only if a restic this install started had that
// PID (the children file below) and that process is gone.

import { appendFileSync } from "node:fs";
import { readFile, rename, writeFile } from "node:fs/promises";
import { processStart } from "../../local/identity";
import { processGone } from "../lock";

/** In the state directory: the restic processes this install started (see recordChild). */
export const RESTIC_CHILDREN_FILE = "restic-children";

/** restic's own limit: a lock not refreshed for this long is stale to every restic. */
export const RESTIC_STALE_MS = 30 * 60_000;

/** A lock as `restic cat lock ID` prints it (the fields used here). */
export interface ResticLock {
  time: string;
  exclusive?: boolean;
  hostname: string;
  username?: string;
  pid: number;
}

/** A restic process this install started: its PID and start time. */
export interface Child {
  pid: number;
  start: string;
}

export type LockVerdict = { clear: true; why: string } | { clear: false; why: string };

/**
 * Whether a restic lock may be cleared: restic's own age rule, or one of this host name whose
 * process was a restic of ours and is gone. Anything else (another host's, a live process here,
 * or a same-named host's whose PID means nothing here) stays.
 */
export function judgeResticLock(lock: ResticLock, now: Date, self: { host: string; children: readonly Child[] }, gone = processGone): LockVerdict {
  const age = now.getTime() - Date.parse(lock.time);
  if (Number.isFinite(age) && age > RESTIC_STALE_MS) return { clear: true, why: `not refreshed for ${Math.round(age / 60_000)} min` };
  if (lock.hostname !== self.host) return { clear: false, why: "a restic on another host" };
  const child = self.children.find((c) => c.pid === lock.pid);
  if (child && gone(child.pid, child.start)) return { clear: true, why: `restic ${lock.pid} of this install is gone` };
  if (!gone(lock.pid)) return { clear: false, why: "that process runs" };
  return { clear: false, why: "not a restic this install started, though of this host name: another host of the same name?" };
}

/** Records a restic just started (a failure to record only makes its lock, if it dies, wait the 30 minutes). */
export function recordChild(file: string, pid: number): void {
  const start = processStart(pid);
  if (start === undefined) return;
  try {
    appendFileSync(file, `${pid} ${start}\n`, { mode: 0o600 });
  } catch {
    // the state directory is not writable: see above
  }
}

export async function readChildren(file: string): Promise<Child[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  const out: Child[] = [];
  for (const line of text.split("\n")) {
    const m = /^(\d+) (\d+)$/.exec(line.trim());
    if (m) out.push({ pid: Number(m[1]), start: m[2]! });
  }
  return out;
}

/**
 * Forgets the children that have ended. Only once their locks are known to be gone: after an
 * exclusive restic call went through (no lock was in its way) or after an unlock.
 */
export async function forgetEndedChildren(file: string, gone = processGone): Promise<void> {
  const children = await readChildren(file);
  const live = children.filter((c) => !gone(c.pid, c.start));
  if (live.length === children.length) return;
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, live.map((c) => `${c.pid} ${c.start}\n`).join(""), { mode: 0o600 });
    await rename(tmp, file);
  } catch {
    // kept as it was: it only grows until the next time
  }
}
