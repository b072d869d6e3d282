// An in-memory Store (src/repository/store.ts), following each method's contract, for engine tests
// that must not touch a disk: versions with their files as Buffers, journal entries, a lock, run
// records and service state. Faults: a full disk (every file sink fails with ENOSPC) and stored
// files corrupted in place.

import { createHash, randomBytes, type Hash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { IntegrityError, LockedError, LockLostError, RepositoryError } from "../../../src/errors";
import { MANIFEST_FILE, type FileEntry, type Manifest } from "../../../src/core/manifest";
import { KINDS, itemLabel, keyMember, type ItemKey, type Kind } from "../../../src/core/selection";
import { nextVersion, versionAt, type Version } from "../../../src/core/version";
import { entryProblem } from "../../../src/repository/journal";
import type {
  DamagedVersion,
  FileSink,
  HeldLock,
  ServerOwner,
  JournalEntry,
  JournalStore,
  Listing,
  LockInfo,
  LockOptions,
  RunRecord,
  Store,
  StoredFile,
  StoredVersion,
  VersionWriter,
} from "../../../src/repository/store";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const clone = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

/** Where a version of an item is: its location, which the store also uses as its key (a volume's member is part of it, as on disk). */
function locationOf(key: ItemKey, version: Version): string {
  const member = keyMember(key);
  return `memory:/${[key.kind, key.project, key.pool, key.name, member === undefined ? undefined : `@${member}`, version].filter((p) => p !== undefined && p !== "").join("/")}`;
}

interface Stored {
  manifest: Manifest;
  files: Map<string, Buffer>;
}

/** An error as Node's fs gives it for a full disk. */
export function diskFullError(): NodeJS.ErrnoException {
  return Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC", errno: -28, syscall: "write" });
}

export class MemoryJournal implements JournalStore {
  /** Entries by id, as written (JSON text, as a file would hold them). */
  readonly entries = new Map<string, string>();

  async write(entry: JournalEntry): Promise<void> {
    this.entries.set(entry.id, JSON.stringify(entry));
  }

  async remove(id: string): Promise<void> {
    this.entries.delete(id);
  }

  async list(): Promise<{ entries: JournalEntry[]; problems: string[] }> {
    const entries: JournalEntry[] = [];
    const problems: string[] = [];
    for (const id of [...this.entries.keys()].sort()) {
      let e: unknown;
      try {
        e = JSON.parse(this.entries.get(id)!);
      } catch {
        problems.push(`journal entry ${id} is unreadable; check by hand, then delete it`);
        continue;
      }
      // The same check as the directory's journal: a damaged entry is never acted on.
      const problem = entryProblem(e, id);
      if (problem) problems.push(`journal entry ${id} is damaged (${problem})`);
      else entries.push(e as JournalEntry);
    }
    return { entries, problems };
  }

  /** The entries waiting, parsed (for assertions). */
  all(): JournalEntry[] {
    return [...this.entries.values()].map((t) => JSON.parse(t) as JournalEntry);
  }
}

export class MemoryStore implements Store {
  readonly location = "memory:/";
  readonly journal = new MemoryJournal();
  initialized: boolean;
  /** Versions by location. */
  readonly versions = new Map<string, Stored>();
  /** Damaged versions `list` reports (tests push them). */
  readonly damaged: DamagedVersion[] = [];
  readonly runs = new Map<Version, RunRecord>();
  readonly state = new Map<string, string>();
  /** Writers begun and neither committed nor aborted, by a temp name (what cleanupTemp removes). */
  readonly open = new Map<string, MemoryVersionWriter>();
  /** Bytes a file sink takes before it fails with ENOSPC; undefined: the disk is not full. */
  diskFullAfter: number | undefined;
  private held: LockInfo | undefined;
  private heldLock: HeldLock | undefined;

  /** Another run takes the lock over (as after this one was frozen past the stale limit). */
  takeOver(command = "the other run"): void {
    const at = new Date().toISOString();
    this.held = { host: "memory", pid: 1, command, started: at, refreshed: at, id: "other" };
  }

  constructor(options: { initialized?: boolean } = {}) {
    this.initialized = options.initialized ?? true;
  }

  /** Every file sink from now on fails with ENOSPC once it has taken `afterBytes` bytes. */
  fillDisk(afterBytes = 0): void {
    this.diskFullAfter = afterBytes;
  }

  /** The repository's id once initialised. */
  id = "0123456789abcdef";

  async repositoryId(): Promise<string | undefined> {
    return this.initialized ? this.id : undefined;
  }

  async ensureId(): Promise<string> {
    if (!this.initialized) throw new RepositoryError(`${this.location} is not an incus-backup repository`);
    return this.id;
  }

  async isInitialized(): Promise<boolean> {
    return this.initialized;
  }

  async initialize(): Promise<boolean> {
    const made = !this.initialized;
    this.initialized = true;
    return made;
  }

  async checkWritable(): Promise<void> {}

  async list(kinds: readonly Kind[] = KINDS): Promise<Listing> {
    const versions = [...this.versions.entries()]
      .filter(([, s]) => kinds.includes(s.manifest.kind))
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([location, s]) => this.storedVersion(location, s));
    return { versions, damaged: this.damaged.filter((d) => kinds.includes(d.key.kind)) };
  }

  async checkFileSize(v: StoredVersion, file: FileEntry): Promise<void> {
    this.bytesOf(v, file);
  }

  async verifyFile(v: StoredVersion, file: FileEntry): Promise<void> {
    const bytes = this.bytesOf(v, file);
    if (sha256(bytes) !== file.sha256) throw new IntegrityError(`${v.location}/${file.name}: sha256 mismatch (the file is corrupt)`);
  }

  /** The bytes as a stream in 64 KiB chunks; `checked` settles on the sha256 of the bytes it delivered. */
  async openFile(v: StoredVersion, file: FileEntry): Promise<StoredFile> {
    const bytes = this.bytesOf(v, file);
    const hash = createHash("sha256");
    let settle!: { resolve: () => void; reject: (e: Error) => void };
    const checked = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    checked.catch(() => undefined);
    let offset = 0;
    const stream = new Readable({
      read() {
        if (offset >= bytes.length) return void this.push(null);
        const chunk = Buffer.from(bytes.subarray(offset, offset + (64 << 10)));
        offset += chunk.length;
        hash.update(chunk);
        // The verdict comes with the last bytes, before they are read.
        if (offset >= bytes.length) {
          if (hash.digest("hex") === file.sha256) settle.resolve();
          else settle.reject(new IntegrityError(`${v.location}/${file.name}: sha256 mismatch (the file is corrupt)`));
        }
        this.push(chunk);
      },
      destroy(err, done) {
        // Read only in part: the check cannot say the file is sound.
        if (offset < bytes.length) settle.reject(new IntegrityError(`${v.location}/${file.name}: read only in part`));
        done(err);
      },
    });
    return { size: file.size, stream, checked };
  }

  async streamFile(v: StoredVersion, file: FileEntry): Promise<Readable> {
    return Readable.from([Buffer.from(this.bytesOf(v, file))]);
  }

  readonly catalogs = new Map<string, Buffer>();

  async readCatalog(v: StoredVersion, file: FileEntry): Promise<Buffer | undefined> {
    return this.catalogs.get(`${v.location}/${file.name}`);
  }

  async saveCatalog(v: StoredVersion, file: FileEntry, data: Buffer): Promise<void> {
    this.catalogs.set(`${v.location}/${file.name}`, data);
  }

  async readSmallFile(v: StoredVersion, file: FileEntry): Promise<Buffer> {
    await this.verifyFile(v, file);
    return Buffer.from(this.bytesOf(v, file));
  }

  owner: ServerOwner | undefined;

  async serverOwner(): Promise<ServerOwner | undefined> {
    return this.owner && { ...this.owner };
  }

  async setServerOwner(owner: ServerOwner): Promise<void> {
    await this.checkLock();
    this.owner = { ...owner };
  }

  /** As the real stores do before each write: throws LockLostError once the lock is another run's. */
  async checkLock(): Promise<void> {
    await this.heldLock?.check();
  }

  async begin(key: ItemKey, version: Version): Promise<VersionWriter> {
    await this.checkLock();
    if (this.versions.has(locationOf(key, version))) throw new RepositoryError(`${itemLabel(key)} already has a version ${version}`);
    const tmp = `${version}-${key.kind}-${randomBytes(6).toString("hex")}`;
    const w = new MemoryVersionWriter(this, key, version, () => this.open.delete(tmp));
    this.open.set(tmp, w);
    return w;
  }

  async deleteVersion(v: StoredVersion | DamagedVersion): Promise<void> {
    await this.checkLock();
    this.versions.delete(v.location);
    const i = this.damaged.findIndex((d) => d.location === v.location);
    if (i >= 0) this.damaged.splice(i, 1);
  }

  async cleanupTemp(): Promise<string[]> {
    const names = [...this.open.keys()];
    this.open.clear();
    return names;
  }

  async totalSize(): Promise<number> {
    return (await this.list()).versions.reduce((n, v) => n + v.size, 0);
  }

  async reserveVersion(at: Date, record: Omit<RunRecord, "version">): Promise<Version> {
    let version = versionAt(at);
    while (this.runs.has(version)) version = nextVersion(version);
    await this.saveRun({ ...record, version } as RunRecord);
    return version;
  }

  async saveRun(record: RunRecord): Promise<void> {
    this.runs.set(record.version, clone(record));
  }

  async listRuns(): Promise<RunRecord[]> {
    return [...this.runs.keys()].sort().map((v) => clone(this.runs.get(v)!));
  }

  async pruneRunRecords(keep = 30): Promise<number> {
    const names = [...this.runs.keys()].sort();
    const live = new Set([...this.versions.values()].map((s) => s.manifest.version));
    const old = names.slice(0, Math.max(0, names.length - keep)).filter((n) => !live.has(n));
    for (const n of old) this.runs.delete(n);
    return old.length;
  }

  async readState<T>(name: string): Promise<T | undefined> {
    const text = this.state.get(name);
    return text === undefined ? undefined : (JSON.parse(text) as T);
  }

  async saveState(name: string, value: unknown): Promise<void> {
    this.state.set(name, JSON.stringify(value));
  }

  async lock(command: string, options: LockOptions = {}): Promise<HeldLock> {
    if (this.held) throw new LockedError(`the repository is locked by ${this.held.command} (pid ${this.held.pid} on ${this.held.host}, since ${this.held.started})`);
    const at = (options.now?.() ?? new Date()).toISOString();
    const info: LockInfo = { host: "memory", pid: process.pid, command, started: at, refreshed: at, id: randomBytes(6).toString("hex") };
    this.held = info;
    const held = {
      release: async () => {
        if (this.held?.id === info.id) this.held = undefined;
        if (this.heldLock === held) this.heldLock = undefined;
      },
      check: async () => {
        if (this.held?.id !== info.id) throw new LockLostError(`the repository lock of this run was taken over by ${this.held?.command ?? "nobody"}; stopped before writing more`);
      },
    };
    this.heldLock = held;
    return held;
  }

  async lockHolder(): Promise<LockInfo | undefined> {
    return this.held && { ...this.held };
  }

  async forceUnlock(): Promise<LockInfo | undefined> {
    const was = this.held;
    this.held = undefined;
    return was;
  }

  // --- for tests ---

  /** Stores a complete version at once (what a backup would have written). */
  put(manifest: Omit<Manifest, "files">, files: Record<string, Buffer>): StoredVersion {
    const entries = Object.entries(files).map(([name, b]) => ({ name, size: b.length, sha256: sha256(b) }));
    const full = { ...clone(manifest), files: entries } as Manifest;
    const location = locationOf(full, full.version);
    const stored: Stored = { manifest: full, files: new Map(Object.entries(files).map(([n, b]) => [n, Buffer.from(b)])) };
    this.versions.set(location, stored);
    return this.storedVersion(location, stored);
  }

  /** The stored bytes of a file of a version. */
  file(key: ItemKey, version: Version, name: string): Buffer | undefined {
    return this.versions.get(locationOf(key, version))?.files.get(name);
  }

  /** Flips a byte of a stored file (its size stays the same): a file rotten on disk. */
  corrupt(v: StoredVersion, name: string, at: number): void {
    const b = this.versions.get(v.location)?.files.get(name);
    if (!b) throw new Error(`no file ${name} in ${v.location}`);
    const i = at < 0 ? b.length + at : at;
    b[i] = b[i]! ^ 0xff;
  }

  commitVersion(location: string, stored: Stored): StoredVersion {
    this.versions.set(location, stored);
    return this.storedVersion(location, stored);
  }

  private storedVersion(location: string, s: Stored): StoredVersion {
    return { manifest: clone(s.manifest), size: s.manifest.files.reduce((n, f) => n + f.size, 0), location };
  }

  private bytesOf(v: StoredVersion, file: FileEntry): Buffer {
    const b = this.versions.get(v.location)?.files.get(file.name);
    if (!b) throw new IntegrityError(`${v.location}/${file.name}: missing`);
    if (b.length !== file.size) throw new IntegrityError(`${v.location}/${file.name}: size is ${b.length} bytes, the manifest says ${file.size}`);
    return b;
  }
}

