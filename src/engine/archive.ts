// Reading a backup archive end to end: decompress, walk the tar, and pick out backup/index.yaml.
// Works on a stored file (verify --deep) or on the bytes of a download as they arrive (streamed backups).

import { resolve as resolvePath } from "node:path";
import { spawn } from "node:child_process";
import { PassThrough, Writable, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { Parser, type ReadEntry } from "tar";
import { IntegrityError, InterruptedError, RepositoryError } from "../errors";
import { TarWalker, indexName } from "./tarwalk";

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
  const d = decompressor(name);
  if (!d) {
    const sink = new Writable({ write: (_c, _e, done) => done() });
    return { sink, result: Promise.reject(new IntegrityError(`${name}: unknown archive type`)) };
  }
  const onAbort = () => {
    d.kill();
    d.output.destroy(new InterruptedError());
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  const result = parseTar(d.output, name)
    .catch(async (err: unknown) => {
      throw (await d.failure) ?? err;
    })
    .then(async (check) => {
      const failed = await d.failure;
      if (failed) throw failed;
      return check;
    })
    .finally(() => {
      signal?.removeEventListener("abort", onAbort);
      d.kill();
    });
  // Errors surface through `result`; a failed parse must not leave writers blocked.
  result.catch(() => d.input.resume());
  return { sink: d.input, result };
}

/** Decompressing programs started and not yet exited (a restore must leave none behind; tests read it). */
let running = 0;
export function runningDecompressors(): number {
  return running;
}

export interface Decompressor {
  /** Compressed bytes in. */
  input: PassThrough;
  /** The tar out. */
  output: Readable;
  /** Resolves with the decompressor's own error once it is done, or undefined. */
  failure: Promise<Error | undefined>;
  kill(): void;
}

/**
 * A decompressor for an archive, chosen by its file name's suffix; undefined if unknown. `label`
 * names it in errors. With `path`, a decompressing program reads that file itself (its input
 * stream then stays unused); other kinds return undefined, to be fed as a stream.
 */
export function decompressor(name: string, label = name, path?: string): Decompressor | undefined {
  const tool = TOOLS.find((t) => name.endsWith(t.suffix));
  if (!tool) return undefined;
  if (path !== undefined && !tool.cmd) return undefined;
  const input = new PassThrough({ highWaterMark: 1 << 20 });
  if (tool.suffix === ".tar.gz") {
    const gunzip = createGunzip();
    const failure = pipeline(input, gunzip).then(
      () => undefined,
      (e: unknown) => new IntegrityError(`${label}: gzip: ${(e as Error).message}`),
    );
    return { input, output: gunzip, failure, kill: () => gunzip.destroy() };
  }
  if (!tool.cmd) return { input, output: input, failure: Promise.resolve(undefined), kill: () => {} };
  const [cmd, ...args] = tool.cmd as [string, ...string[]];
  const proc = spawn(cmd, path === undefined ? args : [...args, resolvePath(path)], { stdio: ["pipe", "pipe", "pipe"] });
  running++;
  let gone = false;
  const exited = () => {
    if (!gone) running--;
    gone = true;
  };
  proc.once("close", exited);
  proc.once("error", exited);
  let stderr = "";
  let killed = false;
  proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  proc.stdin.on("error", () => undefined);
  if (path === undefined) input.pipe(proc.stdin);
  else proc.stdin.end();
  const failure = new Promise<Error | undefined>((resolve) => {
    // A missing program says nothing about the archive: it is this machine's problem.
    proc.on("error", (e) =>
      resolve(
        (e as { code?: string }).code === "ENOENT"
          ? new RepositoryError(`cannot decompress ${label}: the ${cmd} program is not installed`, { hint: `install ${cmd} (the incus-backup image has it)` })
          : new RepositoryError(`cannot run ${cmd} to decompress ${label}: ${e.message}`),
      ),
    );
    proc.on("close", (code) =>
      resolve(code === 0 || killed ? undefined : new IntegrityError(`${label}: ${cmd} failed: ${stderr.trim() || `exit ${code}`}`)),
    );
  });
  return {
    input,
    output: proc.stdout,
    failure,
    kill: () => {
      killed = true;
      proc.kill();
    },
  };
}

/** How much of an archive indexWatcher decompresses at most before it gives up (the index comes first). */
const WATCH_LIMIT = 16 << 20;

export interface IndexWatcher {
  /** The next bytes of the archive (ignored once the answer is known). */
  write(chunk: Buffer): void;
  /** The archive ended, or its bytes stopped coming (an upload that failed): the answer is then undefined. Once is enough; again does nothing. */
  end(): void;
  /** The `name:` of its backup/index.yaml; undefined if it does not start with one. */
  result: Promise<string | undefined>;
}

/**
 * Finds the `name:` of an archive's backup/index.yaml in its first bytes while they pass by (an
 * upload): Incus writes the index first, so a few kilobytes are decompressed and the rest is left
 * alone. A restore reads the archive once this way (a restic repository runs one `restic dump`
 * per restored item, not one more to look inside first). After WATCH_LIMIT bytes without an
 * answer it answers undefined.
 */
export function indexWatcher(name: string, label = name): IndexWatcher {
  const d = decompressor(name, label);
  if (!d) return { write: () => undefined, end: () => undefined, result: Promise.reject(new IntegrityError(`${label}: unknown archive type`)) };
  let settled = false;
  let ended = false;
  let fed = 0;
  let settle!: (v: string | undefined) => void;
  let fail!: (e: Error) => void;
  const result = new Promise<string | undefined>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  }).finally(() => {
    settled = true;
    d.kill();
    d.output.destroy();
    d.input.destroy();
  });
  result.catch(() => undefined);
  const parser = new Parser({
    onReadEntry: (entry: ReadEntry) => {
      if (entry.type === "Directory") return entry.resume();
      if (entry.path !== "backup/index.yaml") return settle(undefined);
      const chunks: Buffer[] = [];
      entry.on("data", (c: Buffer) => chunks.push(c));
      entry.on("end", () => settle(indexName(Buffer.concat(chunks).toString("utf8"))));
    },
  });
  parser.on("error", (e: Error) => fail(new IntegrityError(`${label}: not a valid archive: ${e.message}`)));
  d.output.on("error", (e: Error) => {
    if (!settled) fail(e instanceof IntegrityError || e instanceof InterruptedError ? e : new IntegrityError(`${label}: not a valid archive: ${e.message}`));
  });
  d.output.on("end", () => settle(undefined));
  d.output.pipe(parser as unknown as NodeJS.WritableStream);
  d.input.on("error", () => undefined);
  return {
    write(chunk) {
      if (settled || ended) return;
      if (fed >= WATCH_LIMIT) return settle(undefined);
      fed += chunk.length;
      d.input.write(chunk);
    },
    end() {
      if (settled || ended) return;
      ended = true;
      d.input.end();
    },
    result,
  };
}

/** Reads a whole stored archive through decompression and tar parsing. `label` names it in errors; its suffix picks the decompressor. */
export async function readArchive(file: Readable, label: string, signal?: AbortSignal): Promise<ArchiveCheck> {
  const checker = archiveChecker(label, signal);
  file.on("error", (e) => checker.sink.destroy(e));
  file.pipe(checker.sink);
  try {
    return await checker.result;
  } finally {
    file.destroy();
  }
}

/** Walks the decompressed tar to its end (see TarWalker for what "whole" means). */
function parseTar(source: Readable, name: string): Promise<ArchiveCheck> {
  return new Promise((resolve, reject) => {
    const walker = new TarWalker();
    const fail = (e: unknown) =>
      reject(e instanceof IntegrityError || e instanceof InterruptedError ? e : new IntegrityError(`${name}: not a valid archive: ${(e as Error).message}`));
    source.on("error", fail);
    walker.on("error", fail);
    walker.on("finish", () => {
      const r = walker.result();
      if ("problem" in r) fail(new Error(r.problem));
      else resolve(r);
    });
    source.pipe(walker);
  });
}
