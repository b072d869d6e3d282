// Streamed downloads and uploads of backup files, with byte progress; nothing is held whole in memory.

import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { Transform, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { InterruptedError } from "../errors";
import type { IncusClient, Query } from "./client";
import { IncusError } from "./errors";
import type { Operation } from "./operations";

/** Byte progress: bytes moved so far, and the total when known. */
export type ByteProgress = (done: number, total: number | undefined) => void;

export interface TransferOptions {
  signal?: AbortSignal;
  onProgress?: ByteProgress;
}

/** A pass-through stream that counts bytes and reports them at most every 100 ms. */
export function byteCounter(total: number | undefined, onProgress?: ByteProgress): Transform & { bytes: () => number } {
  let bytes = 0;
  let lastReport = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      const now = Date.now();
      if (onProgress && now - lastReport >= 100) {
        lastReport = now;
        onProgress(bytes, total);
      }
      done(null, chunk);
    },
    flush(done) {
      onProgress?.(bytes, total);
      done();
    },
  });
  return Object.assign(counter, { bytes: () => bytes });
}

/**
 * GETs `path` and streams the body into `sink`. Resolves with the byte count once the sink has
 * finished. The sink is ended (or destroyed on failure) by the pipeline.
 */
export async function downloadTo(
  client: IncusClient,
  path: string,
  what: string,
  sink: Writable,
  options: TransferOptions & { query?: Query; headers?: Record<string, string> } = {},
): Promise<{ bytes: number; headers: Record<string, string | string[] | undefined> }> {
  const res = await client.raw("GET", path, what, {
    ...(options.query === undefined ? {} : { query: options.query }),
    ...(options.headers === undefined ? {} : { headers: options.headers }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
    headersTimeout: 300_000,
    // A stalled transfer is an error, but a slow one is not: limit only idle time.
    bodyTimeout: 300_000,
  });
  const lengthHeader = res.headers["content-length"];
  const total = typeof lengthHeader === "string" ? Number(lengthHeader) : undefined;
  const counter = byteCounter(total, options.onProgress);
  try {
    await pipeline(res.body, counter, sink, options.signal === undefined ? {} : { signal: options.signal });
  } catch (err) {
    if (options.signal?.aborted) throw new InterruptedError();
    throw new IncusError(`${what}: download failed: ${(err as Error).message}`, { cause: err });
  }
  if (total !== undefined && Number.isFinite(total) && counter.bytes() !== total) {
    throw new IncusError(`${what}: download ended after ${counter.bytes()} of ${total} bytes`);
  }
  return { bytes: counter.bytes(), headers: res.headers };
}

/**
 * POSTs a file as the raw request body (application/octet-stream, exactly: Incus rejects
 * parameters) and returns the operation the server starts for it.
 */
export async function uploadFile(
  client: IncusClient,
  path: string,
  what: string,
  file: string,
  options: TransferOptions & { query?: Query; headers?: Record<string, string> } = {},
): Promise<Operation> {
  const size = (await stat(file)).size;
  const counter = byteCounter(size, options.onProgress);
  const source = createReadStream(file, { highWaterMark: 1 << 20 });
  source.on("error", (err) => counter.destroy(err));
  source.pipe(counter);
  const res = await client
    .raw("POST", path, what, {
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
  const env = (await res.body.json()) as unknown;
  return client.operationFrom(env, what);
}
