// The restic store: versions in a restic repository (deduplicated, encrypted, local or remote),
// through the `restic` binary. Each file of a version is one `backup --stdin` snapshot, streamed
// in as it arrives; the version's manifest snapshot is saved last, only once every file is stored
// and its size and sha256 are known (tags.ts). What the repository cannot hold, the run records,
// the journal, the service state and our lock, lives in a local state directory (a directory
// store of its own, per repository id), which deploy/install.sh puts on a custom volume.

import { createHash, type Hash } from "node:crypto";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { mkdir, readFile, rm } from "node:fs/promises";
import { Transform, Writable, type Readable } from "node:stream";
import type { ChildProcess } from "node:child_process";
import { IntegrityError, InterruptedError, LockedError, RepositoryError, errorMessage } from "../../errors";
import type { FileEntry, Manifest } from "../../core/manifest";
import { KINDS, itemLabel, type ItemKey, type Kind } from "../../core/selection";
import { isVersion, type Version } from "../../core/version";
import { installId } from "../../local/identity";
import { DirectoryStore } from "../directory";
import { fsError, writeFileAtomic } from "../files";
import type {
  DamagedVersion,
  FileSink,
  HeldLock,
  JournalEntry,
  JournalStore,
  Listing,
  LockInfo,
  LockOptions,
  RunRecord,
  ServerOwner,
  Store,
  StoredFile,
  StoredVersion,
  VersionWriter,
} from "../store";
import { forgetEndedChildren, judgeResticLock, readChildren, type ResticLock } from "./locks";
import { collect, displayRepository, finished, jsonLines, resticError, runRestic, startRestic, stopRestic, type ResticTarget } from "./run";
import {
  TOOL_TAG,
  dataTags,
  isDataSnapshot,
  isManifestSnapshot,
  keyOfTag,
  manifestOf,
  manifestTags,
  ownerOf,
  ownerTags,
  refMatches,
  snapshotInstall,
  snapshotItem,
  snapshotVersion,
  type ResticSnapshot,
} from "./tags";

/** In the state root: the ids of the repositories this install has used, by repositoryKey (see config()). */
const KNOWN_IDS_FILE = "restic-ids.json";

type KnownIds = Record<string, { id: string; witness: string }>;

async function readKnownIds(stateRoot: string): Promise<KnownIds> {
  try {
    const parsed = JSON.parse(await readFile(join(stateRoot, KNOWN_IDS_FILE), "utf8")) as unknown;
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return {};
    const ids: KnownIds = {};
    for (const [k, v] of Object.entries(parsed as Record<string, { id?: unknown; witness?: unknown }>)) {
      if (typeof v?.id === "string" && typeof v.witness === "string") ids[k] = { id: v.id, witness: v.witness };
    }
    return ids;
  } catch {
    return {};
  }
}

/** A repository string as a key: hashed, so that a credential in it is not written down. */
function repositoryKey(repository: string): string {
  return createHash("sha256").update(repository).digest("hex");
}

/** The stdin file name of a manifest snapshot (flat: restic 0.18.0 fails on a "/" in it). */
const MANIFEST_NAME = "manifest.json";
/** The stdin file name of an owner snapshot. */
const OWNER_NAME = "owner.json";
/** How long a listing of the snapshots is reused within one process (see snapshots()). */
const SNAPSHOTS_FRESH_MS = 10_000;
/** Data snapshots of other hosts that no manifest names are left alone this long (their run may be under way). */
const FOREIGN_ORPHAN_AGE_MS = 24 * 3600_000;

interface Known {
  manifest: string;
  data: string[];
}

export class ResticStore implements Store {
  readonly defaultCompression = "none";
  readonly journal: JournalStore;
  private configP: Promise<{ id: string } | undefined> | undefined;
  private stateP: Promise<DirectoryStore> | undefined;
  /** Snapshot ids behind each listed version's location (deleteVersion, checkFileSize). */
  private readonly known = new Map<string, Known>();
  private dataIds: string[] = [];
  private listed: { at: number; snaps: ResticSnapshot[] } | undefined;
  /** A listing started beside the first `cat config` (see config()), until something changes. */
  private early: Promise<{ at: number; snaps: ResticSnapshot[] }> | undefined;
  private readonly host = hostname();

