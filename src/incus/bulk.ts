// Bulk transfers over the Incus unix socket: a lean HTTP/1.1 client for the one job undici is slow at.
//
// A backup file arrives at hundreds of MB/s. Through undici (or Node's `http`) every 64 KiB read
// becomes a new Buffer that passes an HTTP parser and a stream or two, and the tool spent several
// times the CPU of Incus's own Go client on it (issue 20, and the README's Performance section).
// Here the socket reads into one reused buffer (net.Socket's `onread`), the body is decoded by a
// small state machine (Content-Length, chunked, or until close), and its bytes are copied into 1 MiB
// chunks: the consumer gets few, large, freshly allocated buffers it may keep. An upload is piped
// straight into the socket. undici stays for everything else (API calls, operations).

import { connect, type Socket } from "node:net";
import { Readable } from "node:stream";

/** What the socket reads into, reused for every read. */
const READ_BUFFER = 256 * 1024;
/** The size of the chunks the body hands out. */
export const BULK_CHUNK = 1024 * 1024;
/** The most a response head may take (status line and headers); Incus sends a few hundred bytes. */
const MAX_HEAD = 64 * 1024;

export interface BulkRequest {
  method: "GET" | "POST";
  /** Path and query, already encoded. */
  path: string;
  headers?: Record<string, string>;
  /** A small body sent whole (a JSON request). */
  body?: string;
  /**
   * A streamed body (an upload), of the Content-Length the headers give. An error of the stream
   * fails the request with that error, and the server, which gets fewer bytes than announced,
   * acts on nothing.
   */
  upload?: Readable;
  signal?: AbortSignal;
  /** Milliseconds to wait for the response head; 0 = no limit. */
  headersTimeout?: number;
  /** Milliseconds the body may stay idle while its reader wants more; 0 = no limit. */
  bodyTimeout?: number;
}

export interface BulkResponse {
  statusCode: number;
  /** Lower-case names; a repeated header's values joined with ", ". */
  headers: Record<string, string>;
  /** The decoded body, Buffers of at most BULK_CHUNK bytes (object mode). Destroying it closes the connection. */
  body: Readable;
}

/** A connection error with the code the callers' error mapping knows (brokenConnection). */
function broken(message: string): Error {
  return Object.assign(new Error(message), { code: "ECONNRESET" });
}

function abortError(): Error {
  return Object.assign(new Error("the request was aborted"), { name: "AbortError", code: "ABORT_ERR" });
}

/** Rejects names and values that would change the request's shape (a CR or LF). */
function headerLine(name: string, value: string): string {
  if (/[\r\n:]/.test(name) || /[\r\n]/.test(value)) throw new Error(`invalid HTTP header ${JSON.stringify(name)}`);
  return `${name}: ${value}\r\n`;
}

type BodyMode = { kind: "length"; left: number } | { kind: "chunked" } | { kind: "close" } | { kind: "none" };

/**
 * Sends one request on a new connection (closed once the body is read) and resolves once the
 * response head has arrived. Connection errors reject with Node's own error (its `code`: ENOENT,
 * EACCES, ECONNREFUSED, ...); a connection that ends before the response is complete fails with
 * code ECONNRESET, before the head as a rejection, after it as an error of the body.
 */
