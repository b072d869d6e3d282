// The storage boundary: one interface, with a contract per method, between the engine and where
// backups live (restic's `backend` is the model). The engine and the CLI reach backups only through
// it; a directory (directory.ts) is the first implementation.

import type { Hash } from "node:crypto";
import type { Readable, Writable } from "node:stream";
import type { FileEntry, Manifest } from "../core/manifest";
import type { ItemKey, Kind } from "../core/selection";
import type { Version } from "../core/version";
import type { SavedIdentity } from "../core/nics";

/** A complete version: listed only once every file of it is stored and its manifest checks out. */
export interface StoredVersion {
  manifest: Manifest;
  /** Total bytes of its files. */
  size: number;
  /** Where it is, for people (a directory, a snapshot): shown in messages and `list --json`, never parsed. */
  location: string;
}

/** A version whose manifest is missing, unreadable or inconsistent: never restored, reported by verify. */
export interface DamagedVersion {
  key: ItemKey;
  version: Version;
  location: string;
  problem: string;
}

export interface Listing {
  versions: StoredVersion[];
  damaged: DamagedVersion[];
}

/** A stored file being read. */
export interface StoredFile {
  /** Its size, as the manifest gives it (checked before this is returned). */
  size: number;
  /** Its bytes from the first; read it once, or destroy it. */
  stream: Readable;
  /**
   * Settles once the bytes are known to match the manifest's sha256: resolves, or rejects with an
   * IntegrityError. A restore holds back the last bytes of an upload until it resolves. The store
   * may check the bytes it delivers, or read the file once more beside them (see directory.ts).
   */
  checked: Promise<void>;
}

/** A file of a version being written; `entry()` is valid once it has finished. */
export type FileSink = Writable & { entry(): FileEntry };

/**
 * One version being written. Nothing of it is visible to `list` until `commit` returns, and after
 * `abort` or a crash nothing of it is ever listed (the next `cleanupTemp` removes what is left).
 */
export interface VersionWriter {
  readonly key: ItemKey;
  readonly version: Version;
  /** A new data file to stream into (hashed and sized on the way; `tee` also gets every byte). */
  createFile(name: string, tee?: Hash): Promise<FileSink>;
  /** Deletes a file begun in this version (a transfer retried another way). */
  removeFile(name: string): Promise<void>;
  /** Records a finished data file for the manifest. */
  addFile(entry: FileEntry): void;
  /** Writes a small file (JSON, SQL text) whole, and records it. */
  writeFile(name: string, data: string | Buffer): Promise<FileEntry>;
  /**
   * Makes the version appear, complete and durable, with this manifest and the files recorded.
   * An aborted `signal` stops a commit that waits on a remote (InterruptedError; nothing appears).
   */
  commit(manifest: Omit<Manifest, "files">, signal?: AbortSignal): Promise<StoredVersion>;
  /** Throws the partial version away. Safe to call more than once, and after commit (then a no-op). */
  abort(): Promise<void>;
}

/** What one backup run did, kept for `status`. */
export interface RunRecord {
  version: Version;
  command: string;
  started: string;
  finished?: string;
  status: "running" | "ok" | "partial" | "failed" | "interrupted";
  /**
   * mode and snapshots: how the item was backed up, when not live and without snapshots.
   * `key`: the item itself, for the metrics file (records of older versions have only the label; a
   * volume's key has its member only from when volumes were keyed by member: `member` has it before).
   */
  items?: Array<{ label: string; ok: boolean; error?: string; bytes?: number; seconds?: number; mode?: "stop"; snapshots?: boolean; member?: string; key?: Pick<ItemKey, "kind" | "project" | "pool" | "name" | "member"> }>;
  /** Items the run found but left out, and why (user.incus-backup.exclude=true, ephemeral, ...). */
  skipped?: Array<{ label: string; reason: string }>;
}

/** Who holds the exclusive lock. */
export interface LockInfo {
  host: string;
  pid: number;
  /** The holder's install id (src/local/identity.ts); absent in locks of older versions. */
  install?: string;
  /** The holder process's start time (clock ticks since boot), so a reused PID is told apart. */
  start?: string;
  command: string;
  /** ISO times. */
  started: string;
  refreshed: string;
  id: string;
}

export interface LockOptions {
  /** Keep trying for this long while the lock is held by a live run (the service waits; people are told at once). */
  waitMs?: number;
  /** Told about stale locks taken over. */
  onMessage?: (text: string) => void;
  now?: () => Date;
  /** This process's install id; default: the state directory's (src/local/identity.ts). "" for none. */
  install?: string;
}

/** The exclusive lock, held: refreshed in the background until released. */
export interface HeldLock {
  /** Releases it if it is still ours (a stale-lock takeover by another run leaves theirs alone). */
  release(): Promise<void>;
  /** Throws LockLostError unless the lock is still ours. */
  check(): Promise<void>;
}

