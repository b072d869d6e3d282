// Streamed downloads and uploads of backup files, with byte progress; nothing is held whole in memory.

import { Transform, type Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { InterruptedError } from "../errors";
import { brokenConnection, readText, type IncusClient, type Query } from "./client";
import { IncusError } from "./errors";
import type { Operation } from "./operations";

/** Byte progress: bytes moved so far, and the total when known. */
export type ByteProgress = (done: number, total: number | undefined) => void;

export interface TransferOptions {
  signal?: AbortSignal;
  onProgress?: ByteProgress;
  /**
   * Uploads only: the last bytes are held back until this settles. If it rejects, the upload is
   * cut short and the server, which stores an upload whole before acting on it, creates nothing.
   */
  gate?: Promise<unknown>;
  /**
   * Downloads only: called once every byte has arrived, before the sink is flushed and synced,
   * so the caller can free the server's copy while the disk catches up.
   */
  onReceived?: () => void;
}

/** Counts bytes and reports them at most every 100 ms, and once more at the end. */
function progressCounter(total: number | undefined, onProgress: ByteProgress | undefined): { add(n: number): void; end(): void; bytes(): number } {
  let bytes = 0;
  let lastReport = 0;
  return {
    add(n) {
      bytes += n;
      const now = Date.now();
      if (onProgress && now - lastReport >= 100) {
        lastReport = now;
        onProgress(bytes, total);
      }
    },
    end: () => onProgress?.(bytes, total),
    bytes: () => bytes,
  };
}

/** A pass-through stream that counts bytes and reports them at most every 100 ms. */
export function byteCounter(total: number | undefined, onProgress?: ByteProgress): Transform & { bytes: () => number } {
  const progress = progressCounter(total, onProgress);
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      progress.add(chunk.length);
      done(null, chunk);
    },
    flush(done) {
      progress.end();
      done();
    },
  });
  return Object.assign(counter, { bytes: progress.bytes });
}

/** Attempts to resume a download that broke off (a daemon restart, a reset connection). */
const DOWNLOAD_ATTEMPTS = 4;

/**
 * GETs `path` and streams the body into `sink`, then ends the sink and waits for it to finish.
 * If the connection breaks off, the download resumes where it stopped with an HTTP Range
 * request (a few attempts, with back-off), so the sink sees every byte exactly once. Errors of
 * the sink itself (a full disk) are not retried.
 */
export async function downloadTo(
  client: IncusClient,
  path: string,
  what: string,
  sink: Writable,
  options: TransferOptions & { query?: Query; /** The first wait before resuming, doubled each time (default 1 s). */ retryDelayMs?: number } = {},
): Promise<{ bytes: number }> {
  let done = 0;
  let total: number | undefined;
  let sinkError: Error | undefined;
  sink.on("error", (e: Error) => (sinkError ??= e));
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await client.bulk("GET", path, what, {
        ...(options.query === undefined ? {} : { query: options.query }),
        headers: done > 0 ? { range: `bytes=${done}-` } : {},
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        headersTimeout: 300_000,
        // A stalled transfer is an error, but a slow one is not: limit only idle time.
        bodyTimeout: 300_000,
      });
      if (done === 0) {
        const length = res.headers["content-length"];
        total = typeof length === "string" && Number.isFinite(Number(length)) ? Number(length) : undefined;
      } else if (res.statusCode !== 206 || !String(res.headers["content-range"] ?? "").startsWith(`bytes ${done}-`)) {
        res.body.destroy();
        throw Object.assign(new IncusError(`${what}: the connection broke off after ${done} bytes and the server cannot resume the download`), {
          final: true,
        });
      }
      for await (const chunk of res.body) {
        done += chunk.length;
        options.onProgress?.(done, total);
        if (!sink.write(chunk)) await drained(sink, options.signal);
      }
      break;
    } catch (err) {
      if (options.signal?.aborted) throw new InterruptedError();
      if (sinkError) throw sinkError;
      const final = (err as { final?: boolean }).final === true || (err instanceof IncusError && err.status >= 400);
      if (final || attempt >= DOWNLOAD_ATTEMPTS) {
        throw err instanceof IncusError ? err : new IncusError(`${what}: download failed: ${brokenConnection(err) ?? (err as Error).message}`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, (options.retryDelayMs ?? 1000) * 2 ** (attempt - 1)));
    }
  }
  if (total !== undefined && done !== total) throw new IncusError(`${what}: download ended after ${done} of ${total} bytes`);
  options.onReceived?.();
  await finishSink(sink, options.signal);
  if (sinkError) throw sinkError;
  return { bytes: done };
}

/**
 * Waits until a writable wants more data. Rejects if it has failed or been closed instead: a
 * stream that already failed (a full disk) emits neither "drain" nor "error" again, and waiting
 * for "drain" alone would wait for ever.
 */
