// Durable file writing: private modes, hashing on the way, fsync of files and directories.

import { WRITE_BUFFER } from "../chunks";
import { createHash, randomBytes, type Hash } from "node:crypto";
import { constants } from "node:fs";
import { chmod, mkdir, open, rename, type FileHandle } from "node:fs/promises";
import { dirname } from "node:path";
import { Writable } from "node:stream";
import type { FileEntry } from "../core/manifest";
import { RepositoryError, errorMessage } from "../errors";
import { basename } from "node:path";

/** Backups hold secrets: files are 0600 and directories 0700, whatever the umask. */
export const FILE_MODE = 0o600;
export const DIR_MODE = 0o700;

/** mkdir -p with 0700 on every directory it creates. */
export async function mkdirPrivate(path: string): Promise<void> {
  const first = await mkdir(path, { recursive: true, mode: DIR_MODE });
  if (first === undefined) return;
  // mkdir's mode is filtered by the umask; set it explicitly on each new level.
  let p = path;
  for (;;) {
    await chmod(p, DIR_MODE);
    if (p === first) break;
    p = dirname(p);
  }
}

/** fsync a directory so a rename or create inside it survives a crash. */
export async function syncDir(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Bytes a writer lets pile up in the page cache before it asks the kernel to write them out.
 * Without this, the kernel holds back gigabytes (its limit is a share of RAM) and the final fsync
 * then waits for all of them; with it, the disk writes while the download runs and the final
 * fsync has at most this much left to do.
 */
export const FLUSH_EVERY = 64 * 1024 * 1024;

/**
 * A Writable into a new private file that computes the sha256 and size of what passes through,
 * and fsyncs the file before it reports being finished. Every FLUSH_EVERY bytes it starts an
 * fdatasync in the background; an error from it (NFS may report a full disk only then) fails the
 * next write.
 */
export class HashingFileWriter extends Writable {
  readonly path: string;
  private readonly hash: Hash = createHash("sha256");
  private size = 0;
  private unflushed = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushing: Promise<void> | undefined;
  private flushError: Error | undefined;
  private constructor(
    path: string,
    private readonly fh: FileHandle,
    private readonly tee: Hash | undefined,
    private readonly flushEvery: number,
  ) {
    super({ highWaterMark: WRITE_BUFFER });
    this.path = path;
  }

  /**
   * `tee` also receives every byte (images: the fingerprint is the hash of all parts together).
   * `flushEvery` (default FLUSH_EVERY) is there for tests, which prove the flushing on less data.
   */
  static async create(path: string, tee?: Hash, flushEvery = FLUSH_EVERY): Promise<HashingFileWriter> {
    const fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, FILE_MODE);
    await fh.chmod(FILE_MODE);
    return new HashingFileWriter(path, fh, tee, flushEvery);
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.take([chunk], done);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, done: (err?: Error | null) => void): void {
    this.take(
      chunks.map((c) => c.chunk),
      done,
    );
  }

  /**
   * Hashes the chunks and collects them until WRITE_BUFFER bytes are waiting, then writes them
   * with one writev. A download arrives in pieces of 16 to 64 KiB; a write each costs twice the
   * CPU of a write per MiB, and CPU is what parallel backups on a small host run short of.
   */
  private take(buffers: Buffer[], done: (err?: Error | null) => void): void {
    if (this.flushError) return done(this.flushError);
    for (const b of buffers) {
      this.hash.update(b);
      this.tee?.update(b);
      this.size += b.length;
      this.pendingBytes += b.length;
      this.pending.push(b);
    }
    if (this.pendingBytes < WRITE_BUFFER) return done();
    this.writePending().then(() => this.written(done), done);
  }

  private async writePending(): Promise<void> {
    const buffers = this.pending;
    const n = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    if (n === 0) return;
    await writevAll(this.fh, buffers);
    this.unflushed += n;
  }

  /** After a write: start a background flush when enough has piled up and none is running. */
  private written(done: (err?: Error | null) => void): void {
    if (this.unflushed >= this.flushEvery && this.flushing === undefined) {
      this.unflushed = 0;
      this.flushing = this.fh.datasync().then(
        () => {
          this.flushing = undefined;
        },
        (err: Error) => {
          this.flushing = undefined;
          this.flushError ??= err;
        },
      );
    }
    done();
  }

  override _final(done: (err?: Error | null) => void): void {
    this.writePending()
      .then(() => this.flushing)
      .then(() => {
        if (this.flushError) throw this.flushError;
        return this.fh.sync();
      })
      .then(() => this.fh.close())
      .then(() => done(), done);
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    Promise.resolve(this.flushing)
      .then(() => this.fh.close())
      .then(
        () => done(err),
        () => done(err),
      );
  }

  /** The entry for the manifest; valid once the stream has finished. */
  entry(): FileEntry {
    return { name: basename(this.path), size: this.size, sha256: this.hash.copy().digest("hex") };
  }
}

async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}

async function writevAll(fh: FileHandle, bufs: Buffer[]): Promise<void> {
  // writev may write partially; fall back to sequential writes for the remainder.
  const total = bufs.reduce((n, b) => n + b.length, 0);
  const { bytesWritten } = await fh.writev(bufs);
  if (bytesWritten === total) return;
  let skip = bytesWritten;
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    await writeAll(fh, b.subarray(skip));
    skip = 0;
  }
}

/** Writes a small file durably under a new name: temp file, fsync, rename, fsync of the directory. */
export async function writeFileAtomic(path: string, data: string | Buffer): Promise<void> {
  // Random, not only pid and time: two writes of one process to the same path may share a millisecond.
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, FILE_MODE);
  try {
    await fh.chmod(FILE_MODE);
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await syncDir(dirname(path));
}

/** Writes a small new file in a directory that will be synced later (inside a version being built). */
export async function writeFileDurable(path: string, data: string | Buffer): Promise<FileEntry> {
  const w = await HashingFileWriter.create(path);
  await new Promise<void>((resolve, reject) => {
    w.on("error", reject);
    // end's callback also gets a write error (a full disk): resolving then would link or
    // commit a file that was never written.
    w.end(typeof data === "string" ? Buffer.from(data) : data, (err?: Error | null) => (err ? reject(err) : resolve()));
  });
  return w.entry();
}

/** Turns a filesystem error into a one-line repository error naming the path. */
export function fsError(action: string, path: string, err: unknown): RepositoryError {
  const code = (err as { code?: string }).code;
  const reason =
    code === "ENOSPC"
      ? "no space left on device"
      : code === "EROFS"
        ? "read-only file system"
        : code === "EACCES" || code === "EPERM"
          ? "permission denied"
          : code === "ENOENT"
            ? "no such file or directory"
            : code === "EDQUOT"
              ? "disk quota exceeded"
              : errorMessage(err);
  return new RepositoryError(`cannot ${action} ${path}: ${reason}`, { cause: err });
}