  constructor(
    readonly target: ResticTarget,
    /** Where state directories are made, one per repository id. */
    private readonly stateRoot: string,
  ) {
    const state = () => this.state();
    this.journal = {
      write: async (entry: JournalEntry) => (await state()).journal.write(entry),
      remove: async (id: string) => (await state()).journal.remove(id),
      list: async () => (await state()).journal.list(),
    };
  }

  get location(): string {
    return `restic:${displayRepository(this.target.repository)}`;
  }

  /**
   * The repository's config (its id); undefined when there is no repository there. Asked once.
   * `restic cat config` costs a process, and each restic process spends most of a second opening
   * the repository (the key's derivation). So an id this install has seen before is taken from
   * its record (rememberId) when the snapshots, which nearly every command lists anyway, still
   * hold the record's witness: one of the owner snapshots of that repository, which are never
   * forgotten, and which another repository at the same location (made anew) cannot have.
   */
  private config(): Promise<{ id: string } | undefined> {
    let early = this.early;
    if (this.configP === undefined) {
      // Nearly every command lists the snapshots right after: the listing runs beside `cat
      // config` (or is what confirms a known id) instead of after it.
      const fresh = this.listed !== undefined && Date.now() - this.listed.at < SNAPSHOTS_FRESH_MS ? this.listed : undefined;
      early = fresh ? Promise.resolve(fresh) : this.readSnapshots();
      early.catch(() => undefined);
      this.early = early;
    }
    this.configP ??= (async () => {
      const known = await readKnownIds(this.stateRoot).then((ids) => ids[repositoryKey(this.target.repository)]);
      const listing = early?.catch(() => undefined);
      if (known !== undefined && known.witness.length >= 8 && (await listing)?.snaps.some((s) => s.id.startsWith(known.witness))) return { id: known.id };
      try {
        const { stdout } = await runRestic(this.target, ["cat", "config", "--no-lock"], { firstContact: true });
        const c = JSON.parse(stdout) as { id?: unknown };
        if (typeof c.id !== "string" || !/^[0-9a-f]{8,64}$/.test(c.id)) throw new RepositoryError(`${this.location}: restic printed a config without an id`);
        const witness = (await listing)?.snaps.find((s) => ownerOf(s) !== undefined)?.id;
        if (witness !== undefined) await this.rememberId(c.id, witness);
        return { id: c.id };
      } catch (err) {
        if (err instanceof RepositoryError && /there is no restic repository/.test(err.message)) return undefined;
        throw err;
      }
    })();
    this.configP.catch(() => {
      this.configP = undefined;
    });
    return this.configP;
  }

  /** Records the repository's id and a witness for it (see config()); a record that cannot be written only costs the next run a `cat config`. */
  private async rememberId(id: string, witness: string): Promise<void> {
    const ids = await readKnownIds(this.stateRoot);
    const key = repositoryKey(this.target.repository);
    if (ids[key]?.id === id && ids[key]?.witness === witness) return;
    ids[key] = { id, witness };
    await mkdir(this.stateRoot, { recursive: true, mode: 0o700 }).catch(() => undefined);
    await writeFileAtomic(join(this.stateRoot, KNOWN_IDS_FILE), JSON.stringify(ids, null, 2) + "\n").catch(() => undefined);
  }

  async isInitialized(): Promise<boolean> {
    return (await this.config()) !== undefined;
  }

  /** `restic init`; a repository made meanwhile (by another init) counts as success. */
  async initialize(): Promise<boolean> {
    let stdout: string;
    try {
      ({ stdout } = await runRestic(this.target, ["init", "--json"], { firstContact: true }));
    } catch (err) {
      this.configP = undefined;
      if (await this.isInitialized()) return false;
      throw err;
    }
    // A new repository holds no snapshots; restic 0.15 and later print its id (0.14 prints a
    // sentence with a short one, so `cat config` is asked).
    this.changed();
    this.listed = { at: Date.now(), snaps: [] };
    const made = jsonLines(stdout).find((l) => (l as { message_type?: string }).message_type === "initialized") as { id?: unknown } | undefined;
    this.configP = typeof made?.id === "string" && /^[0-9a-f]{64}$/.test(made.id) ? Promise.resolve({ id: made.id }) : undefined;
    return true;
  }

