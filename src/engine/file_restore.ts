// Restoring single files and trees from a backup of an instance or volume: into the running
// instance (through Incus's file API) or into a directory.
//
// Nothing on the target is touched before the files are out of the archive and checked: the
// entries asked for are first staged (read from the archive as it streams, the data written to a
// staging directory), then compared with what is on the target now, then the plan is shown and,
// if anything existing would be replaced, confirmed; only then are they written.

import type { Readable } from "node:stream";
import { AppError, ExitCode, NotFoundError } from "../errors";
import { itemLabel } from "../core/selection";
import type { Store } from "../repository/store";
import { walkArchive } from "./archive_walk";
import { CatalogWriter, readCatalog, within, type CatalogEntry, type CatalogHeader } from "./catalog";
import { keepCatalog, type FilesSource } from "./files";
import type { Reporter } from "./reporter";

/** Where staged data is kept until it is written (a directory of this machine: src/local/staging.ts). */
export interface Stage {
  /** Keeps a file's data; `ref` names it for open() and the target. */
  put(name: string, data: Readable): Promise<{ ref: string; sha256: string }>;
  open(ref: string): Readable;
}

/** An entry to restore, with where its data was staged. */
export interface RestoreEntry extends CatalogEntry {
  /** A directory above a requested path: created if missing, never changed. */
  ancestor: boolean;
  /** The staged data of a file (or of a hard link's target). */
  staged?: string;
  sha256?: string;
}

/** What is at a path on the target now. */
export interface Existing {
  type: "file" | "dir" | "symlink" | "other";
  mode: number;
  uid: number;
  gid: number;
  link?: string;
}

/** Where restored files go: a running instance, a volume through an instance, or a directory. */
export interface FileTarget {
  /** "the running instance default/web", "directory /tmp/x". */
  readonly label: string;
  /** The path on the target where a path of the item lands, for messages. */
  where(path: string): string;
  stat(path: string): Promise<Existing | undefined>;
  /** Whether the file at path holds exactly this data. */
  sameData(path: string, sha256: string): Promise<boolean>;
  /** Removes a file or symlink (never a directory). */
  remove(path: string): Promise<void>;
  mkdir(e: RestoreEntry): Promise<void>;
  writeFile(e: RestoreEntry, data: string): Promise<void>;
  symlink(e: RestoreEntry): Promise<void>;
  /** A hard link to another restored path; false if the target cannot make one (a copy is written instead). */
  hardlink(e: RestoreEntry, to: string): Promise<boolean>;
  /** After all entries: set what must come last (directories' modes and times). */
  finish(): Promise<void>;
}

export type FileAction = "create" | "replace" | "same" | "keep" | "skip";

export interface FileStep {
  entry: RestoreEntry;
  action: FileAction;
  /** Why it is replaced, kept or skipped. */
  why?: string;
}

export class FileConflictError extends AppError {
  constructor(message: string, hint: string) {
    super(message, ExitCode.Failure, { hint });
  }
}

/** Entries of one snapshot that a restore of `paths` needs: the paths' trees and the directories above them. */
export function wants(paths: readonly string[], snapshot: string): (e: CatalogEntry) => "entry" | "ancestor" | undefined {
  return (e) => {
    if (e.snapshot !== snapshot) return undefined;
    if (paths.some((p) => within(e.path, p))) return "entry";
    if (e.type === "dir" && paths.some((p) => within(p, e.path) && p !== e.path)) return "ancestor";
    return undefined;
  };
}

export interface Staged {
  entries: RestoreEntry[];
  /** Whether the archive was read to its end. */
  complete: boolean;
  header: CatalogHeader;
}

/**
 * Reads the entries of `paths` (in `snapshot`) out of the archive into `stage`. With a kept
 * catalog, the paths are checked before anything is read, and the walk stops after the last entry
 * needed; without one, the whole archive is read once and the catalog kept as well.
 */