/** A file being written: hashed and sized on the way; its bytes reach the version when it finishes. */
class MemorySink extends Writable {
  private readonly hash = createHash("sha256");
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private done: FileEntry | undefined;

  constructor(
    private readonly name: string,
    private readonly tee: Hash | undefined,
    private readonly failAfter: number | undefined,
    private readonly onFinish: (bytes: Buffer) => void,
  ) {
    super();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.failAfter !== undefined && this.size + chunk.length > this.failAfter) {
      // As a file on a full disk: the write fails a moment later.
      setImmediate(() => done(diskFullError()));
      return;
    }
    this.hash.update(chunk);
    this.tee?.update(chunk);
    this.chunks.push(Buffer.from(chunk));
    this.size += chunk.length;
    done();
  }

  override _final(done: (err?: Error | null) => void): void {
    this.done = { name: this.name, size: this.size, sha256: this.hash.digest("hex") };
    this.onFinish(Buffer.concat(this.chunks));
    done();
  }

  entry(): FileEntry {
    if (!this.done) throw new Error(`${this.name} has not finished`);
    return this.done;
  }
}

export class MemoryVersionWriter implements VersionWriter {
  /** Files written so far (finished sinks and small files), by name. */
  readonly files = new Map<string, Buffer>();
  private readonly recorded: FileEntry[] = [];
  private finished = false;