  async repositoryId(): Promise<string | undefined> {
    return (await this.config())?.id;
  }

  async ensureId(): Promise<string> {
    const c = await this.config();
    if (c === undefined) throw this.notRepositoryError();
    return c.id;
  }

  notRepositoryError(): RepositoryError {
    return new RepositoryError(`there is no restic repository at ${displayRepository(this.target.repository)}; nothing was written`, {
      hint: `make one with \`incus-backup init --repo ${this.location}\` (RESTIC_PASSWORD_FILE set)`,
    });
  }

  /** The state directory of this repository, made on first use (it holds nothing a restore needs). */
  state(): Promise<DirectoryStore> {
    this.stateP ??= (async () => {
      const id = await this.ensureId();
      const dir = join(this.stateRoot, `restic-${id.slice(0, 16)}`);
      try {
        await mkdir(dir, { recursive: true, mode: 0o700 });
      } catch (err) {
        throw fsError("create the state directory", dir, err);
      }
      return (await DirectoryStore.open(dir, { create: true, stateDir: this.stateRoot, env: this.target.env })).repo;
    })();
    this.stateP.catch(() => {
      this.stateP = undefined;
    });
    return this.stateP;
  }

  async checkWritable(): Promise<void> {
    await (await this.state()).checkWritable();
  }

  /**
   * All of this tool's snapshots: one `restic snapshots` call. Each call costs the repository's
   * opening (most of a second), so a listing is reused for a few seconds until this process writes
   * or forgets something (a backup lists at its start for cleanup and again to order its items).
   */
  private async snapshots(): Promise<ResticSnapshot[]> {
    if (this.listed && Date.now() - this.listed.at < SNAPSHOTS_FRESH_MS) return this.listed.snaps;
    this.listed = undefined;
    const early = this.early;
    this.early = undefined;
    // The early listing is used only if it worked: its error (no repository yet) is asked again.
    const first = early ? await early.catch(() => undefined) : undefined;
    const got = first && Date.now() - first.at < SNAPSHOTS_FRESH_MS ? first : await this.readSnapshots();
    this.listed = got;
    return got.snaps;
  }

  private async readSnapshots(): Promise<{ at: number; snaps: ResticSnapshot[] }> {
    const at = Date.now();
    const { stdout } = await runRestic(this.target, ["snapshots", "--json", "--no-lock", "--tag", TOOL_TAG], { firstContact: true });
    const parsed = JSON.parse(stdout.trim() === "" ? "[]" : stdout) as ResticSnapshot[] | null;
    return { at, snaps: (parsed ?? []).filter((s) => typeof s?.id === "string") };
  }

  /** Called before anything is written or forgotten: the next listing asks restic again. */
  changed(): void {
    this.listed = undefined;
    this.early = undefined;
  }

  async list(kinds: readonly Kind[] = KINDS): Promise<Listing> {
    const snaps = await this.snapshots();
    const data = snaps.filter(isDataSnapshot);
    this.dataIds = data.map((s) => s.id);
    const out: Listing = { versions: [], damaged: [] };
    for (const s of snaps.filter(isManifestSnapshot)) {
      const location = `${this.location} snapshot ${s.id.slice(0, 8)}`;
      const key = keyOfTag(snapshotItem(s));
      const version = snapshotVersion(s);
      if (key === undefined || version === undefined || !isVersion(version)) continue;
      if (!kinds.includes(key.kind)) continue;
      const m = manifestOf(s);
      const refs: string[] = [];
      let problem = typeof m === "string" ? m : undefined;
      if (typeof m !== "string") {
        for (const f of m.files) {
          const d = data.find((x) => refMatches(f.ref!, x));
          if (d === undefined) problem ??= `${f.name}: its data snapshot ${f.ref!.slice(0, 8)} is missing`;
          else refs.push(d.id);
        }
      }
      // A damaged version's data snapshots are those of its item and version.
      if (problem !== undefined) for (const d of data) if (snapshotItem(d) === snapshotItem(s) && snapshotVersion(d) === version) refs.push(d.id);
      this.known.set(location, { manifest: s.id, data: refs });
      if (problem !== undefined || typeof m === "string") out.damaged.push({ key, version, location, problem: problem ?? "damaged" });
      else out.versions.push({ manifest: m, location, size: m.files.reduce((n, f) => n + f.size, 0) });
    }
    return out;
  }

