// The directory store: backups in a directory (a NAS mount), as an admin can read them by hand.
// The first implementation of the storage interface (store.ts); its layout is in the README.

import { createHash, randomBytes, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import type { Readable } from "node:stream";
import { readdir, readFile, rename, rm, stat, access, open, link, unlink, constants as fsc } from "node:fs/promises";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { isVersion, nextVersion, versionAt, type Version } from "../core/version";
import type { ItemKey, Kind } from "../core/selection";
import { KINDS, itemLabel } from "../core/selection";
import { IntegrityError, InterruptedError, RepositoryError, errorMessage } from "../errors";
import { HashingFileWriter, fsError, mkdirPrivate, syncDir, writeFileAtomic, writeFileDurable } from "./files";
import { isLockFileName, LOCK_FILE } from "./layout";
import { Journal } from "./journal";
import { installId } from "../local/identity";
import { RepositoryLock, forceUnlock, readLock } from "./lock";
import { isServerOwner, type DamagedVersion, type HeldLock, type Listing, type LockInfo, type LockOptions, type RunRecord, type ServerOwner, type Store, type StoredFile, type StoredVersion, type VersionWriter } from "./store";
import {
  FORMAT_FILE,
  KEY_DEPTH,
  KIND_DIRS,
  REPOSITORY_FORMAT,
  RUNS_DIR,
  STATE_DIR,
  TMP_DIR,
  itemPath,
  keyFromParts,
  memberOfDir,
  versionPath,
} from "./layout";
import { MANIFEST_FILE, SUMS_FILE, manifestProblem, type FileEntry, type Manifest } from "../core/manifest";

/** A version's file catalog, named after its archive (instance.tar.zst.catalog.gz). */
const CATALOG_SUFFIX = ".catalog.gz";

/** Read size for streaming a stored file (uploads read 1 MiB at a time, see incus/transfer.ts). */
const READ_BLOCK = 1024 * 1024;

export class DirectoryStore implements Store {
  readonly journal: Journal;
  /** The lock this process holds on the repository, if any: writes check it is still ours first. */
  private held: HeldLock | undefined;

  private constructor(
    readonly root: string,
    /** Where the install id our locks record comes from (src/local/identity.ts; default: process.env's). */
    private readonly identity?: { stateDir: string; env: NodeJS.ProcessEnv },
  ) {
    this.journal = new Journal(root);
  }

  get location(): string {
    return this.root;
  }

  /**
   * Opens the repository at `root`. The directory must exist: a missing directory is more often an
   * unmounted NAS than a wish to write to the local disk. With `create`, an empty directory is made
   * into a new repository; a non-empty directory without the marker file is refused.
   */
  static async open(root: string, options: { create: boolean; stateDir?: string; env?: NodeJS.ProcessEnv }): Promise<{ repo: DirectoryStore; created: boolean }> {
    let st;
    try {
      st = await stat(root);
    } catch (err) {
      throw fsError("open backup directory", root, err);
    }
    if (!st.isDirectory()) throw new RepositoryError(`backup directory ${root} is not a directory`);
    const repo = new DirectoryStore(root, options.stateDir === undefined ? undefined : { stateDir: options.stateDir, env: options.env ?? process.env });
    if (await repo.readMarker()) return { repo, created: false };
    if (!(await repo.looksEmpty())) {
      // Another run may have made the directory a repository between the read and the listing:
      // everything a run writes here comes after the marker, so read it once more.
      if (await repo.readMarker()) return { repo, created: false };
      throw new RepositoryError(`${root} is not an incus-backup repository (no ${FORMAT_FILE}) and is not empty`, {
        hint: "Point --dir at an empty directory or at an existing incus-backup repository.",
      });
    }
    if (!options.create) return { repo, created: false };
    return { repo, created: await repo.initialize() };
  }

  /** Reads and checks the marker file: true if there is one (of our format), false if there is none. */
  private async readMarker(): Promise<boolean> {
    return (await this.marker()) !== undefined;
  }

  /** The marker's fields, checked; undefined if there is none. */
  private async marker(): Promise<Record<string, unknown> | undefined> {
    const marker = join(this.root, FORMAT_FILE);
    let text: string;
    try {
      text = await readFile(marker, "utf8");
    } catch (err) {
      if ((err as { code?: string }).code === "ENOENT") return undefined;
      throw fsError("read", marker, err);
    }
    return this.checkFormat(text, marker);
  }

  async repositoryId(): Promise<string | undefined> {
    const m = await this.marker();
    return typeof m?.id === "string" ? m.id : undefined;
  }

  /**
   * Whether the directory holds nothing but what may be there before the marker: lost+found, a
   * concurrent initialiser's candidate marker, and a lock (a command that takes the lock on an
   * empty directory, such as prune, writes one there).
   */
  private async looksEmpty(): Promise<boolean> {
    const entries = await readdir(this.root).catch((err: unknown) => {
      throw fsError("read backup directory", this.root, err);
    });
    return entries.every((e) => e === "lost+found" || e.startsWith(`.${FORMAT_FILE}-`) || isLockFileName(e));
  }

  /** Whether the marker file exists (an empty directory opened without `create` has none yet). */
  async isInitialized(): Promise<boolean> {
    return exists(join(this.root, FORMAT_FILE));
  }

  /**
   * Makes the (empty, checked by open) directory a repository by writing the marker file. The
   * marker is written whole under a private name and linked into place: link fails if a marker
   * exists, so of several runs initialising at once exactly one creates it, and the others find a
   * complete one, which counts as success if it is of our format. Returns whether this call made it.
   */
  async initialize(): Promise<boolean> {
    const marker = join(this.root, FORMAT_FILE);
    const id = randomBytes(8).toString("hex");
    const candidate = join(this.root, `.${FORMAT_FILE}-${id}`);
    const format = { format: "incus-backup", version: REPOSITORY_FORMAT, created: new Date().toISOString(), id };
    try {
      await writeFileDurable(candidate, JSON.stringify(format, null, 2) + "\n");
      try {
        await link(candidate, marker);
      } finally {
        await unlink(candidate).catch(() => undefined);
      }
      await syncDir(this.root);
      return true;
    } catch (err) {
      // EEXIST: another run's marker is in place. ENOENT: that run, holding the lock, already
      // tidied our candidate away (cleanupTemp) because the marker is in place. Either way the
      // marker decides; anything else, or no marker after all, is a real failure.
      const code = (err as { code?: string }).code;
      if ((code === "EEXIST" || code === "ENOENT") && (await this.readMarker())) return false;
      throw fsError("initialize repository in", this.root, err);
    }
  }

  /**
   * The repository's id, made now for a repository initialised before repositories had one (the
   * marker is rewritten whole, aside and moved into place). Of two runs doing it at once the last
   * one's id stays, and both return it.
   */
  async ensureId(): Promise<string> {
    const m = await this.marker();
    if (m === undefined) throw new RepositoryError(`${this.root} is not an incus-backup repository`);
    if (typeof m.id === "string") return m.id;
    await writeFileAtomic(join(this.root, FORMAT_FILE), JSON.stringify({ ...m, id: randomBytes(8).toString("hex") }, null, 2) + "\n");
    const id = await this.repositoryId();
    if (id === undefined) throw new RepositoryError(`${this.root}: could not give the repository an id`);
    return id;
  }

  /** In the marker file, beside the id. */
  async serverOwner(): Promise<ServerOwner | undefined> {
    const o = (await this.marker())?.server;
    return isServerOwner(o) ? o : undefined;
  }

  async setServerOwner(owner: ServerOwner): Promise<void> {
    await this.checkLock();
    const m = await this.marker();
    if (m === undefined) throw new RepositoryError(`${this.root} is not an incus-backup repository`);
    await writeFileAtomic(join(this.root, FORMAT_FILE), JSON.stringify({ ...m, server: owner }, null, 2) + "\n");
  }

  private checkFormat(text: string, path: string): Record<string, unknown> {
    let f: { format?: unknown; version?: unknown; id?: unknown; [k: string]: unknown };
    try {
      f = JSON.parse(text) as typeof f;
    } catch {
      throw new RepositoryError(`${path} is not valid JSON: the repository marker is damaged`);
    }
    if (typeof f !== "object" || f === null || f.format !== "incus-backup") {
      throw new RepositoryError(`${path} does not describe an incus-backup repository`);
    }
    if (f.version !== REPOSITORY_FORMAT) {
      throw new RepositoryError(`repository format ${JSON.stringify(f.version)} in ${path} is not supported (this tool reads ${REPOSITORY_FORMAT})`, {
        hint: "Use the incus-backup release that wrote this repository.",
      });
    }
    return f;
  }

  /** Fails early, with a clear message, if the directory cannot be written. */
  async checkWritable(): Promise<void> {
    try {
      await access(this.root, fsc.W_OK);
    } catch (err) {
      throw fsError("write to backup directory", this.root, err);
    }
  }

  /** Every complete version of the given kinds, and the damaged ones found on the way. */
  async list(kinds: readonly Kind[] = KINDS): Promise<Listing> {
    const out: Listing = { versions: [], damaged: [] };
    for (const kind of kinds) {
      const base = join(this.root, KIND_DIRS[kind]);
      for (const parts of await walk(base, KEY_DEPTH[kind])) {
        const key = keyFromParts(kind, parts);
        const names = await dirNames(itemPath(this.root, key));
        // A volume's: its versions, then each cluster member's (@MEMBER/VERSION, see layout.ts).
        const keys = [key, ...(kind === "volume" ? names.map(memberOfDir).filter((m) => m !== undefined).map((member) => ({ ...key, member })) : [])];
        for (const k of keys) {
          for (const version of k === key ? names : await dirNames(itemPath(this.root, k))) {
            if (!isVersion(version)) continue;
            const r = await this.readVersion(k, version);
            if ("problem" in r) out.damaged.push(r);
            else out.versions.push(r);
          }
        }
      }
    }
    return out;
  }

  /**
   * Reads and checks one version's manifest (not its data files: see verifyFile). A volume's
   * version under @MEMBER must name that member; one directly under the volume's directory may
   * name any member or none (a cluster's versions written before volumes were keyed by member),
   * and is listed with the member its manifest names, so it belongs to the same item as the newer.
   */
  async readVersion(key: ItemKey, version: Version): Promise<StoredVersion | DamagedVersion> {
    const dir = versionPath(this.root, key, version);
    const damaged = (problem: string): DamagedVersion => ({ key, version, location: dir, problem });
    let text: string;
    try {
      text = await readFile(join(dir, MANIFEST_FILE), "utf8");
    } catch (err) {
      return damaged((err as { code?: string }).code === "ENOENT" ? `${MANIFEST_FILE} is missing` : `cannot read ${MANIFEST_FILE}: ${errorMessage(err)}`);
    }
    const sums = await readSums(join(dir, SUMS_FILE));
    if (typeof sums === "string") return damaged(sums);
    const expected = sums.get(MANIFEST_FILE);
    const actual = createHash("sha256").update(text).digest("hex");
    if (expected !== actual) return damaged(`${MANIFEST_FILE} does not match its checksum in ${SUMS_FILE}`);
    let manifest: Manifest;
    try {
      manifest = JSON.parse(text) as Manifest;
    } catch {
      return damaged(`${MANIFEST_FILE} is not valid JSON`);
    }
    const problem = manifestProblem(manifest);
    if (problem) return damaged(`${MANIFEST_FILE}: ${problem}`);
    if (
      manifest.kind !== key.kind ||
      manifest.version !== version ||
      manifest.name !== key.name ||
      (key.kind !== "database" && manifest.project !== key.project) ||
      (key.kind === "volume" && manifest.pool !== key.pool) ||
      (key.kind === "volume" && key.member !== undefined && manifest.member !== key.member)
    ) {
      return damaged(`${MANIFEST_FILE} describes another item or version than its directory`);
    }
    for (const f of manifest.files) {
      if (sums.get(f.name) !== f.sha256) return damaged(`${f.name}: checksum in ${MANIFEST_FILE} and ${SUMS_FILE} disagree`);
    }
    return { manifest, location: dir, size: manifest.files.reduce((n, f) => n + f.size, 0) };
  }

  async verifyFile(entry: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<void> {
    await this.checkFileSize(entry, file);
    await this.checkFileSum(entry, file, signal);
  }

  async checkFileSize(entry: StoredVersion, file: FileEntry): Promise<void> {
    const path = join(entry.location, file.name);
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      throw new IntegrityError(`${path}: ${errorMessage(fsError("read", path, err)).replace(/^cannot read [^:]*: /, "")}`);
    }
    if (st.size !== file.size) {
      throw new IntegrityError(`${path}: size is ${st.size} bytes, the manifest says ${file.size}`);
    }
  }

  /** The sha256 half of verifyFile, for a file whose size was checked. */
  private async checkFileSum(entry: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<void> {
    const path = join(entry.location, file.name);
    let sum: string;
    try {
      sum = await sha256File(path, file.size, signal);
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new IntegrityError(`${path}: cannot read: ${errorMessage(err)}`);
    }
    if (sum !== file.sha256) throw new IntegrityError(`${path}: sha256 mismatch (the file is corrupt)`);
  }

  /**
   * The file as a stream, and its check: the sha256 is computed by reading the file a second time
   * beside the stream, in a worker for a large file. Measured against hashing the bytes the stream
   * delivers, that is the faster way here (README: Performance).
   */
  async openFile(entry: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<StoredFile> {
    await this.checkFileSize(entry, file);
    const stream = createReadStream(join(entry.location, file.name), { highWaterMark: READ_BLOCK, ...(signal === undefined ? {} : { signal }) });
    const checked = this.checkFileSum(entry, file, signal);
    checked.catch(() => undefined);
    return { size: file.size, stream, checked };
  }

  async streamFile(entry: StoredVersion, file: FileEntry, signal?: AbortSignal): Promise<Readable> {
    await this.checkFileSize(entry, file);
    return createReadStream(join(entry.location, file.name), { highWaterMark: READ_BLOCK, ...(signal === undefined ? {} : { signal }) });
  }

  async localPath(entry: StoredVersion, file: FileEntry): Promise<string> {
    await this.checkFileSize(entry, file);
    return join(entry.location, file.name);
  }

  /** Beside the archive in the version's directory: removed with the version. */
  async readCatalog(entry: StoredVersion, file: FileEntry): Promise<Buffer | undefined> {
    return readFile(join(entry.location, `${file.name}${CATALOG_SUFFIX}`)).catch(() => undefined);
  }

  async saveCatalog(entry: StoredVersion, file: FileEntry, data: Buffer): Promise<void> {
    const path = join(entry.location, `${file.name}${CATALOG_SUFFIX}`);
    try {
      await writeFileAtomic(path, data);
    } catch (err) {
      throw fsError("write", path, err);
    }
  }

  async readSmallFile(entry: StoredVersion, file: FileEntry): Promise<Buffer> {
    const path = join(entry.location, file.name);
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (err) {
      throw new IntegrityError(`${path}: ${errorMessage(fsError("read", path, err)).replace(/^cannot read [^:]*: /, "")}`);
    }
    if (data.length !== file.size) throw new IntegrityError(`${path}: size is ${data.length} bytes, the manifest says ${file.size}`);
    if (createHash("sha256").update(data).digest("hex") !== file.sha256) throw new IntegrityError(`${path}: sha256 mismatch (the file is corrupt)`);
    return data;
  }

  /** Starts writing a new version of an item in a private temporary directory. */
  async begin(key: ItemKey, version: Version): Promise<DirectoryVersionWriter> {
    await this.checkLock();
    const final = versionPath(this.root, key, version);
    if (await exists(final)) throw new RepositoryError(`${itemLabel(key)} already has a version ${version}`);
    const tmp = join(this.root, TMP_DIR, `${version}-${key.kind}-${randomBytes(6).toString("hex")}`);
    try {
      await mkdirPrivate(tmp);
    } catch (err) {
      throw fsError("create", tmp, err);
    }
    return new DirectoryVersionWriter(key, version, tmp, final, () => this.checkLock());
  }

  /** Removes leftovers of writers that died. Only call while holding the repository lock. */
  async cleanupTemp(): Promise<string[]> {
    const base = join(this.root, TMP_DIR);
    const names = await dirNames(base);
    for (const n of names) await rm(join(base, n), { recursive: true, force: true });
    // Markers a killed initialiser wrote aside. Once the marker is in place, a live initialiser
    // that finds its candidate gone takes the marker as it is (see initialize), so they can all go.
    if (await this.isInitialized()) {
      const candidates = (await readdir(this.root).catch(() => [] as string[])).filter((n) => n.startsWith(`.${FORMAT_FILE}-`));
      for (const n of candidates) await rm(join(this.root, n), { force: true });
    }
    return names;
  }

  /** Deletes one version; its directory is first renamed aside so a crash never leaves half of it listed. */
  async deleteVersion(entry: StoredVersion | DamagedVersion): Promise<void> {
    await this.checkLock();
    const dir = entry.location;
    const doomed = join(this.root, TMP_DIR, `deleting-${randomBytes(6).toString("hex")}`);
    try {
      await mkdirPrivate(join(this.root, TMP_DIR));
      await rename(dir, doomed);
      await syncDir(join(dir, ".."));
      await rm(doomed, { recursive: true, force: true });
    } catch (err) {
      throw fsError("delete", dir, err);
    }
  }

  /**
   * Claims a version name for a new run: the run's start time, moved on by a second while an
   * earlier run already used it. Only call while holding the repository lock.
   */
  async reserveVersion(at: Date, record: Omit<RunRecord, "version">): Promise<Version> {
    const dir = join(this.root, RUNS_DIR);
    try {
      await mkdirPrivate(dir);
    } catch (err) {
      throw fsError("create", dir, err);
    }
    let version = versionAt(at);
    for (;;) {
      const path = join(dir, `${version}.json`);
      if (!(await exists(path))) {
        await this.saveRun({ ...record, version } as RunRecord);
        return version;
      }
      version = nextVersion(version);
    }
  }

  /** Writes (or rewrites) the record of a run. */
  async saveRun(record: RunRecord): Promise<void> {
    const path = join(this.root, RUNS_DIR, `${record.version}.json`);
    try {
      await writeFileAtomic(path, JSON.stringify(record, null, 2) + "\n");
    } catch (err) {
      throw fsError("write", path, err);
    }
  }

  /** Run records, oldest first; unreadable ones are skipped. */
  async listRuns(): Promise<RunRecord[]> {
    const dir = join(this.root, RUNS_DIR);
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => n.endsWith(".json")).sort();
    } catch {
      return [];
    }
    const out: RunRecord[] = [];
    for (const n of names) {
      try {
        const r = JSON.parse(await readFile(join(dir, n), "utf8")) as unknown;
        if (isRunRecord(r) && `${r.version}.json` === n) out.push(r);
      } catch {
        // a damaged run record only affects `status`; skip it
      }
    }
    return out;
  }

  /** Reads state/NAME.json; undefined when it is missing or unreadable (it only feeds status and catch-up). */
  async readState<T>(name: string): Promise<T | undefined> {
    try {
      const v = JSON.parse(await readFile(join(this.root, STATE_DIR, `${name}.json`), "utf8")) as unknown;
      return typeof v === "object" && v !== null ? (v as T) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Writes state/NAME.json atomically. */
  async saveState(name: string, value: unknown): Promise<void> {
    const dir = join(this.root, STATE_DIR);
    const path = join(dir, `${name}.json`);
    try {
      await mkdirPrivate(dir);
      await writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
    } catch (err) {
      throw fsError("write", path, err);
    }
  }

  /**
   * Removes the records of runs none of whose versions is left, keeping the newest `keep` records
   * whatever they hold (the recent history `status` shows). Returns how many were removed. `live`
   * gives the versions left when they are kept elsewhere (a restic repository's state directory).
   */
  async pruneRunRecords(keep = 30, live?: ReadonlySet<string>): Promise<number> {
    const dir = join(this.root, RUNS_DIR);
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => n.endsWith(".json")).sort();
    } catch {
      return 0;
    }
    const left = live ?? new Set((await this.list()).versions.map((v) => v.manifest.version));
    const old = names.slice(0, Math.max(0, names.length - keep)).filter((n) => !left.has(n.slice(0, -".json".length)));
    for (const n of old) await rm(join(dir, n), { force: true });
    return old.length;
  }

  /** Total bytes of all complete versions (for status). */
  async totalSize(): Promise<number> {
    const { versions } = await this.list();
    return versions.reduce((n, v) => n + v.size, 0);
  }

  async lock(command: string, options: LockOptions = {}): Promise<HeldLock> {
    const install = options.install ?? (this.identity === undefined ? undefined : ((await installId(this.identity.stateDir, this.identity.env)) ?? ""));
    const lock = await RepositoryLock.acquire(this.root, command, { ...options, ...(install === undefined ? {} : { install }) });
    const held: HeldLock = {
      check: () => lock.check(),
      release: async () => {
        if (this.held === held) this.held = undefined;
        await lock.release();
      },
    };
    this.held = held;
    return held;
  }

  /**
   * Throws LockLostError if this process took the lock and it is no longer ours: the writes that
   * a second writer would spoil (a version begun or committed, one deleted) check it first.
   */
  async checkLock(): Promise<void> {
    await this.held?.check();
  }

  lockHolder(): Promise<LockInfo | undefined> {
    return readLock(join(this.root, LOCK_FILE));
  }

  forceUnlock(): Promise<LockInfo | undefined> {
    return forceUnlock(this.root);
  }
}

/** A run record with the fields `status` and prune rely on, each of its type (damaged ones are skipped). */
function isRunRecord(v: unknown): v is RunRecord {
  const r = v as Partial<Record<keyof RunRecord, unknown>> | null;
  const time = (t: unknown) => typeof t === "string" && !Number.isNaN(Date.parse(t));
  const item = (i: unknown) => {
    const x = i as Record<string, unknown> | null;
    return (
      typeof x === "object" &&
      x !== null &&
      typeof x.label === "string" &&
      typeof x.ok === "boolean" &&
      (x.error === undefined || typeof x.error === "string") &&
      (x.bytes === undefined || typeof x.bytes === "number") &&
      (x.seconds === undefined || typeof x.seconds === "number")
    );
  };
  return (
    typeof r === "object" &&
    r !== null &&
    typeof r.version === "string" &&
    isVersion(r.version) &&
    typeof r.command === "string" &&
    time(r.started) &&
    (r.finished === undefined || time(r.finished)) &&
    ["running", "ok", "partial", "failed", "interrupted"].includes(r.status as string) &&
    (r.items === undefined || (Array.isArray(r.items) && r.items.every(item))) &&
    (r.skipped === undefined || (Array.isArray(r.skipped) && r.skipped.every(skipped)))
  );
}

function skipped(s: unknown): boolean {
  const x = s as Record<string, unknown> | null;
  return typeof x === "object" && x !== null && typeof x.label === "string" && typeof x.reason === "string";
}

/** Builds one version in a temp directory; `commit` makes it appear, complete, in one rename. */
export class DirectoryVersionWriter implements VersionWriter {
  private readonly files: FileEntry[] = [];
  private done = false;

  constructor(
    readonly key: ItemKey,
    readonly version: Version,
    readonly tmpDir: string,
    readonly finalDir: string,
    /** Throws if the repository lock is no longer this run's (see DirectoryStore.checkLock). */
    private readonly checkLock: () => Promise<void> = async () => {},
  ) {}

  /** A new data file; the caller streams into it and ends it. */
  async createFile(name: string, tee?: Hash): Promise<HashingFileWriter> {
    const path = join(this.tmpDir, name);
    try {
      return await HashingFileWriter.create(path, tee);
    } catch (err) {
      throw fsError("create", path, err);
    }
  }

  /** Deletes a file begun in this version (a transfer that is retried differently). */
  async removeFile(name: string): Promise<void> {
    await rm(join(this.tmpDir, name), { force: true });
  }

  /** Records a finished data file for the manifest. */
  addFile(entry: FileEntry): void {
    this.files.push(entry);
  }

  /** Writes a small file (JSON, SQL text) and records it. */
  async writeFile(name: string, data: string | Buffer): Promise<FileEntry> {
    const path = join(this.tmpDir, name);
    try {
      const entry = await writeFileDurable(path, data);
      this.files.push(entry);
      return entry;
    } catch (err) {
      throw fsError("write", path, err);
    }
  }

  /**
   * Writes the manifest and SHA256SUMS, syncs everything, and renames the directory into place.
   * Until this returns, nothing of the version is visible to `list`.
   */
  async commit(manifest: Omit<Manifest, "files">): Promise<StoredVersion> {
    const full: Manifest = { ...manifest, files: [...this.files] } as Manifest;
    const text = JSON.stringify(full, null, 2) + "\n";
    await this.checkLock();
    try {
      const m = await writeFileDurable(join(this.tmpDir, MANIFEST_FILE), text);
      const lines = [...this.files, m].map((f) => `${f.sha256}  ${f.name}\n`).join("");
      await writeFileDurable(join(this.tmpDir, SUMS_FILE), lines);
      await syncDir(this.tmpDir);
      const parent = join(this.finalDir, "..");
      await mkdirPrivate(parent);
      await rename(this.tmpDir, this.finalDir);
      await syncDir(parent);
    } catch (err) {
      throw fsError("save backup to", this.finalDir, err);
    }
    this.done = true;
    return { manifest: full, location: this.finalDir, size: this.files.reduce((n, f) => n + f.size, 0) };
  }

  /** Throws the partial version away (after a failure or an interrupt). */
  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await rm(this.tmpDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * The sha256 of a file of `size` bytes (its checked size), read in large blocks into one reused
 * buffer. A large file is hashed in a worker thread: a restore hashes an archive while it uploads
 * it, and hashing on the main thread would slow the upload down by as much.
 */
export async function sha256File(path: string, size: number, signal?: AbortSignal): Promise<string> {
  // One worker at a time: each costs memory (a heap of its own), and one is enough to keep the
  // main thread free for the transfers.
  if (size >= WORKER_THRESHOLD && hashWorkers === 0) {
    hashWorkers++;
    try {
      return await sha256InWorker(path, signal);
    } finally {
      hashWorkers--;
    }
  }
  const hash = createHash("sha256");
  const buf = Buffer.allocUnsafe(HASH_BLOCK);
  const fh = await open(path, "r");
  try {
    for (;;) {
      if (signal?.aborted) throw new InterruptedError();
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return hash.digest("hex");
}

/** The bundle is one file, so the worker is given as source. */
const HASH_WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const fs = require("node:fs");
const { createHash } = require("node:crypto");
try {
  const hash = createHash("sha256");
  const buf = Buffer.allocUnsafe(${1024 * 1024});
  const fd = fs.openSync(workerData.path, "r");
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  parentPort.postMessage({ sha256: hash.digest("hex") });
} catch (err) {
  parentPort.postMessage({ error: err.message });
}
`;

const WORKER_THRESHOLD = 64 * 1024 * 1024;
let hashWorkers = 0;

function sha256InWorker(path: string, signal?: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    // A small heap: the worker only reads and hashes (memory counts: peak RSS stays under 150 MB).
    const worker = new Worker(HASH_WORKER, {
      eval: true,
      workerData: { path },
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4, codeRangeSizeMb: 8 },
    });
    const onAbort = () => {
      void worker.terminate();
      reject(new InterruptedError());
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    worker.once("message", (m: { sha256?: string; error?: string }) => {
      signal?.removeEventListener("abort", onAbort);
      void worker.terminate();
      if (m.sha256) resolve(m.sha256);
      else reject(new Error(m.error ?? "hashing failed"));
    });
    worker.once("error", (err) => {
      signal?.removeEventListener("abort", onAbort);
      reject(err);
    });
  });
}

const HASH_BLOCK = 4 * 1024 * 1024;

async function readSums(path: string): Promise<Map<string, string> | string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    return (err as { code?: string }).code === "ENOENT" ? `${SUMS_FILE} is missing` : `cannot read ${SUMS_FILE}: ${errorMessage(err)}`;
  }
  const map = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (!line) continue;
    const m = /^([0-9a-f]{64}) [ *](.+)$/.exec(line);
    if (!m) return `${SUMS_FILE} is malformed`;
    map.set(m[2]!, m[1]!);
  }
  return map;
}

/** Subdirectory names of `dir` (none if it does not exist). */
async function dirNames(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch (err) {
    if ((err as { code?: string }).code === "ENOENT" || (err as { code?: string }).code === "ENOTDIR") return [];
    throw fsError("read", dir, err);
  }
}

/** All directory paths exactly `depth` levels below `base`, as component lists. */
async function walk(base: string, depth: number): Promise<string[][]> {
  if (depth === 0) return [[]];
  const out: string[][] = [];
  for (const name of await dirNames(base)) {
    for (const rest of await walk(join(base, name), depth - 1)) out.push([name, ...rest]);
  }
  return out;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