export async function stageFiles(
  store: Store,
  src: FilesSource,
  paths: readonly string[],
  snapshot: string,
  stage: Stage,
  o: { reporter: Reporter; signal?: AbortSignal },
): Promise<Staged> {
  const want = wants(paths, snapshot);
  const label = `${itemLabel(src.version.manifest)} version ${src.version.manifest.version}`;
  let header: CatalogHeader | undefined;
  let stopAfter: number | undefined;
  const kept = await store.readCatalog(src.version, src.file);
  if (kept) {
    let i = 0;
    let last = -1;
    const found = new Set<string>();
    header = await readCatalog(kept, src.file.name, src.file.sha256, (e) => {
      const w = want(e);
      if (w) last = i;
      if (w === "entry") for (const p of paths) if (e.path === p) found.add(p);
      i++;
    });
    if (header) {
      checkFound(header, paths, found, snapshot, label);
      stopAfter = last + 1;
    } else o.reporter.warn(`the file catalog of ${label} is damaged or stale: reading the archive again`);
  }

  const writer = header ? undefined : new CatalogWriter();
  const entries: RestoreEntry[] = [];
  const byIndex = new Map<number, RestoreEntry>();
  const found = new Set<string>();
  const { complete } = await walkArchive(
    store,
    src,
    {
      entry: (e, i) => {
        writer?.add(e);
        const w = want(e);
        if (!w) return false;
        const r: RestoreEntry = { ...e, ancestor: w === "ancestor" };
        entries.push(r);
        byIndex.set(i, r);
        if (w === "entry") for (const p of paths) if (e.path === p) found.add(p);
        return w === "entry";
      },
      data: async (_e, i, stream) => {
        const r = byIndex.get(i)!;
        const kept = await stage.put(String(i), stream);
        r.staged = kept.ref;
        r.sha256 = kept.sha256;
      },
      ...(stopAfter === undefined ? {} : { stopAfter }),
    },
    { ...o, step: `reading ${paths.join(", ")} from the archive` },
  );
  if (writer) {
    header = (await keepCatalog(store, src, writer, o.reporter)).header;
    checkFound(header, paths, found, snapshot, label);
  }
  // A hard link's data is its target's: stage it under the link too, if the target came along.
  const byPath = new Map(entries.filter((e) => e.type === "file").map((e) => [e.path, e]));
  for (const e of entries) {
    if (e.type !== "hardlink" || e.link === undefined) continue;
    const to = byPath.get(e.link);
    if (to?.staged !== undefined) {
      e.staged = to.staged;
      e.sha256 = to.sha256!;
      e.size = to.size;
    }
  }
  return { entries, complete, header: header! };
}

function checkFound(header: CatalogHeader, paths: readonly string[], found: Set<string>, snapshot: string, label: string): void {
  if (snapshot && !header.snapshots.includes(snapshot)) {
    throw new NotFoundError(`${label} holds no snapshot ${JSON.stringify(snapshot)}; ${header.snapshots.length ? `it holds: ${header.snapshots.join(", ")}` : "it was made without --snapshots"}`);
  }
  const missing = paths.filter((p) => !found.has(p));
  if (missing.length > 0) {
    throw new NotFoundError(`${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} not in ${label}${snapshot ? ` (snapshot ${snapshot})` : ""}; nothing was changed`, {
      hint: "see what is there with `incus-backup files`",
    });
  }
}

const typeOf = (e: CatalogEntry): Existing["type"] | "skip" =>
  e.type === "dir" ? "dir" : e.type === "file" || e.type === "hardlink" ? "file" : e.type === "symlink" ? "symlink" : "skip";

/**
 * What restoring each entry does to the target: create what is missing, leave what is already as in
 * the backup, replace what differs. A directory is never replaced by a file (nor the reverse with
 * data in it): that refuses the whole restore before anything is written.
 */