  /** Cheap: the file's data snapshot is in the repository (restic check vouches for its contents' structure). */
  async checkFileSize(v: StoredVersion, file: FileEntry): Promise<void> {
    if (file.ref === undefined || !this.dataIds.some((id) => id.startsWith(file.ref!))) {
      throw new IntegrityError(`${v.location}: ${file.name}: its data snapshot ${file.ref?.slice(0, 8) ?? "(none)"} is missing`);
    }
  }

  async verifyFile(v: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<void> {
    const f = await this.openFile(v, file, signal);
    f.stream.resume();
    await f.checked;
  }

  /** `restic dump` of the file, hashed as it passes; `checked` settles once restic is done and the sha256 is known. */
  async openFile(v: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<StoredFile> {
    await this.checkFileSize(v, file);
    const where = `${v.location}: ${file.name}`;
    const child = startRestic(this.target, ["dump", "--no-lock", file.ref!, `/${file.name}`]);
    const stderr = collect(child.stderr, 64 * 1024);
    const exit = finished(child, this.target, "dump", stderr);
    exit.catch(() => undefined);
    const hash = createHash("sha256");
    let size = 0;
    let settle!: { resolve: () => void; reject: (e: unknown) => void };
    const checked = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    checked.catch(() => undefined);
    const stream = new Transform({
      highWaterMark: 1024 * 1024,
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > file.size) return done(new IntegrityError(`${where}: longer than the ${file.size} bytes of the manifest`));
        hash.update(chunk);
        done(null, chunk);
      },
      flush(done) {
        exit.then(
          () => {
            if (size !== file.size) throw new IntegrityError(`${where}: ${size} bytes, the manifest says ${file.size}`);
            if (hash.digest("hex") !== file.sha256) throw new IntegrityError(`${where}: sha256 mismatch (the stored data is not what was backed up)`);
            settle.resolve();
            done();
          },
        ).catch((err: unknown) => {
          settle.reject(err);
          done(err as Error);
        });
      },
    });
    stream.on("error", (err) => settle.reject(err));
    stream.on("close", () => {
      // Read to the end or given up early: either way restic has nothing more to do.
      settle.reject(new InterruptedError(`${where}: not read to the end`));
      stopRestic(child);
    });
    exit.catch((err: unknown) => stream.destroy(err as Error));
    const onAbort = () => stream.destroy(new InterruptedError());
    signal?.addEventListener("abort", onAbort, { once: true });
    stream.once("close", () => signal?.removeEventListener("abort", onAbort));
    child.stdout!.pipe(stream);
    return { size: file.size, stream, checked };
  }