  constructor(
    private readonly store: MemoryStore,
    readonly key: ItemKey,
    readonly version: Version,
    private readonly close: () => void,
  ) {}

  async createFile(name: string, tee?: Hash): Promise<FileSink> {
    if (this.finished) throw new Error("the version is finished");
    if (this.files.has(name)) throw new RepositoryError(`${name} exists already`);
    return new MemorySink(name, tee, this.store.diskFullAfter, (bytes) => this.files.set(name, bytes));
  }

  async removeFile(name: string): Promise<void> {
    this.files.delete(name);
  }

  addFile(entry: FileEntry): void {
    this.recorded.push(entry);
  }

  async writeFile(name: string, data: string | Buffer): Promise<FileEntry> {
    const b = Buffer.from(data);
    this.files.set(name, b);
    const entry = { name, size: b.length, sha256: sha256(b) };
    this.recorded.push(entry);
    return entry;
  }

  async commit(manifest: Omit<Manifest, "files">): Promise<StoredVersion> {
    if (this.finished) throw new Error("the version is finished");
    await this.store.checkLock();
    if (manifest.kind !== this.key.kind || manifest.name !== this.key.name || manifest.project !== this.key.project || keyMember(manifest) !== keyMember(this.key) || manifest.version !== this.version) {
      throw new Error(`the manifest describes another item or version than the writer (${itemLabel(manifest)} ${manifest.version})`);
    }
    const files = new Map<string, Buffer>();
    for (const f of this.recorded) {
      const b = this.files.get(f.name);
      if (f.name === MANIFEST_FILE) throw new Error(`${MANIFEST_FILE} is not a data file`);
      if (!b || b.length !== f.size || sha256(b) !== f.sha256) throw new Error(`${f.name} was recorded but not written as recorded`);
      files.set(f.name, b);
    }
    this.finished = true;
    this.close();
    const full = { ...clone(manifest), files: clone(this.recorded) } as Manifest;
    return this.store.commitVersion(locationOf(this.key, this.version), { manifest: full, files });
  }

  async abort(): Promise<void> {
    if (this.finished) return;
    this.finished = true;
    this.files.clear();
    this.close();
  }
}
