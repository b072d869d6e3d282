// pzstd's output made importable: its 12-byte skippable headers removed, plain zstd frames left.
//
// pzstd (the parallel zstd that ships with zstd) compresses on every core. Each frame it writes is
// preceded by a zstd "skippable frame" that holds the frame's size. Every zstd decoder skips
// those, but Incus recognises a zstd archive by the zstd magic at the very start of the file, and
// refuses a file that starts with a skippable frame ("Unsupported compression"). With the headers
// taken out, the file is a plain sequence of zstd frames: the same data for any zstd decoder, and a
// file `incus import` and the restore accept.

import { Writable } from "node:stream";
import { IntegrityError } from "../errors";
import { drained } from "../incus/transfer";

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const SKIPPABLE_FIRST = 0x184d2a50;
const SKIPPABLE_LAST = 0x184d2a5f;
/** A pzstd header: skippable magic (4 bytes), payload size 4 (4 bytes), the next frame's size (4 bytes). */
const HEADER = 12;

/**
 * The streaming parser. `push` takes the next bytes and returns those to keep; `end` returns what
 * is left over. A stream that does not start with a pzstd header (plain zstd, another
 * compressor) passes through untouched. Once it has started as pzstd, it must stay in pzstd's
 * shape to the end: every header followed by a zstd frame of the size it announces, and no
 * stream ending inside a header or a frame. Anything else is an IntegrityError, so a stream this
 * code misread can never become a backup.
 */
export class PzstdHeaders {
  private mode: "header" | "frame" | "through" = "header";
  /** Bytes of a header seen so far (mode "header"). */
  private pending = Buffer.alloc(0);
  /** Bytes of the current frame still to pass (mode "frame"). */
  private left = 0;
  /** How many bytes of the current frame's magic have been checked (mode "frame"). */
  private magicChecked = 0;
  /** Headers removed so far. */
  removed = 0;

  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.mode === "through") {
        out.push(off === 0 ? chunk : chunk.subarray(off));
        break;
      }
      if (this.mode === "frame") {
        const n = Math.min(this.left, chunk.length - off);
        for (let i = 0; this.magicChecked < ZSTD_MAGIC.length && i < n; i++, this.magicChecked++) {
          if (chunk[off + i] !== ZSTD_MAGIC[this.magicChecked]) throw malformed(`frame ${this.removed} does not start with the zstd magic`);
        }
        out.push(chunk.subarray(off, off + n));
        off += n;
        this.left -= n;
        if (this.left === 0) this.mode = "header";
        continue;
      }
      const need = HEADER - this.pending.length;
      const take = chunk.subarray(off, off + need);
      this.pending = this.pending.length === 0 ? Buffer.from(take) : Buffer.concat([this.pending, take]);
      off += take.length;
      if (this.pending.length >= 4 && !isPzstdHeaderStart(this.pending)) {
        if (this.removed > 0) throw malformed(`expected a pzstd header after frame ${this.removed}`);
        this.mode = "through";
        out.push(this.pending);
        this.pending = Buffer.alloc(0);
        continue;
      }
      if (this.pending.length < HEADER) continue;
      const size = this.pending.readUInt32LE(8);
      this.pending = Buffer.alloc(0);
      this.removed++;
      if (size < ZSTD_MAGIC.length) throw malformed(`frame ${this.removed} is announced with ${size} bytes`);
      this.mode = "frame";
      this.left = size;
      this.magicChecked = 0;
    }
    return out;
  }

  end(): Buffer[] {
    if (this.mode === "through") return [];
    if (this.mode === "frame") throw malformed(`the stream ends ${this.left} bytes before the end of frame ${this.removed}`);
    if (this.pending.length > 0) {
      if (this.removed > 0) throw malformed("the stream ends inside a header");
      // Too short to tell: not pzstd's; pass it on for the other checks to judge.
      const rest = this.pending;
      this.pending = Buffer.alloc(0);
      return [rest];
    }
    return [];
  }
}

function malformed(what: string): IntegrityError {
  return new IntegrityError(`the server's pzstd output is not in the expected form: ${what}`);
}

/** Whether the first 8 bytes seen so far can start a pzstd header (magic, then a payload of 4). */
function isPzstdHeaderStart(b: Buffer): boolean {
  const magic = b.readUInt32LE(0);
  if (magic < SKIPPABLE_FIRST || magic > SKIPPABLE_LAST) return false;
  return b.length < 8 || b.readUInt32LE(4) === 4;
}

/**
 * A Writable that removes pzstd's headers and writes the rest into `dest`. Ending it ends `dest`,
 * and it finishes only when `dest` has (for a file: written and synced). An error of either side
 * fails both.
 */
export class PzstdHeaderWriter extends Writable {
  private readonly parser = new PzstdHeaders();

  constructor(private readonly dest: Writable) {
    super();
    dest.on("error", (err: Error) => this.destroy(err));
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    let parts: Buffer[];
    try {
      parts = this.parser.push(chunk);
    } catch (err) {
      return done(err as Error);
    }
    this.forward(parts, done);
  }

  override _final(done: (err?: Error | null) => void): void {
    let parts: Buffer[];
    try {
      parts = this.parser.end();
    } catch (err) {
      return done(err as Error);
    }
    this.forward(parts, (err) => {
      if (err) return done(err);
      if (this.dest.writableFinished) return done();
      const onError = (e: Error) => done(e);
      this.dest.once("error", onError);
      this.dest.end(() => {
        this.dest.off("error", onError);
        done();
      });
    });
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (err && !this.dest.destroyed) this.dest.destroy(err);
    done(err);
  }

  private forward(parts: Buffer[], done: (err?: Error | null) => void): void {
    let ok = true;
    for (const p of parts) ok = this.dest.write(p);
    if (ok) done();
    else drained(this.dest).then(() => done(), done);
  }
}