  async streamFile(v: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<Readable> {
    return (await this.openFile(v, file, signal)).stream;
  }

  async readSmallFile(v: StoredVersion, file: FileEntry): Promise<Buffer> {
    const f = await this.openFile(v, file);
    const parts: Buffer[] = [];
    for await (const chunk of f.stream) parts.push(chunk as Buffer);
    await f.checked;
    return Buffer.concat(parts);
  }

  /** The newest owner snapshot's record (tags.ts). */
  async serverOwner(): Promise<ServerOwner | undefined> {
    let newest: { at: number; owner: ServerOwner } | undefined;
    for (const s of await this.snapshots()) {
      const owner = ownerOf(s);
      const at = Date.parse(s.time);
      if (owner && (newest === undefined || at > newest.at)) newest = { at, owner };
    }
    return newest?.owner;
  }

  async setServerOwner(owner: ServerOwner): Promise<void> {
    await this.checkLock();
    const snapshot = await this.saveSmall(OWNER_NAME, ownerTags(owner), JSON.stringify(owner, null, 2) + "\n");
    const config = await this.config();
    if (config !== undefined) await this.rememberId(config.id, snapshot);
  }

  /** This install's id (src/local/identity.ts), in the state directory's root. */
  installId(): Promise<string | undefined> {
    return installId(this.stateRoot, this.target.env);
  }

  /** Throws LockLostError if our lock (in the local state directory) is no longer this run's. */
  async checkLock(): Promise<void> {
    if (this.stateP) await (await this.stateP).checkLock();
  }

  async begin(key: ItemKey, version: Version): Promise<VersionWriter> {
    await this.checkLock();
    await this.ensureId();
    return new ResticVersionWriter(this, key, version);
  }

  /** The manifest snapshot goes first, so a crash half-way leaves orphaned data, never a listed version without it. */
  async deleteVersion(v: StoredVersion | DamagedVersion): Promise<void> {
    await this.checkLock();
    const k = this.known.get(v.location);
    if (k === undefined) throw new RepositoryError(`${v.location}: not found in the last listing of the repository`);
    await this.forget([k.manifest]);
    if (k.data.length > 0) await this.forget(k.data);
    this.known.delete(v.location);
    await this.dropCatalogs([v]);
  }

  async deleteVersions(vs: ReadonlyArray<StoredVersion | DamagedVersion>): Promise<void> {
    await this.checkLock();
    const ks = vs.map((v) => {
      const k = this.known.get(v.location);
      if (k === undefined) throw new RepositoryError(`${v.location}: not found in the last listing of the repository`);
      return k;
    });
    await this.forget(ks.map((k) => k.manifest));
    await this.forget(ks.flatMap((k) => k.data));
    for (const v of vs) this.known.delete(v.location);
    await this.dropCatalogs(vs);
  }

  /** The file catalogs of forgotten versions go with them (another version of the very same archive makes its own again). */
  private async dropCatalogs(vs: ReadonlyArray<StoredVersion | DamagedVersion>): Promise<void> {
    for (const v of vs) for (const f of "manifest" in v ? v.manifest.files : []) await rm(await this.catalogPath(f), { force: true }).catch(() => undefined);
  }

  async forget(ids: string[], options: { timeoutMs?: number } = {}): Promise<void> {
    if (ids.length === 0) return;
    this.changed();
    await this.exclusively(() => runRestic(this.target, ["forget", ...ids], options));
  }

  /**
   * Runs a command that needs restic's exclusive lock. restic does not take over a stale lock (a
   * restic that was killed, or whose parent was: it dies of the broken pipe) by itself; on a lock
   * conflict the locks are judged and cleared (clearStaleLocks) and it is tried once more.
   */
  private async exclusively<T>(run: () => Promise<T>): Promise<T> {
    let result: T;
    try {
      result = await run();
    } catch (err) {
      if (!(err instanceof LockedError)) throw err;
      await this.clearStaleLocks();
      result = await run();
    }
    // Nothing was in the way (or it was cleared): the locks of restics of ours that ended are gone.
    if (this.target.children) await forgetEndedChildren(this.target.children);
    return result;
  }

  /**
   * `restic unlock`, but only once every lock in the repository is one that may be cleared
   * (locks.ts: restic's own rule would also clear a live lock of another host of the same name);
   * otherwise LockedError naming the one in the way.
   */
  private async clearStaleLocks(): Promise<void> {
    const { stdout } = await runRestic(this.target, ["list", "locks", "--no-lock"]);
    const children = this.target.children ? await readChildren(this.target.children) : [];
    const now = new Date();
    for (const id of stdout.split("\n").map((l) => l.trim()).filter((l) => /^[0-9a-f]{64}$/.test(l))) {
      let lock: ResticLock;
      try {
        lock = JSON.parse((await runRestic(this.target, ["cat", "lock", id, "--no-lock"])).stdout) as ResticLock;
      } catch {
        continue; // released meanwhile
      }
      const verdict = judgeResticLock(lock, now, { host: this.host, children });
      if (!verdict.clear) {
        const by = `PID ${lock.pid} on ${lock.hostname}${lock.username ? ` by ${lock.username}` : ""}`;
        throw new LockedError(`the restic repository ${displayRepository(this.target.repository)} is locked${lock.exclusive ? " exclusively" : ""} by ${by} since ${lock.time}: ${verdict.why}`, {
          hint: "wait for that run to end; if it is gone for sure (its host is off, say), `incus-backup unlock --force` clears it",
        });
      }
    }
    await runRestic(this.target, ["unlock"]);
  }

  /**
   * Data snapshots no manifest names: what writers that were killed (or whose export failed) left.
   * Those of this install go now (our lock is held, so no run of ours is writing); any other's
   * (another host's, maybe under way; or one without an install tag) only once a day old. By host
   * name alone, two hosts both called `backup` would delete each other's in-flight data.
   */
  async cleanupTemp(): Promise<string[]> {
    const snaps = await this.snapshots();
    const named = new Set<string>();
    const versionsOf = new Set<string>();
    for (const s of snaps.filter(isManifestSnapshot)) {
      versionsOf.add(`${snapshotItem(s)}@${snapshotVersion(s)}`);
      const m = manifestOf(s);
      if (typeof m !== "string") for (const f of m.files) named.add(f.ref!);
    }
    const now = Date.now();
    const install = await this.installId();
    const orphans = snaps.filter(
      (s) =>
        isDataSnapshot(s) &&
        ![...named].some((r) => refMatches(r, s)) &&
        !versionsOf.has(`${snapshotItem(s)}@${snapshotVersion(s)}`) &&
        ((install !== undefined && snapshotInstall(s) === install) || now - Date.parse(s.time) > FOREIGN_ORPHAN_AGE_MS),
    );
    try {
      await this.forget(orphans.map((s) => s.id));
    } catch (err) {
      // Another host's backup holds restic's lock: the orphans stay invisible until a later run.
      if (err instanceof LockedError) return [];
      throw err;
    }
    return orphans.map((s) => `snapshot ${s.id.slice(0, 8)} (${snapshotVersion(s) ?? "?"}, an unfinished backup)`);
  }

  /**
   * Catalogs are kept in this host's state directory, by the archive's sha256: reading one costs no
   * restic call, and a lost state directory costs only the next listing's read of the archive.
   */
  private async catalogPath(file: FileEntry): Promise<string> {
    return join((await this.state()).root, "catalogs", `${file.sha256}.gz`);
  }

  async readCatalog(_v: StoredVersion, file: FileEntry): Promise<Buffer | undefined> {
    return readFile(await this.catalogPath(file)).catch(() => undefined);
  }

  async saveCatalog(_v: StoredVersion, file: FileEntry, data: Buffer): Promise<void> {
    const path = await this.catalogPath(file);
    try {
      await mkdir(dirname(path), { recursive: true, mode: 0o700 });
      await writeFileAtomic(path, data);
    } catch (err) {
      throw fsError("write", path, err);
    }
  }

  /** `restic prune`: frees the space of forgotten snapshots (prune and the service run it after forgetting). */
  async reclaim(signal?: AbortSignal): Promise<string> {
    const { stdout } = await this.exclusively(() => runRestic(this.target, ["prune"], signal === undefined ? {} : { signal }));
    // "total prune:  12 blobs / 3.456 MiB" (0.14 to 0.18)
    const freed = /total prune:\s+\d+ blobs \/ ([\d.]+ \S+)/.exec(stdout)?.[1];
    return freed === undefined ? "done" : `${freed} of unused data`;
  }

  /** `restic check`, with a share of the data read (`--read-data-subset`) when asked. Returns the problems found. */
  async checkStructure(readData?: string, signal?: AbortSignal): Promise<string[]> {
    const args = ["check", ...(readData === undefined ? [] : readData === "all" ? ["--read-data"] : [`--read-data-subset=${readData}`])];
    try {
      await runRestic(this.target, args, signal === undefined ? {} : { signal });
      return [];
    } catch (err) {
      if (err instanceof RepositoryError && /restic check failed/.test(err.message)) return [errorMessage(err)];
      throw err;
    }
  }

  async totalSize(): Promise<number> {
    const { versions } = await this.list();
    return versions.reduce((n, v) => n + v.size, 0);
  }

  async reserveVersion(at: Date, record: Omit<RunRecord, "version">): Promise<Version> {
    return (await this.state()).reserveVersion(at, record);
  }
  async saveRun(record: RunRecord): Promise<void> {
    return (await this.state()).saveRun(record);
  }
  async listRuns(): Promise<RunRecord[]> {
    return (await this.state()).listRuns();
  }
  async pruneRunRecords(keep?: number): Promise<number> {
    const live = new Set((await this.list()).versions.map((v) => v.manifest.version));
    return (await this.state()).pruneRunRecords(keep, live);
  }
  async readState<T>(name: string): Promise<T | undefined> {
    return (await this.state()).readState<T>(name);
  }
  async saveState(name: string, value: unknown): Promise<void> {
    return (await this.state()).saveState(name, value);
  }
  async lock(command: string, options?: LockOptions): Promise<HeldLock> {
    return (await this.state()).lock(command, options);
  }
  async lockHolder(): Promise<LockInfo | undefined> {
    return (await this.state()).lockHolder();
  }
  /**
   * Our lock, and restic's stale ones: judged as before an exclusive call (a restic lock that is
   * not ours to clear leaves everything as it was, LockedError), or with `force` by restic's own
   * rule (`restic unlock`: also a same-named host's lock whose PID does not run here).
   */
  async forceUnlock(options: { force?: boolean } = {}): Promise<LockInfo | undefined> {
    if (!options.force) await this.clearStaleLocks();
    const held = await (await this.state()).forceUnlock();
    if (options.force) await runRestic(this.target, ["unlock"]);
    return held;
  }

  /** Saves `input` (small) as a snapshot; returns its id. An aborted `signal` stops restic (InterruptedError). */
  async saveSmall(name: string, tags: string[], input: string | Buffer, signal?: AbortSignal): Promise<string> {
    this.changed();
    try {
      const { stdout } = await runRestic(this.target, backupArgs(name, tags, this.host), { input, ...(signal === undefined ? {} : { signal }) });
      return snapshotIdOf(stdout, "backup");
    } finally {
      this.changed();
    }
  }

  get hostName(): string {
    return this.host;
  }
}

function backupArgs(name: string, tags: string[], host: string): string[] {
  return ["backup", "--stdin", "--stdin-filename", name, "--host", host, "--json", ...tags.flatMap((t) => ["--tag", t])];
}

/** The snapshot id from `backup --json`'s summary line (8 characters on 0.14, whole from 0.15). */
function snapshotIdOf(stdout: string, what: string): string {
  const summary = jsonLines(stdout).find((l) => (l as { message_type?: string }).message_type === "summary") as { snapshot_id?: unknown } | undefined;
  const id = summary?.snapshot_id;
  if (typeof id !== "string" || !/^[0-9a-f]{8,64}$/.test(id)) throw new RepositoryError(`restic ${what} printed no snapshot id`);
  return id;
}

/**
 * A failed writer forgets what it stored at once, but only for this long: when the failure is
 * the server going away, restic would retry for many minutes, and the next run tidies up anyway.
 */
const TIDY_TIMEOUT_MS = 10_000;

/** One file streamed into `restic backup --stdin`, hashed and sized on the way. */
class ResticFileSink extends Writable {
  private readonly hash = createHash("sha256");
  private size = 0;
  private ref: string | undefined;
  private readonly child: ChildProcess;
  private readonly exit: Promise<void>;
  private readonly stdout: () => string;
  private exited = false;

