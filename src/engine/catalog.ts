// The file catalog of a backup archive: every entry of the instance's or volume's file system (and
// of each snapshot in the archive) with what `ls -l` shows, read once from the archive and kept
// beside the version, so that listing a version again reads a few kilobytes instead of gigabytes.
//
// An Incus backup archive keeps a container's files under backup/container/rootfs/ and a custom
// filesystem volume's under backup/volume/; snapshots come first, under backup/snapshots/NAME/rootfs/
// and backup/volume-snapshots/NAME/. Paths here are as the instance sees them: "/etc/hostname".

import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip, createGzip, gzipSync } from "node:zlib";
import type { ReadEntry } from "tar";
import { UsageError } from "../errors";

export const CATALOG_FORMAT = 1;

export type EntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

export interface CatalogEntry {
  /** "" for the item as it was, else the snapshot's name. */
  snapshot: string;
  /** Absolute, as the instance sees it: "/" for the root itself. */
  path: string;
  type: EntryType;
  /** Permission bits, with setuid, setgid and sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  user?: string;
  group?: string;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** A symlink's target as stored; a hard link's other path (as the instance sees it). */
  link?: string;
}

/** The first line of a stored catalog: what it describes, so that a stale one is never used. */
export interface CatalogHeader {
  format: typeof CATALOG_FORMAT;
  /** The archive's file name and sha256 in the version. */
  file: string;
  sha256: string;
  entries: number;
  snapshots: string[];
}

export type ArchiveKind = "instance" | "volume";

const TYPES: Record<string, EntryType> = {
  File: "file",
  OldFile: "file",
  ContiguousFile: "file",
  Directory: "dir",
  SymbolicLink: "symlink",
  Link: "hardlink",
  CharacterDevice: "char",
  BlockDevice: "block",
  FIFO: "fifo",
};

/**
 * Where an archive path lands: the snapshot ("" for the item itself) and the path inside it, or
 * undefined for the archive's own files (index.yaml, metadata.yaml, templates).
 */
export function locate(kind: ArchiveKind, archivePath: string): { snapshot: string; path: string } | undefined {
  const p = archivePath.replace(/^\.\//, "").replace(/\/+$/, "");
  const m =
    kind === "instance"
      ? /^backup\/(?:container\/rootfs|snapshots\/([^/]+)\/rootfs)(\/.*)?$/.exec(p)
      : /^backup\/(?:volume|volume-snapshots\/([^/]+))(\/.*)?$/.exec(p);
  if (!m) return undefined;
  return { snapshot: m[1] ?? "", path: m[2] ?? "/" };
}

/** The archive path of a path inside the item (or one of its snapshots): the reverse of locate. */
export function archivePathOf(kind: ArchiveKind, snapshot: string, path: string): string {
  const base = kind === "instance" ? (snapshot ? `backup/snapshots/${snapshot}/rootfs` : "backup/container/rootfs") : snapshot ? `backup/volume-snapshots/${snapshot}` : "backup/volume";
  return path === "/" ? base : `${base}${path}`;
}

/** The catalog entry of a tar entry, or undefined if it is outside the item's file system. */
export function entryOf(kind: ArchiveKind, e: Pick<ReadEntry, "path" | "type" | "mode" | "uid" | "gid" | "uname" | "gname" | "size" | "mtime" | "linkpath">): CatalogEntry | undefined {
  const at = locate(kind, e.path);
  const type = TYPES[e.type];
  if (!at || !type) return undefined;
  const out: CatalogEntry = {
    snapshot: at.snapshot,
    path: at.path,
    type,
    mode: (e.mode ?? 0) & 0o7777,
    uid: e.uid ?? 0,
    gid: e.gid ?? 0,
    size: type === "file" ? (e.size ?? 0) : 0,
    mtime: e.mtime ? Math.floor(e.mtime.getTime() / 1000) : 0,
  };
  if (e.uname) out.user = e.uname;
  if (e.gname) out.group = e.gname;
  if (type === "symlink" && e.linkpath !== undefined) out.link = e.linkpath;
  if (type === "hardlink" && e.linkpath !== undefined) out.link = locate(kind, e.linkpath)?.path ?? e.linkpath;
  return out;
}

/** Writes catalog lines, gzipped: the header, then one JSON array per entry. */
export class CatalogWriter {
  private readonly gzip = createGzip({ level: 6 });
  private readonly chunks: Buffer[] = [];
  private entries = 0;
  private readonly snapshots = new Set<string>();
  private readonly body: string[] = [];
  private pendingBytes = 0;

  constructor() {
    this.gzip.on("data", (c: Buffer) => this.chunks.push(c));
  }

  add(e: CatalogEntry): void {
    this.entries++;
    if (e.snapshot) this.snapshots.add(e.snapshot);
    const line = JSON.stringify([e.snapshot, e.path, e.type, e.mode, e.uid, e.gid, e.size, e.mtime, e.link ?? null, e.user ?? null, e.group ?? null]);
    this.body.push(line);
    this.pendingBytes += line.length + 1;
    if (this.pendingBytes > 1 << 20) this.flushBody();
  }

  private flushBody(): void {
    if (this.body.length === 0) return;
    this.gzip.write(`${this.body.join("\n")}\n`);
    this.body.length = 0;
    this.pendingBytes = 0;
  }

  /** The stored form: a header line, then the entries; gzipped. */
  async finish(file: string, sha256: string): Promise<{ data: Buffer; header: CatalogHeader }> {
    this.flushBody();
    this.gzip.end();
    await new Promise<void>((resolve, reject) => {
      this.gzip.on("end", resolve);
      this.gzip.on("error", reject);
    });
    const header: CatalogHeader = { format: CATALOG_FORMAT, file, sha256, entries: this.entries, snapshots: [...this.snapshots].sort() };
    // The header goes first, in a gzip member of its own (gzip readers join members).
    return { data: Buffer.concat([gzipSync(`${JSON.stringify(header)}\n`), ...this.chunks]), header };
  }
}

/**
 * Reads a stored catalog, handing every entry to `onEntry`. Returns its header, or undefined if
 * it is not a catalog of this archive (another format, another sha256, unreadable): the caller
 * then builds it again from the archive.
 */
export async function readCatalog(data: Buffer, file: string, sha256: string, onEntry: (e: CatalogEntry) => void): Promise<CatalogHeader | undefined> {
  let header: CatalogHeader | undefined;
  let count = 0;
  let rest = "";
  const take = (line: string): void => {
    if (line === "") return;
    if (header === undefined) {
      const h = JSON.parse(line) as CatalogHeader;
      if (h.format !== CATALOG_FORMAT || h.file !== file || h.sha256 !== sha256) throw new Error("a catalog of something else");
      header = h;
      return;
    }
    const a = JSON.parse(line) as [string, string, EntryType, number, number, number, number, number, string | null, string | null, string | null];
    const e: CatalogEntry = { snapshot: a[0], path: a[1], type: a[2], mode: a[3], uid: a[4], gid: a[5], size: a[6], mtime: a[7] };
    if (a[8] !== null) e.link = a[8];
    if (a[9] !== null) e.user = a[9];
    if (a[10] !== null) e.group = a[10];
    count++;
    onEntry(e);
  };
  try {
    await pipeline(
      Readable.from([data]),
      createGunzip(),
      new Writable({
        write(chunk: Buffer, _enc, done) {
          const lines = (rest + chunk.toString("utf8")).split("\n");
          rest = lines.pop()!;
          try {
            for (const l of lines) take(l);
            done();
          } catch (e) {
            done(e as Error);
          }
        },
      }),
    );
    take(rest);
  } catch {
    return undefined;
  }
  // A catalog cut short is no catalog: the entries it announced must all be there.
  return header !== undefined && count === header.entries ? header : undefined;
}

/** A path as typed, made absolute and normal; one that climbs out ("..") is refused. */
export function normalPath(text: string, what = "path"): string {
  if (text === "" || text.includes("\0")) throw new UsageError(`${what} ${JSON.stringify(text)} is empty or has a NUL byte`);
  const parts = text.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) {
    throw new UsageError(`${what} ${JSON.stringify(text)} has a ".." component: give the path as the instance sees it, such as /etc/nginx/nginx.conf`);
  }
  return `/${parts.join("/")}`;
}