export function bulkRequest(socketPath: string, req: BulkRequest): Promise<BulkResponse> {
  return new Promise<BulkResponse>((resolve, reject) => {
    if (req.signal?.aborted) return reject(abortError());
    let head: Buffer | undefined = Buffer.alloc(0);
    let body: BulkBody | undefined;
    let settled = false;
    let headTimer: NodeJS.Timeout | undefined;
    const fail = (err: Error) => {
      if (headTimer) clearTimeout(headTimer);
      req.upload?.unpipe(socket);
      req.signal?.removeEventListener("abort", onAbort);
      if (!settled) {
        settled = true;
        reject(err);
      } else body?.fail(err);
      socket.destroy();
    };
    const onAbort = () => fail(abortError());

    const socket: Socket = connect({
      path: socketPath,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER),
        callback: (n: number, buf: Uint8Array) => {
          try {
            received(Buffer.from(buf.buffer, buf.byteOffset, n));
          } catch (err) {
            fail(err as Error);
          }
          return true;
        },
      },
    });
    // Flowing, so that the end of the connection is seen; the bytes go to `onread` only.
    socket.resume();
    socket.on("error", (err) => fail(err));
    socket.on("close", () => {
      if (body) body.connectionClosed();
      else if (!settled) fail(broken("Incus closed the connection before it answered"));
    });
    socket.on("timeout", () => fail(broken(`no data from Incus for ${Math.round((req.bodyTimeout ?? 0) / 1000)} s`)));
    req.signal?.addEventListener("abort", onAbort, { once: true });
    if (req.headersTimeout) headTimer = setTimeout(() => fail(broken(`no answer from Incus within ${Math.round(req.headersTimeout! / 1000)} s`)), req.headersTimeout);

    socket.on("connect", () => {
      // Keep-alive, as undici asks: the server never closes first (a proxy on the way could then
      // drop the last bytes); this side closes the connection once the body is read.
      let text = `${req.method} ${req.path} HTTP/1.1\r\nHost: incus\r\nUser-Agent: incus-backup\r\n`;
      try {
        for (const [k, v] of Object.entries(req.headers ?? {})) text += headerLine(k, v);
      } catch (err) {
        return fail(err as Error);
      }
      const payload = req.body === undefined ? undefined : Buffer.from(req.body);
      if (payload) text += `Content-Length: ${payload.length}\r\n`;
      socket.write(payload ? Buffer.concat([Buffer.from(`${text}\r\n`), payload]) : `${text}\r\n`);
      if (req.upload) {
        req.upload.on("error", (err) => fail(err));
        // The connection stays open for the answer: the length tells the server where the body ends.
        req.upload.pipe(socket, { end: false });
      }
    });

    /** Bytes in the reused read buffer: valid only during this call. */
    function received(bytes: Buffer): void {
      if (body) return body.feed(bytes);
      head = Buffer.concat([head!, bytes]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) {
        if (head.length > MAX_HEAD) throw broken("Incus sent a response head of more than 64 KiB");
        return;
      }
      const { statusCode, headers } = parseHead(head.subarray(0, end).toString("latin1"));
      // An answer ends the upload, finished or not (a server that refuses early answers at once).
      req.upload?.unpipe(socket);
      const rest = head.subarray(end + 4);
      head = undefined;
      if (headTimer) clearTimeout(headTimer);
      body = new BulkBody(socket, bodyMode(req.method, statusCode, headers), req.bodyTimeout ?? 0, () => {
        req.signal?.removeEventListener("abort", onAbort);
      });
      settled = true;
      resolve({ statusCode, headers, body });
      // The rest was copied by concat: it is not in the read buffer.
      if (rest.length > 0) body.feed(rest);
    }
  });
}

function parseHead(text: string): { statusCode: number; headers: Record<string, string> } {
  const lines = text.split("\r\n");
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? "");
  if (!m) throw broken(`Incus sent something that is not an HTTP response: ${JSON.stringify((lines[0] ?? "").slice(0, 80))}`);
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(":");
    if (i <= 0) continue;
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { statusCode: Number(m[1]), headers };
}

function bodyMode(method: string, status: number, headers: Record<string, string>): BodyMode {
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) return { kind: "none" };
  if (/\bchunked\b/i.test(headers["transfer-encoding"] ?? "")) return { kind: "chunked" };
  const length = headers["content-length"];
  if (length !== undefined) {
    if (!/^\d+$/.test(length)) throw broken(`Incus sent an invalid Content-Length: ${JSON.stringify(length)}`);
    return { kind: "length", left: Number(length) };
  }
  return method === "GET" || method === "POST" ? { kind: "close" } : { kind: "none" };
}

/**
 * The body of a response: decodes the transfer coding and hands the bytes out in BULK_CHUNK
 * pieces. While the reader does not want more, the socket stops reading (and the idle limit does
 * not run), so a slow disk slows the transfer instead of filling memory.
 */
class BulkBody extends Readable {
  private mode: BodyMode;
  /** Chunked coding: what is being read, and the bytes of a size line so far. */
  private chunk: { at: "size" | "data" | "crlf" | "trailer"; left: number; line: string } = { at: "size", left: 0, line: "" };
  private out: Buffer | undefined;
  private used = 0;
  /** Body bytes received so far (handed out or not). */
  private received = 0;
  private ended = false;