  constructor(
    private readonly store: ResticStore,
    private readonly name: string,
    tags: string[],
    private readonly tee: Hash | undefined,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    store.changed();
    this.child = startRestic(store.target, backupArgs(name, tags, store.hostName), { stdin: "pipe" });
    this.stdout = collect(this.child.stdout, 64 * 1024 * 1024);
    const stderr = collect(this.child.stderr, 64 * 1024);
    this.exit = finished(this.child, store.target, "backup", stderr);
    this.exit.then(
      () => (this.exited = true),
      () => (this.exited = true),
    );
    this.child.stdin!.on("error", () => undefined);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.hash.update(chunk);
    this.tee?.update(chunk);
    this.size += chunk.length;
    if (this.exited) return done(this.early());
    if (this.child.stdin!.write(chunk)) return done();
    // Until restic reads on, or stops (then the reason is its exit).
    const stdin = this.child.stdin!;
    let called = false;
    const once = (err?: Error) => {
      if (called) return;
      called = true;
      stdin.off("drain", onDrain);
      done(err);
    };
    const onDrain = () => once();
    stdin.once("drain", onDrain);
    this.exit.then(
      () => once(this.early()),
      (err: unknown) => once(err as Error),
    );
  }

  private early(): Error {
    return new RepositoryError(`restic backup of ${this.name} stopped before the end of its input`);
  }