/** Whether `path` is `dir` or inside it. */
export function within(path: string, dir: string): boolean {
  return dir === "/" || path === dir || path.startsWith(`${dir}/`);
}

/**
 * A glob as a test on paths: `*` and `?` stay within a path component, `**` crosses them, `[...]`
 * is a class. A pattern without a slash is matched against the last component only (like
 * `find -name`); one with a slash against the whole path.
 */
export function globMatcher(pattern: string): (path: string) => boolean {
  if (pattern === "") throw new UsageError("--find needs a pattern, such as '*.conf' or '/etc/**/nginx*'");
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*") {
      if (pattern[i + 1] === "*") {
        re += ".*";
        i++;
        if (pattern[i + 1] === "/") i++;
      } else re += "[^/]*";
    } else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 2);
      if (end < 0) re += "\\[";
      else {
        let cls = pattern.slice(i + 1, end).replace(/\\/g, "\\\\");
        if (cls.startsWith("!")) cls = `^${cls.slice(1)}`;
        re += `[${cls}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, "\\$&");
  }
  const whole = pattern.includes("/");
  const rx = new RegExp(`^${whole && !pattern.startsWith("/") && !pattern.startsWith("**") ? "(?:.*/)?" : ""}${re}$`);
  return whole ? (p) => rx.test(p) : (p) => rx.test(p.slice(p.lastIndexOf("/") + 1));
}

/** `ls -l`'s mode column: type letter and permission bits. */
export function modeString(e: Pick<CatalogEntry, "type" | "mode">): string {
  const t = { file: "-", hardlink: "h", dir: "d", symlink: "l", char: "c", block: "b", fifo: "p" }[e.type];
  const m = e.mode;
  const bit = (mask: number, ch: string) => (m & mask ? ch : "-");
  const x = (exec: number, special: number, on: string, off: string) => (m & special ? (m & exec ? on : off) : m & exec ? "x" : "-");
  return (
    t +
    bit(0o400, "r") +
    bit(0o200, "w") +
    x(0o100, 0o4000, "s", "S") +
    bit(0o40, "r") +
    bit(0o20, "w") +
    x(0o10, 0o2000, "s", "S") +
    bit(0o4, "r") +
    bit(0o2, "w") +
    x(0o1, 0o1000, "t", "T")
  );
}