export async function planFiles(target: FileTarget, entries: readonly RestoreEntry[], progress?: (entries: number, of: number) => void): Promise<FileStep[]> {
  const steps: FileStep[] = [];
  let seen = 0;
  for (const e of entries) {
    progress?.(seen++, entries.length);
    const want = typeOf(e);
    if (want === "skip") {
      steps.push({ entry: e, action: "skip", why: `a ${e.type === "fifo" ? "FIFO" : "device node"}: not restored file by file` });
      continue;
    }
    if (e.type === "hardlink" && e.staged === undefined) {
      steps.push({ entry: e, action: "skip", why: `a hard link to ${e.link ?? "?"}, which is not among the paths restored: restore that path too` });
      continue;
    }
    const now = await target.stat(e.path);
    if (!now) {
      steps.push({ entry: e, action: "create" });
      continue;
    }
    if (e.ancestor) {
      if (now.type !== "dir") {
        throw new FileConflictError(`${target.where(e.path)} is a ${now.type}, and the backup has a directory there; nothing was changed`, "move it away first, or restore into a directory with --to");
      }
      continue;
    }
    if (want === "dir") {
      if (now.type === "dir") {
        const same = now.mode === e.mode && now.uid === e.uid && now.gid === e.gid;
        steps.push(same ? { entry: e, action: "same" } : { entry: e, action: "keep", why: `the directory exists: its owner and mode stay as they are (${ownerMode(now)}; in the backup ${ownerMode(e)})` });
      } else steps.push({ entry: e, action: "replace", why: `a ${now.type} now; a directory in the backup` });
      continue;
    }
    if (now.type === "dir") {
      throw new FileConflictError(`${target.where(e.path)} is a directory, and the backup has a ${e.type} there; nothing was changed`, "move the directory away first, or restore into a directory with --to");
    }
    if (want === "symlink") {
      if (now.type === "symlink" && now.link === e.link) steps.push({ entry: e, action: "same" });
      else steps.push({ entry: e, action: "replace", why: now.type === "symlink" ? `it points to ${now.link ?? "?"}; in the backup to ${e.link ?? "?"}` : `a ${now.type} now; a symlink in the backup` });
      continue;
    }
    if (now.type !== "file") {
      steps.push({ entry: e, action: "replace", why: `a ${now.type} now; a file in the backup` });
      continue;
    }
    const sameData = await target.sameData(e.path, e.sha256!);
    const sameMeta = now.mode === e.mode && now.uid === e.uid && now.gid === e.gid;
    if (sameData && sameMeta) steps.push({ entry: e, action: "same" });
    else steps.push({ entry: e, action: "replace", why: sameData ? `owner or mode differ (${ownerMode(now)}; in the backup ${ownerMode(e)})` : "its contents differ" });
  }
  return steps;
}

export function ownerMode(e: { mode: number; uid: number; gid: number }): string {
  return `${e.mode.toString(8).padStart(4, "0")} ${e.uid}:${e.gid}`;
}

export interface AppliedFiles {
  created: number;
  replaced: number;
  same: number;
  skipped: number;
}

/** Writes the plan: directories first (the archive lists parents before children), then the rest in order. */
export async function applyFiles(
  target: FileTarget,
  steps: readonly FileStep[],
  o: { signal?: AbortSignal; progress?: (entries: number, of: number, bytes: number, ofBytes: number) => void } = {},
): Promise<AppliedFiles> {
  const signal = o.signal;
  const done: AppliedFiles = { created: 0, replaced: 0, same: 0, skipped: 0 };
  const restored = new Set<string>();
  const todo = steps.filter((s) => s.action === "create" || s.action === "replace");
  const ordered = [...todo.filter((s) => s.entry.type === "dir"), ...todo.filter((s) => s.entry.type !== "dir")];
  const ofBytes = todo.reduce((n, s) => n + s.entry.size, 0);
  let bytes = 0;
  for (const s of ordered) {
    if (signal?.aborted) throw new AppError(`interrupted after ${done.created + done.replaced} of ${todo.length} entries`, ExitCode.Interrupted);
    const e = s.entry;
    try {
      if (s.action === "replace") await target.remove(e.path);
      if (e.type === "dir") await target.mkdir(e);
      else if (e.type === "symlink") await target.symlink(e);
      else if (e.type === "hardlink" && e.link !== undefined && restored.has(e.link) && (await target.hardlink(e, e.link))) {
        // linked
      } else await target.writeFile(e, e.staged!);
    } catch (err) {
      const wrote = done.created + done.replaced;
      throw new AppError(`${target.where(e.path)}: ${(err as Error).message} (${wrote} of ${todo.length} entries were restored before this one)`, ExitCode.Failure, { cause: err });
    }
    restored.add(e.path);
    if (s.action === "create") done.created++;
    else done.replaced++;
    bytes += e.size;
    o.progress?.(done.created + done.replaced, todo.length, bytes, ofBytes);
  }
  await target.finish();
  done.same = steps.filter((s) => s.action === "same" || s.action === "keep").length;
  done.skipped = steps.filter((s) => s.action === "skip").length;
  return done;
}