  override _final(done: (err?: Error | null) => void): void {
    this.child.stdin!.end();
    this.exit
      .then(() => {
        this.store.changed();
        this.ref = snapshotIdOf(this.stdout(), "backup");
        const summary = jsonLines(this.stdout()).find((l) => (l as { message_type?: string }).message_type === "summary") as { total_bytes_processed?: unknown };
        if (typeof summary.total_bytes_processed === "number" && summary.total_bytes_processed !== this.size) {
          throw new RepositoryError(`restic stored ${summary.total_bytes_processed} bytes of ${this.name}, ${this.size} were sent`);
        }
      })
      .then(() => done(), done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (!this.exited) stopRestic(this.child);
    this.exit.then(
      () => done(err),
      () => done(err),
    );
  }

  /** The snapshot made, once finished (to forget it when the file is thrown away). */
  snapshot(): string | undefined {
    return this.ref;
  }

  entry(): FileEntry {
    return { name: this.name, size: this.size, sha256: this.hash.copy().digest("hex"), ...(this.ref === undefined ? {} : { ref: this.ref }) };
  }
}

class ResticVersionWriter implements VersionWriter {
  private readonly files: FileEntry[] = [];
  private readonly sinks = new Map<string, ResticFileSink>();
  private done = false;

  constructor(
    private readonly store: ResticStore,
    readonly key: ItemKey,
    readonly version: Version,
  ) {}