export function drained(sink: Writable, signal?: AbortSignal): Promise<void> {
  if (sink.errored) return Promise.reject(sink.errored);
  if (sink.destroyed || sink.writableEnded) return Promise.reject(new Error("the destination was closed"));
  if (!sink.writableNeedDrain) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const done = (err?: Error) => {
      sink.off("drain", onDrain);
      sink.off("error", onError);
      sink.off("close", onClose);
      signal?.removeEventListener("abort", onAbort);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onError = (e: Error) => done(e);
    const onClose = () => done(sink.errored ?? new Error("the destination was closed"));
    const onAbort = () => done(new InterruptedError());
    sink.on("drain", onDrain);
    sink.on("error", onError);
    sink.on("close", onClose);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Ends a writable and waits until everything is flushed (for files: written and synced). */
export async function finishSink(sink: Writable, signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    sink.once("error", onError);
    sink.end(() => {
      sink.off("error", onError);
      resolve();
    });
    signal?.addEventListener("abort", () => reject(new InterruptedError()), { once: true });
  });
}

/**
 * POSTs a JSON body and streams the response body (not an operation: the server sends the data
 * itself, as for a direct backup) into `sink`, then ends the sink.
 */
export async function postForStream(
  client: IncusClient,
  path: string,
  what: string,
  body: unknown,
  sink: Writable,
  options: TransferOptions & { query?: Query } = {},
): Promise<{ bytes: number }> {
  const res = await client.bulk(
    "POST",
    path,
    what,
    {
      ...(options.query === undefined ? {} : { query: options.query }),
      headers: { "content-type": "application/json", accept: "application/octet-stream" },
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      // The server starts sending only once it has something to send.
      headersTimeout: 300_000,
      bodyTimeout: 300_000,
    },
    JSON.stringify(body),
  );
  const ctype = String(res.headers["content-type"] ?? "");
  if (ctype.includes("application/json")) {
    // An answer in JSON instead of data: an operation or an error the status did not tell.
    const text = await readText(res.body);
    throw new IncusError(`${what}: expected the backup data, got: ${text.slice(0, 200)}`);
  }
  const counter = byteCounter(undefined, options.onProgress);
  try {
    await pipeline(res.body, counter, sink, options.signal === undefined ? {} : { signal: options.signal });
  } catch (err) {
    if (options.signal?.aborted) throw new InterruptedError();
    const broken = brokenConnection(err);
    if (broken) throw new IncusError(`${what}: the stream broke off: ${broken}`, { cause: err });
    throw err;
  }
  return { bytes: counter.bytes() };
}

/** What an upload sends: a stream of exactly `size` bytes (stores read 1 MiB at a time: fastest through undici). */
export interface UploadSource {
  stream: Readable;
  size: number;
}

/**
 * Counts the bytes of an upload for progress and, with a gate, passes everything through but the
 * last chunk, which follows once the gate resolves (and never, if it rejects).
 */
function uploadStage(total: number, onProgress: ByteProgress | undefined, gate: Promise<unknown> | undefined): Transform {
  const progress = progressCounter(total, onProgress);
  let held: Buffer | undefined;
  const stage = new Transform({
    transform(chunk: Buffer, _enc, done) {
      progress.add(chunk.length);
      if (!gate) return done(null, chunk);
      const previous = held;
      held = chunk;
      done(null, previous);
    },
    flush(done) {
      progress.end();
      if (!gate) return done();
      gate.then(
        () => done(null, held),
        (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
      );
    },
  });
  // A gate that fails early (an archive whose index names another item) cuts the upload short
  // at once, instead of after the rest of it; settled early or late, it is never unhandled.
  gate?.catch((err: unknown) => stage.destroy(err instanceof Error ? err : new Error(String(err))));
  return stage;
}

/**
 * POSTs a stream as the raw request body (application/octet-stream, exactly: Incus rejects
 * parameters) and returns the operation the server starts for it.
 */
export async function uploadStream(
  client: IncusClient,
  path: string,
  what: string,
  { stream: source, size }: UploadSource,
  options: TransferOptions & { query?: Query; headers?: Record<string, string> } = {},
): Promise<Operation> {
  // One pass-through stage (counting, and holding back the end if gated): every stage between
  // the file and the socket costs throughput, and large reads keep the chunk count low.
  const counter = uploadStage(size, options.onProgress, options.gate);
  source.on("error", (err) => counter.destroy(err));
  source.pipe(counter);
  const res = await client
    .bulk("POST", path, what, {
      ...(options.query === undefined ? {} : { query: options.query }),
      headers: {
        "content-type": "application/octet-stream",
        "content-length": String(size),
        ...options.headers,
      },
      body: counter,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      // The server answers only after it has read the whole body, however long that takes.
      headersTimeout: 0,
      bodyTimeout: 300_000,
    })
    .finally(() => source.destroy());
  const text = await readText(res.body);
  let env: unknown;
  try {
    env = JSON.parse(text);
  } catch {
    throw new IncusError(`${what}: the server sent a reply that is not JSON: ${text.trim().slice(0, 200)}`);
  }
  return client.operationFrom(env, what);
}