export interface JournalInstanceRef {
  project: string;
  name: string;
}

/**
 * A replace in progress, or an instance a `backup --stop` stopped. Phases, in order:
 * - instance: "import" (temp instance being created; original untouched) → "swap" (original
 *   being stopped, renamed aside and made inert, temp renamed into place) → "finish" (start,
 *   delete the old one) → "undo" (a failed swap or start being undone: the original is put back);
 * - volume: "import" (temp volume being created) → "stop" (users being stopped) → "refresh"
 *   (original's contents being replaced from the temp) → "finish" (start users, delete the temp);
 * - stopped: "stopped" (the instance is down for its backup; recovery starts it again).
 */
export interface JournalEntry {
  id: string;
  /**
   * drill: a restore drill's copy in the scratch project (core/drill.ts), deleted by recovery.
   * move: in a cluster, an instance imported on the member this tool talks to for another member
   * (`member`), with the stand-in volumes made for its import; recovery finishes the move and
   * deletes the stand-ins.
   */
  kind: "instance" | "volume" | "stopped" | "drill" | "move";
  project: string;
  pool?: string;
  name: string;
  /** The imported copy, under a temporary name ("" for "stopped"). */
  temp: string;
  /** Instance only: the name the original is moved to during the swap. */
  aside?: string;
  phase: "import" | "swap" | "stop" | "refresh" | "finish" | "undo" | "stopped" | "drill" | "move";
  /** In a cluster: the member the volume is on (its copy is made there). */
  member?: string;
  /** Drill only: what the copy is, and the stand-in volumes made for its import (in the scratch project). */
  drill?: { of: "instance" | "volume"; placeholders: Array<{ pool: string; name: string }> };
  /** Move only: the member it was imported on, and the stand-ins made there for the import. */
  move?: { from: string; standIns: Array<{ pool: string; name: string }> };
  /** Instance only: whether the original was running. */
  wasRunning?: boolean;
  /**
   * Instance only, from the swap on: the original's own devices, MACs and autostart, which the
   * swap takes away while it stands aside (so the restored instance can start with the same MACs
   * and addresses), and which putting it back restores.
   */
  original?: SavedIdentity;
  /** Volume only: instances that must be stopped while the contents are replaced. */
  stop?: JournalInstanceRef[];
  /** Instances to start again at the end. */
  restart: JournalInstanceRef[];
  started: string;
}

/** Restore journals: what a replace in progress has done, so that a run that died can be finished or undone. */
export interface JournalStore {
  /** Writes (or rewrites) an entry durably before the phase it names starts. */
  write(entry: JournalEntry): Promise<void>;
  /** Removes an entry; a missing one is fine. */
  remove(id: string): Promise<void>;
  /** The entries waiting; unreadable or damaged ones come back as problems, never as entries to act on. */
  list(): Promise<{ entries: JournalEntry[]; problems: string[] }>;
}

/** The Incus server whose backups a repository holds, named by its certificate's fingerprint. */
export interface ServerOwner {
  fingerprint: string;
  /** Its server name, for people. */
  name: string;
  /** When the repository was given to it (its first backup, or `init --adopt`). */
  since: string;
}

/** A sound ServerOwner record (one damaged on disk counts as none). */
export function isServerOwner(o: unknown): o is ServerOwner {
  const r = o as Partial<ServerOwner> | null | undefined;
  return typeof r === "object" && r !== null && typeof r.fingerprint === "string" && r.fingerprint !== "" && typeof r.name === "string" && typeof r.since === "string";
}

export interface Store {
  /** Where the store is, for people: a path, a URL. */
  readonly location: string;
  /**
   * The compression a backup asks Incus for when the user names none: zstd for a directory; none
   * for a store that compresses and deduplicates itself (restic: a compressed tar barely dedups).
   */
  readonly defaultCompression?: string;

  /** Whether the store has been made a repository of this tool (opening an empty place does not make it one). */
  isInitialized(): Promise<boolean>;
  /**
   * Makes the (empty) place a repository. Safe against a concurrent initialisation: of several at
   * once, one creates it and the others find it made, which counts as success. Returns whether
   * this call made it.
   */
  initialize(): Promise<boolean>;
  /** The repository's random id, made when it was initialised; undefined if the place is not one yet. */
  repositoryId(): Promise<string | undefined>;
  /** The id, made now for a repository initialised before repositories had one. */
  ensureId(): Promise<string>;
  /** Which server's backups the repository holds; undefined until its first backup records it. */
  serverOwner(): Promise<ServerOwner | undefined>;
  /** Records which server's backups the repository holds. Only while holding the lock. */
  setServerOwner(owner: ServerOwner): Promise<void>;
  /** The error for a place that is not a repository, where the directory's wording (an unmounted NAS) does not fit. */
  notRepositoryError?(): Error;
  /** Fails early, with a clear RepositoryError, if nothing can be written. */
  checkWritable(): Promise<void>;