  async createFile(name: string, tee?: Hash): Promise<FileSink> {
    const sink = new ResticFileSink(this.store, name, dataTags(this.key, this.version, name, await this.store.installId()), tee);
    this.sinks.set(name, sink);
    return sink as ResticFileSink & FileSink;
  }

  async removeFile(name: string): Promise<void> {
    const sink = this.sinks.get(name);
    this.sinks.delete(name);
    if (sink === undefined) return;
    sink.destroy();
    await new Promise<void>((resolve) => (sink.closed ? resolve() : sink.once("close", () => resolve())));
    const ref = sink.snapshot();
    // Left behind if this fails: the next run's cleanup takes it (no manifest names it).
    if (ref !== undefined) await this.store.forget([ref], { timeoutMs: TIDY_TIMEOUT_MS }).catch(() => undefined);
  }

  addFile(entry: FileEntry): void {
    this.files.push(entry);
  }

  async writeFile(name: string, data: string | Buffer): Promise<FileEntry> {
    const sink = (await this.createFile(name)) as unknown as ResticFileSink;
    await new Promise<void>((resolve, reject) => {
      sink.once("error", reject);
      sink.end(typeof data === "string" ? Buffer.from(data) : data, () => resolve());
    });
    const entry = sink.entry();
    this.files.push(entry);
    return entry;
  }

  async commit(manifest: Omit<Manifest, "files">, signal?: AbortSignal): Promise<StoredVersion> {
    const full = { ...manifest, files: [...this.files] } as Manifest;
    for (const f of full.files) if (f.ref === undefined) throw new RepositoryError(`${itemLabel(this.key)}: ${f.name} was not stored in restic`);
    const tags = manifestTags(full);
    if (tags === undefined) throw new RepositoryError(`${itemLabel(this.key)}: its manifest is too large to store as restic tags`);
    await this.store.checkLock();
    // With the signal: on a server that went away, restic would retry for many minutes, and a run
    // that is stopped meanwhile must not wait for it.
    const id = await this.store.saveSmall(MANIFEST_NAME, tags, JSON.stringify(full, null, 2) + "\n", signal);
    this.done = true;
    return { manifest: full, location: `${this.store.location} snapshot ${id.slice(0, 8)}`, size: full.files.reduce((n, f) => n + f.size, 0) };
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    const refs: string[] = [];
    for (const sink of this.sinks.values()) {
      if (!sink.closed) {
        sink.destroy();
        await new Promise<void>((resolve) => sink.once("close", () => resolve()));
      }
      const ref = sink.snapshot();
      if (ref !== undefined) refs.push(ref);
    }
    await this.store.forget(refs, { timeoutMs: TIDY_TIMEOUT_MS }).catch(() => undefined);
  }
}
