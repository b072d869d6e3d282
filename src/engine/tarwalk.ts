// A strict, cheap walk over a tar stream: header checksums, entry sizes, and the end-of-archive
// marker, without making a stream per entry. It answers "is this a whole tar?".
//
// A general tar reader (node-tar, GNU tar -t) accepts an archive that simply stops between two
// entries. A backup streamed by a server that failed half-way can stop exactly there, so this
// walker also requires the two zero blocks a tar writer puts at the end when it finishes.

import { Writable } from "node:stream";

const BLOCK = 512;

export interface TarSummary {
  entries: number;
  /** The `name:` of backup/index.yaml, if the archive has one. */
  indexName?: string;
}

export class TarWalker extends Writable {
  private pending = Buffer.alloc(0);
  /** Bytes of entry data (with padding) still to skip before the next header. */
  private skip = 0;
  /** Zero blocks seen in a row where a header was expected. */
  private zeros = 0;
  private entries = 0;
  private capture: { remaining: number; chunks: Buffer[] } | undefined;
  private indexName: string | undefined;
  private problem: string | undefined;

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.problem === undefined) this.consume(chunk);
    done();
  }

  private consume(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length && this.problem === undefined) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - off);
        if (this.capture) {
          const take = Math.min(n, this.capture.remaining);
          if (take > 0) this.capture.chunks.push(chunk.subarray(off, off + take));
          this.capture.remaining -= take;
          if (this.capture.remaining === 0) this.finishCapture();
        }
        this.skip -= n;
        off += n;
        continue;
      }
      // A header: gather a whole block first.
      const need = BLOCK - this.pending.length;
      const piece = chunk.subarray(off, off + need);
      off += piece.length;
      this.pending = this.pending.length === 0 ? Buffer.from(piece) : Buffer.concat([this.pending, piece]);
      if (this.pending.length < BLOCK) return;
      const header = this.pending;
      this.pending = Buffer.alloc(0);
      this.header(header);
    }
  }

  private header(h: Buffer): void {
    if (h.every((b) => b === 0)) {
      this.zeros++;
      return;
    }
    if (this.zeros > 0) {
      // Data after the end-of-archive marker is something else than a tar.
      this.problem = "data after the end of the archive";
      return;
    }
    if (!checksumOk(h)) {
      this.problem = `a damaged header (entry ${this.entries + 1})`;
      return;
    }
    const size = parseSize(h.subarray(124, 136));
    if (size === undefined) {
      this.problem = `a header with an unreadable size (entry ${this.entries + 1})`;
      return;
    }
    const type = String.fromCharCode(h[156] ?? 0);
    const name = cString(h.subarray(0, 100));
    const prefix = cString(h.subarray(345, 500));
    const path = prefix ? `${prefix}/${name}` : name;
    // pax (x, g) and GNU long-name (L, K) records describe the next entry; they are not entries.
    if (!"xgLK".includes(type)) this.entries++;
    this.skip = Math.ceil(size / BLOCK) * BLOCK;
    if (path === "backup/index.yaml" && this.entries === 1 && size < 1 << 20) {
      this.capture = { remaining: size, chunks: [] };
      if (size === 0) this.finishCapture();
    }
  }

  private finishCapture(): void {
    const text = Buffer.concat(this.capture?.chunks ?? []).toString("utf8");
    this.capture = undefined;
    const name = indexName(text);
    if (name !== undefined) this.indexName = name;
  }

  /** After the stream ended: the summary, or why it is not a whole archive. */
  result(): TarSummary | { problem: string } {
    if (this.problem !== undefined) return { problem: this.problem };
    if (this.skip > 0 || this.pending.length > 0) return { problem: "it ends in the middle of an entry (truncated)" };
    if (this.entries === 0) return { problem: "it holds no files" };
    if (this.zeros < 2) return { problem: "it ends without the end-of-archive marker (truncated between two entries)" };
    return { entries: this.entries, ...(this.indexName === undefined ? {} : { indexName: this.indexName }) };
  }
}

/** The `name:` field of a backup/index.yaml, without quotes; undefined if it has none. */
export function indexName(yaml: string): string | undefined {
  const m = /^name:\s*(.+?)\s*$/m.exec(yaml);
  return m ? m[1]!.replace(/^["']|["']$/g, "") : undefined;
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString("utf8");
}

/** Octal digits, or GNU's base-256 for large sizes (high bit of the first byte set). */
function parseSize(field: Buffer): number | undefined {
  if ((field[0]! & 0x80) !== 0) {
    let n = 0;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return Number.isSafeInteger(n) ? n : undefined;
  }
  const text = cString(field).trim();
  if (!/^[0-7]*$/.test(text)) return undefined;
  return text === "" ? 0 : parseInt(text, 8);
}

/** The header checksum: the sum of all bytes with the checksum field counted as spaces. */
function checksumOk(h: Buffer): boolean {
  const stored = parseInt(cString(h.subarray(148, 156)).trim(), 8);
  if (Number.isNaN(stored)) return false;
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  return sum === stored;
}