  constructor(
    private readonly socket: Socket,
    mode: BodyMode,
    private readonly idleMs: number,
    private readonly onDone: () => void,
  ) {
    // Object mode: a reader gets the chunks as they are (a byte-mode read() would concatenate
    // what is buffered into one more copy). Up to 4 wait for the reader.
    super({ objectMode: true, highWaterMark: 4 });
    this.mode = mode;
    // A failure before the reader has begun (an abort, a broken connection) must not crash the
    // process as an unhandled 'error': the reader meets it anyway, as the stream's error.
    this.on("error", () => undefined);
    if (idleMs > 0) socket.setTimeout(idleMs);
    if (mode.kind === "none" || (mode.kind === "length" && mode.left === 0)) this.finish();
  }

  /** Whether the whole body has arrived (what is left of the connection does not matter). */
  atEnd(): boolean {
    return this.ended;
  }

  override _read(): void {
    if (this.ended) return;
    if (this.idleMs > 0) this.socket.setTimeout(this.idleMs);
    this.socket.resume();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.onDone();
    this.socket.destroy();
    done(err);
  }

  /** The connection failed or was aborted. */
  fail(err: Error): void {
    if (!this.ended && !this.destroyed) this.destroy(err);
  }

  /** The connection closed: the end of a body without a length, else (unless it was all there) a break. */
  connectionClosed(): void {
    if (this.ended) return;
    if (this.mode.kind === "close") return this.finish();
    const what = this.mode.kind === "length" ? `, ${this.mode.left} bytes before its end` : ", before its last chunk";
    this.fail(broken(`Incus closed the connection after ${this.received} bytes${what}`));
  }

  feed(bytes: Buffer): void {
    let off = 0;
    while (off < bytes.length && !this.ended) {
      const m = this.mode;
      if (m.kind === "close") {
        this.keep(bytes.subarray(off));
        return;
      }
      if (m.kind === "length") {
        const n = Math.min(m.left, bytes.length - off);
        this.keep(bytes.subarray(off, off + n));
        off += n;
        m.left -= n;
        if (m.left === 0) this.finish();
        continue;
      }
      if (m.kind === "none") return;
      off = this.chunked(bytes, off);
    }
  }

  /** One step of chunked decoding from `off`; returns the new offset. */
  private chunked(bytes: Buffer, off: number): number {
    const c = this.chunk;
    if (c.at === "data") {
      const n = Math.min(c.left, bytes.length - off);
      this.keep(bytes.subarray(off, off + n));
      c.left -= n;
      if (c.left === 0) c.at = "crlf";
      return off + n;
    }
    // A line: a chunk's size (with extensions), the CRLF after its data, or a trailer.
    const nl = bytes.indexOf(0x0a, off);
    const end = nl < 0 ? bytes.length : nl + 1;
    c.line += bytes.toString("latin1", off, end);
    if (c.line.length > 4096) throw broken("Incus sent a chunk header of more than 4 KiB");
    if (nl < 0) return end;
    const line = c.line.replace(/\r?\n$/, "");
    c.line = "";
    if (c.at === "crlf") {
      if (line !== "") throw broken("Incus sent a chunk longer than announced");
      c.at = "size";
    } else if (c.at === "size") {
      const size = /^([0-9a-fA-F]{1,12})(;.*)?$/.exec(line);
      if (!size) throw broken(`Incus sent an invalid chunk size: ${JSON.stringify(line.slice(0, 40))}`);
      c.left = parseInt(size[1]!, 16);
      c.at = c.left === 0 ? "trailer" : "data";
    } else if (line === "") {
      this.finish();
    }
    return end;
  }

  /** Copies bytes out of the read buffer into the current chunk; hands out full chunks. */
  private keep(bytes: Buffer): void {
    this.received += bytes.length;
    let off = 0;
    while (off < bytes.length) {
      this.out ??= Buffer.allocUnsafe(BULK_CHUNK);
      const n = bytes.copy(this.out, this.used, off);
      this.used += n;
      off += n;
      if (this.used === this.out.length) this.hand(this.out);
    }
  }

  private hand(buf: Buffer): void {
    this.out = undefined;
    this.used = 0;
    if (!this.push(buf)) {
      // Idle time while the reader is busy is not the server's.
      this.socket.setTimeout(0);
      this.socket.pause();
    }
  }

  private finish(): void {
    if (this.ended) return;
    if (this.out && this.used > 0) this.hand(this.out.subarray(0, this.used));
    this.ended = true;
    this.socket.setTimeout(0);
    this.onDone();
    this.push(null);
    // One request per connection: nothing more is read.
    this.socket.destroy();
  }
}
