// Walking an instance's or volume's archive entry by entry, as it streams from the repository:
// decompressed on the way, the tar read with node-tar's parser, no copy of the archive on disk.
// Listing skips every entry's data; a file restore takes the data of the entries it wants and
// may stop once it has them all.

import type { Readable } from "node:stream";
import { Parser, type ReadEntry } from "tar";
import { IntegrityError } from "../errors";
import type { Store } from "../repository/store";
import { decompressor } from "./archive";
import { entryOf, type CatalogEntry } from "./catalog";
import type { FilesSource } from "./files";
import type { Reporter } from "./reporter";

export interface WalkHooks {
  /** Every entry of the item's file systems, in archive order (index counts only these). True: hand me its data (regular files only). */
  entry(e: CatalogEntry, index: number): boolean;
  /** The data of an entry `entry` asked for. It must consume the stream; the walk waits for the promise before it ends. */
  data?(e: CatalogEntry, index: number, stream: Readable): Promise<void>;
  /** Stop once this many entries were seen: the rest of the archive is not read. */
  stopAfter?: number;
}

export interface WalkOptions {
  reporter: Reporter;
  signal?: AbortSignal;
  /** The progress step shown while reading. */
  step: string;
}

/**
 * Reads the archive (to its end, or to `stopAfter`), handing each entry to the hooks. Read to its
 * end, the byte count must match the manifest; zstd, gzip and restic check the data they deliver,
 * and the strict tar reader refuses a damaged header or a cut archive (IntegrityError).
 * Returns whether the archive was read to its end, and what that took. It prints no line of its
 * own (a live one on a terminal, while it reads).
 */
export async function walkArchive(store: Store, src: FilesSource, hooks: WalkHooks, o: WalkOptions): Promise<{ complete: boolean; bytes: number; seconds: number }> {
  const label = `${src.version.location}/${src.file.name}`;
  // A file on this machine goes straight to the decompressing program: one copy less through
  // this process (measured: a first listing of a 1 GiB version 1.4 -> 1.0 times `zstd -dc | tar -t`).
  const local = await store.localPath?.(src.version, src.file);
  const direct = local === undefined ? undefined : decompressor(src.file.name, label, local);
  const d = direct ?? decompressor(src.file.name, label);
  if (!d) throw new IntegrityError(`${label}: unknown archive type`);
  const item = src.version.manifest;
  o.reporter.itemStart(item);
  o.reporter.itemStep(item, o.step);
  const t0 = Date.now();
  const stream = direct ? undefined : await store.streamFile(src.version, src.file, o.signal);
  let read = 0;
  // Progress: the archive's bytes as read, or (read by the decompressor itself) the tar's bytes.
  stream?.on("data", (c: Buffer) => {
    read += c.length;
    o.reporter.itemBytes(item, read, src.file.size);
  });
  let untarred = 0;
  if (direct) {
    d.output.on("data", (c: Buffer) => {
      untarred += c.length;
      o.reporter.itemBytes(item, untarred, undefined);
    });
  }

  let index = 0;
  const indexes = new WeakMap<object, { e: CatalogEntry; i: number }>();
  const writes: Promise<void>[] = [];
  let settle: (r: { stopped: boolean } | Error) => void = () => undefined;
  const finished = new Promise<{ stopped: boolean } | Error>((resolve) => (settle = resolve));
  const parser = new Parser({
    strict: true,
    filter: (_path, entry) => {
      const e = entryOf(src.kind, entry as ReadEntry);
      if (!e) return false;
      if (src.shift) {
        e.uid = src.shift(e.uid, "uid");
        e.gid = src.shift(e.gid, "gid");
      }
      const i = index++;
      if (hooks.stopAfter !== undefined && i >= hooks.stopAfter) {
        settle({ stopped: true });
        return false;
      }
      const wanted = hooks.entry(e, i) && e.type === "file" && hooks.data !== undefined;
      if (wanted) indexes.set(entry, { e, i });
      return wanted;
    },
  });
  parser.on("entry", (entry: ReadEntry) => {
    const at = indexes.get(entry);
    if (!at || !hooks.data) {
      entry.resume();
      return;
    }
    const w = hooks.data(at.e, at.i, entry as unknown as Readable);
    w.catch((err: unknown) => settle(err as Error));
    writes.push(w);
  });
  parser.on("error", (e: Error) => settle(new IntegrityError(`${label}: not a valid archive: ${e.message}`)));
  parser.on("end", () => settle({ stopped: false }));
  if (hooks.stopAfter === 0) settle({ stopped: true });

  d.output.on("error", (e) => settle(e));
  if (stream) {
    stream.on("error", (e) => d.input.destroy(e));
    stream.pipe(d.input);
  }
  d.output.pipe(parser as unknown as NodeJS.WritableStream);
  let complete = false;
  try {
    const r = await finished;
    if (r instanceof Error) throw r;
    await Promise.all(writes);
    if (!r.stopped) {
      const failed = await d.failure;
      if (failed) throw failed;
      if (stream && read !== src.file.size) throw new IntegrityError(`${label}: read ${read} bytes, the manifest says ${src.file.size}`);
      complete = true;
    }
  } catch (err) {
    // The error itself is the command's one line.
    o.reporter.itemDrop?.(item);
    throw err;
  } finally {
    d.output.unpipe();
    d.kill();
    stream?.destroy();
  }
  // The live line goes; what the walk was for is the caller's line to print (or its error).
  o.reporter.itemDrop?.(item);
  return { complete, bytes: stream ? read : complete ? src.file.size : untarred, seconds: (Date.now() - t0) / 1000 };
}