  /** Every complete version of the given kinds, and the damaged ones found on the way. Reads manifests, not data. */
  list(kinds?: readonly Kind[]): Promise<Listing>;
  /** The size half of verifyFile: cheap, so a restore makes it before anything else. IntegrityError if it differs or the file is missing. */
  checkFileSize(v: StoredVersion, file: FileEntry): Promise<void>;
  /** Checks one file of a version against its manifest entry, size then sha256; IntegrityError if not. */
  verifyFile(v: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<void>;
  /** Opens a stored file to read it as a stream (see StoredFile for how its check works). */
  openFile(v: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<StoredFile>;
  /**
   * A stored file's bytes without checking them: for reading the beginning of an archive (its
   * index), or reading one whose sha256 was just checked. Destroy it when done with it early.
   */
  streamFile(v: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<Readable>;
  /**
   * Where a stored file is on this machine's file system, if it is one there (the directory
   * store), after the size check: a decompressor reads it directly instead of through this process.
   */
  localPath?(v: StoredVersion, file: FileEntry): Promise<string>;
  /** A small stored file, whole (a configuration export), checked against its manifest entry. */
  readSmallFile(v: StoredVersion, file: FileEntry): Promise<Buffer>;

  /** Starts writing a new version of an item (RepositoryError if it has that version already). */
  begin(key: ItemKey, version: Version): Promise<VersionWriter>;
  /** Deletes one version, so that a crash never leaves half of it listed. */
  deleteVersion(v: StoredVersion | DamagedVersion): Promise<void>;
  /** Removes what writers that died left. Only while holding the lock; returns what it removed. */
  cleanupTemp(): Promise<string[]>;
  /** Total bytes of all complete versions. */
  totalSize(): Promise<number>;

  /**
   * Claims a version name for a new run: the run's start time, moved on by a second while an
   * earlier run has it, and records the run as running. Only while holding the lock.
   */
  reserveVersion(at: Date, record: Omit<RunRecord, "version">): Promise<Version>;
  /** Writes (or rewrites) the record of a run. */
  saveRun(record: RunRecord): Promise<void>;
  /** Run records, oldest first; unreadable ones are skipped. */
  listRuns(): Promise<RunRecord[]>;
  /** Removes records of runs none of whose versions is left, keeping the newest `keep`. Returns how many went. */
  pruneRunRecords(keep?: number): Promise<number>;
  /** Service state by name (the schedule, the last prune, the last verify); undefined when missing or unreadable. */
  readState<T>(name: string): Promise<T | undefined>;
  /** Writes service state durably. */
  saveState(name: string, value: unknown): Promise<void>;

  /** Takes the exclusive lock, or throws LockedError naming the holder (stale locks are taken over). */
  lock(command: string, options?: LockOptions): Promise<HeldLock>;
  /** Throws LockLostError if this process took the lock and it is no longer ours; writes call it first. */
  checkLock(): Promise<void>;
  /** Who holds the lock now, if anyone. */
  lockHolder(): Promise<LockInfo | undefined>;
  /** Removes the lock whoever holds it (`unlock`); returns whose it was. */
  forceUnlock(options?: { force?: boolean }): Promise<LockInfo | undefined>;

  readonly journal: JournalStore;

  /**
   * A store that checks its own structure (restic check): verify runs it, and then needs only a
   * file's presence (checkFileSize) unless it reads the data (--deep). `readData`: "all" or a
   * subset as restic takes it ("10%", "1/5"). Returns the problems found.
   */
  checkStructure?(readData?: string, signal?: AbortSignal): Promise<string[]>;
  /**
   * Deletes several versions at once where one call per version is costly (restic: two `forget`
   * calls in all, the manifests first). Same guarantee as deleteVersion; all or none are reported.
   */
  deleteVersions?(vs: ReadonlyArray<StoredVersion | DamagedVersion>): Promise<void>;
  /** Frees the space of deleted versions where deleting does not (restic prune); returns what it freed, for people. */
  reclaim?(signal?: AbortSignal): Promise<string>;

  /**
   * The file catalog kept for an archive of a version (engine/catalog.ts), or undefined when none
   * was kept. A catalog is derived data: the version's manifest does not list it, and a missing or
   * stale one is simply built again from the archive.
   */
  readCatalog(v: StoredVersion, file: FileEntry): Promise<Buffer | undefined>;
  /** Keeps a catalog for an archive of a version; never changes the version itself. */
  saveCatalog(v: StoredVersion, file: FileEntry, data: Buffer): Promise<void>;
}
