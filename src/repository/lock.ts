// The exclusive repository lock: a file naming its holder, refreshed while held, taken over when stale.

import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { join } from "node:path";
import { link, readdir, readFile, rename, rm, stat, unlink } from "node:fs/promises";
import { LockedError, LockLostError } from "../errors";
import { envInstallId, processStart, selfIdentity } from "../local/identity";
import { writeFileAtomic, writeFileDurable } from "./files";
import { LOCK_FILE } from "./layout";
import { fsError } from "./files";
import type { HeldLock, LockInfo, LockOptions } from "./store";

export type { LockInfo } from "./store";

/** A lock not refreshed for this long is stale even if its host cannot be checked. */
export const STALE_AFTER_MS = 10 * 60_000;
const REFRESH_EVERY_MS = 60_000;

export class RepositoryLock implements HeldLock {
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  /** Who holds the lock now, once a refresh or check found it is no longer us. */
  private lostTo: LockInfo | null | undefined;

  private constructor(
    private readonly path: string,
    private info: LockInfo,
  ) {}

  /** Takes the lock on the repository at `root`, or throws LockedError naming the holder. */
  static async acquire(root: string, command: string, options: LockOptions = {}): Promise<RepositoryLock> {
    const now = options.now ?? (() => new Date());
    const path = join(root, LOCK_FILE);
    const t = now().toISOString();
    const install = options.install === undefined ? await envInstallId() : options.install || undefined;
    const info: LockInfo = {
      host: hostname(),
      pid: process.pid,
      ...selfIdentity(install),
      command,
      started: t,
      refreshed: t,
      id: randomBytes(8).toString("hex"),
    };
    const self = { install };
    const deadline = Date.now() + (options.waitMs ?? 0);
    for (;;) {
      if (await tryCreate(root, path, info)) {
        const lock = new RepositoryLock(path, info);
        lock.startRefresh(now);
        await removeLeftovers(root, now(), self);
        return lock;
      }
      const holder = await readLock(path);
      if (holder === undefined) continue; // vanished between our attempt and the read: try again
      const stale = staleReason(holder, now(), self);
      if (stale) {
        options.onMessage?.(`taking over a stale lock: ${describeLock(holder)} (${stale})`);
        await takeAway(root, path);
        continue;
      }
      if (Date.now() >= deadline) {
        throw new LockedError(`repository ${root} is ${describeLock(holder)}`, {
          hint: "Wait for that run to finish. If it is gone for sure (its host is off, say), run `incus-backup unlock --force`.",
        });
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  private startRefresh(now: () => Date): void {
    this.timer = setInterval(() => {
      void this.refresh(now);
    }, REFRESH_EVERY_MS);
    this.timer.unref();
  }

  /** Rewrites the refresh time, unless another run took the lock over (after a long suspend, say). */
  private async refresh(now: () => Date): Promise<void> {
    if (this.lostTo !== undefined) return;
    const holder = await readLock(this.path).catch(() => "unreadable" as const);
    if (holder === "unreadable") return; // the NAS is away for a moment: try at the next refresh
    if (holder?.id !== this.info.id) {
      this.lose(holder);
      return;
    }
    this.info = { ...this.info, refreshed: now().toISOString() };
    await writeFileAtomic(this.path, JSON.stringify(this.info) + "\n").catch(() => undefined);
  }

  private lose(holder: LockInfo | undefined): void {
    this.lostTo = holder ?? null;
    if (this.timer) clearInterval(this.timer);
  }

  /**
   * Throws LockLostError if the lock is no longer ours: another run took it over (it found ours
   * stale: this process was frozen, or the NAS away, for longer than STALE_AFTER_MS) or someone
   * removed it (`unlock --force`). Called before each write that a second writer would spoil.
   */
  async check(): Promise<void> {
    if (this.lostTo === undefined) {
      const holder = await readLock(this.path);
      if (holder?.id !== this.info.id) this.lose(holder);
    }
    if (this.lostTo === undefined) return;
    throw new LockLostError(
      this.lostTo === null
        ? "the repository lock of this run is gone: another run took it over (and has ended), or `unlock --force` removed it, while this one was held up; stopped before writing more"
        : `the repository lock of this run was taken over: the repository is now ${describeLock(this.lostTo)}; stopped before writing more`,
      { hint: "this run was held up for longer than a lock stays valid; what it had finished is kept, run it again for the rest" },
    );
  }

  /** Releases the lock if it is still ours. */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    if (this.timer) clearInterval(this.timer);
    const holder = await readLock(this.path);
    if (holder?.id === this.info.id) await unlink(this.path).catch(() => undefined);
  }
}

async function tryCreate(root: string, path: string, info: LockInfo): Promise<boolean> {
  // Write the full record under a private name, then link it into place: link fails if the lock
  // exists, so creation is atomic and no reader ever sees a half-written lock.
  const tmp = join(root, `.${LOCK_FILE}-${info.id}`);
  try {
    await rm(tmp, { force: true });
    await writeFileDurable(tmp, JSON.stringify(info) + "\n");
  } catch (err) {
    throw fsError("lock repository in", root, err);
  }
  try {
    await link(tmp, path);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === "EEXIST") return false;
    throw fsError("lock repository in", root, err);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/**
 * Removes the files a run killed while taking or refreshing the lock left beside it: candidates
 * (`.lock.json-ID`, and `lock.json.tmp-*` of a refresh) whose writer is gone by the same rule as
 * a stale lock, and stale locks moved aside (`.lock.json-stale-*`) that were not deleted yet.
 * A live run's candidate exists only for the moment between its write and its link, and is kept.
 */
async function removeLeftovers(root: string, now: Date, self: LockSelf): Promise<void> {
  const names = await readdir(root).catch(() => [] as string[]);
  for (const n of names) {
    const path = join(root, n);
    if (n.startsWith(`.${LOCK_FILE}-stale-`)) {
      await rm(path, { force: true }).catch(() => undefined);
    } else if (n.startsWith(`.${LOCK_FILE}-`) || n.startsWith(`${LOCK_FILE}.tmp-`)) {
      const info = await readLock(path).catch(() => undefined);
      if (info && staleReason(info, now, self)) await rm(path, { force: true }).catch(() => undefined);
    }
  }
}

/** Moves a stale lock out of the way; only one of several racing takers succeeds in the rename. */
async function takeAway(root: string, path: string): Promise<void> {
  const aside = join(root, `.${LOCK_FILE}-stale-${randomBytes(6).toString("hex")}`);
  try {
    await rename(path, aside);
    await rm(aside, { force: true });
  } catch (err) {
    if ((err as { code?: string }).code !== "ENOENT") throw fsError("remove stale lock", path, err);
  }
}

export async function readLock(path: string): Promise<LockInfo | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT") return undefined;
    throw fsError("read lock", path, err);
  }
  try {
    const info = JSON.parse(text) as Partial<LockInfo> | null;
    if (isLockInfo(info)) return info;
  } catch {
    // fall through: an unreadable lock is treated as held since its file was last written, so it
    // goes stale in time (a fresh "now" on every read would keep it held forever)
  }
  const since = ((await stat(path).catch(() => undefined))?.mtime ?? new Date()).toISOString();
  return { host: "?", pid: 0, command: "?", started: since, refreshed: since, id: "?" };
}

/** A lock record with every field of the right type (a damaged one is treated as unreadable). */
function isLockInfo(v: Partial<LockInfo> | null): v is LockInfo {
  const time = (t: unknown) => typeof t === "string" && !Number.isNaN(Date.parse(t));
  return (
    typeof v === "object" &&
    v !== null &&
    typeof v.host === "string" &&
    Number.isSafeInteger(v.pid) &&
    typeof v.command === "string" &&
    typeof v.id === "string" &&
    (v.install === undefined || typeof v.install === "string") &&
    (v.start === undefined || typeof v.start === "string") &&
    time(v.started) &&
    time(v.refreshed)
  );
}

/** What a process knows about itself when it judges a lock: its install id, if it has one. */
export interface LockSelf {
  install?: string | undefined;
}

/**
 * Why a lock is stale, or undefined if its holder may still be alive. Its PID is checked only
 * when the lock was taken by this install (same install id): then its process runs on this
 * machine, where a PID that is gone, or now belongs to a process started at another time, means
 * the holder is gone. Any other lock (another host, one of the same name, or a lock written
 * without an install id) goes stale only when it has not been refreshed for STALE_AFTER_MS.
 */
export function staleReason(info: LockInfo, now: Date, self: LockSelf, gone = processGone): string | undefined {
  if (info.install !== undefined && info.install === self.install && info.pid > 0 && gone(info.pid, info.start)) return `process ${info.pid} is gone`;
  const age = now.getTime() - Date.parse(info.refreshed);
  if (Number.isFinite(age) && age > STALE_AFTER_MS) return `not refreshed for ${Math.round(age / 60_000)} min`;
  return undefined;
}

/** Whether the process that was PID (started at `start`, if known) has ended. */
export function processGone(pid: number, start?: string): boolean {
  if (!pidAlive(pid)) return true;
  if (start === undefined) return false;
  const now = processStart(pid);
  return now !== undefined && now !== start;
}

export function describeLock(info: LockInfo): string {
  const since = info.started.replace("T", " ").replace(/\.\d+Z$/, "Z");
  // readLock's stand-in for a lock file it cannot read.
  if (info.id === "?") return `locked by a lock file that cannot be read (written ${since})`;
  const install = info.install === undefined ? "" : ` (install ${info.install.slice(0, 8)})`;
  return `locked by pid ${info.pid} on host ${info.host}${install} since ${since} (${info.command})`;
}

/** Whether a process of this host is alive (EPERM: alive, but not ours). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === "EPERM";
  }
}

/** Removes the lock whoever holds it (the `unlock` command). */
export async function forceUnlock(root: string): Promise<LockInfo | undefined> {
  const path = join(root, LOCK_FILE);
  const info = await readLock(path);
  if (info) await unlink(path).catch(() => undefined);
  return info;
}
