// Reading a backup archive end to end: decompress, walk the tar, and pick out backup/index.yaml.
// Works on a file (verify --deep) or on the bytes of a download as they arrive (streamed backups).

import { spawn } from "node:child_process";
import { createReadStream } from "node:fs";
import { PassThrough, Writable, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { Parser, type ReadEntry } from "tar";
import { IntegrityError, InterruptedError } from "../errors";

/**
 * Decompressors by archive suffix. Node 20's zlib has no zstd (it came in Node 22.15), so zstd,
 * xz, bzip2 and lz4 go through their command-line tools, which the container image ships.
 */
const TOOLS: Array<{ suffix: string; cmd?: string[] }> = [
  { suffix: ".tar.zst", cmd: ["zstd", "-dcq"] },
  { suffix: ".tar.xz", cmd: ["xz", "-dc"] },
  { suffix: ".tar.bz2", cmd: ["bzip2", "-dc"] },
  { suffix: ".tar.lz4", cmd: ["lz4", "-dc"] },
  { suffix: ".tar.gz" },
  { suffix: ".tar" },
];

export interface ArchiveCheck {
  entries: number;
  /** The `name:` of backup/index.yaml, if the archive has one. */
  indexName?: string;
}

export interface ArchiveChecker {
  /** Write the (compressed) archive bytes here, then end it. */
  sink: Writable;
  /** Settles once the archive has been read to its end: rejects with IntegrityError if it is not complete and valid. */
  result: Promise<ArchiveCheck>;
}

/**
 * A writable that decompresses and parses what is written to it. `name` is the archive's file
 * name (its suffix picks the decompressor) and labels errors.
 */
export function archiveChecker(name: string, signal?: AbortSignal): ArchiveChecker {
  const tool = TOOLS.find((t) => name.endsWith(t.suffix));
  if (!tool) {
    const sink = new Writable({ write: (_c, _e, done) => done() });
    return { sink, result: Promise.reject(new IntegrityError(`${name}: unknown archive type`)) };
  }
  const input = new PassThrough({ highWaterMark: 1 << 20 });
  let source: Readable = input;
  let decompressor: Promise<unknown> = Promise.resolve(undefined);
  let kill = () => {};
  if (tool.suffix === ".tar.gz") {
    const gunzip = createGunzip();
    source = gunzip;
    decompressor = pipeline(input, gunzip).then(
      () => undefined,
      (e: unknown) => new IntegrityError(`${name}: gzip: ${(e as Error).message}`),
    );
  } else if (tool.cmd) {
    const [cmd, ...args] = tool.cmd as [string, ...string[]];
    const proc = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    kill = () => proc.kill();
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    proc.stdin.on("error", () => undefined);
    input.pipe(proc.stdin);
    source = proc.stdout;
    // Keep the decompressor's verdict: when both fail, its message ("premature end") says more.
    decompressor = new Promise((resolve) => {
      proc.on("error", (e) => resolve(new IntegrityError(`${name}: cannot run ${cmd} to decompress it: ${e.message}`)));
      proc.on("close", (code) =>
        resolve(code === 0 || signal?.aborted ? undefined : new IntegrityError(`${name}: ${cmd} failed: ${stderr.trim() || `exit ${code}`}`)),
      );
    });
  }
  const onAbort = () => {
    kill();
    source.destroy(new InterruptedError());
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  const result = parseTar(source, name)
    .catch(async (err: unknown) => {
      throw ((await decompressor) as Error | undefined) ?? err;
    })
    .then(async (check) => {
      const failed = (await decompressor) as Error | undefined;
      if (failed) throw failed;
      return check;
    })
    .finally(() => {
      signal?.removeEventListener("abort", onAbort);
      kill();
    });
  // Errors surface through `result`; a failed parse must not leave writers blocked.
  result.catch(() => input.resume());
  return { sink: input, result };
}

/** Reads a whole archive file through decompression and tar parsing. */
export async function readArchive(path: string, signal?: AbortSignal): Promise<ArchiveCheck> {
  const checker = archiveChecker(path, signal);
  const file = createReadStream(path, { highWaterMark: 1 << 20 });
  file.on("error", (e) => checker.sink.destroy(e));
  file.pipe(checker.sink);
  try {
    return await checker.result;
  } finally {
    file.destroy();
  }
}

function parseTar(source: Readable, name: string): Promise<ArchiveCheck> {
  return new Promise((resolve, reject) => {
    const check: ArchiveCheck = { entries: 0 };
    let sawEnd = false;
    const parser = new Parser({
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        check.entries++;
        if (entry.path === "backup/index.yaml" && entry.size < 1 << 20) {
          const chunks: Buffer[] = [];
          entry.on("data", (c: Buffer) => chunks.push(c));
          entry.on("end", () => {
            const m = /^name:\s*(.+?)\s*$/m.exec(Buffer.concat(chunks).toString("utf8"));
            if (m) check.indexName = m[1]!.replace(/^["']|["']$/g, "");
          });
        } else {
          entry.resume();
        }
      },
    });
    const fail = (e: unknown) =>
      reject(e instanceof IntegrityError || e instanceof InterruptedError ? e : new IntegrityError(`${name}: not a valid archive: ${(e as Error).message}`));
    parser.on("error", fail);
    parser.on("warn", (_code: string, message: string) => fail(new Error(message)));
    parser.on("end", () => {
      sawEnd = true;
      if (check.entries === 0) fail(new Error("it holds no files"));
      else resolve(check);
    });
    source.on("error", fail);
    source.on("end", () => {
      // A truncated tar ends without its closing blocks; the parser then never reports the end.
      setImmediate(() => {
        if (!sawEnd) fail(new Error("it ends early (truncated)"));
      });
    });
    source.pipe(parser as unknown as NodeJS.WritableStream);
  });
}
