// Reading a backup archive end to end: decompress, walk the tar, and pick out backup/index.yaml.

import { spawn } from "node:child_process";
import { createReadStream } from "node:fs";
import type { Readable } from "node:stream";
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

/**
 * Reads the whole archive through decompression and tar parsing. Throws IntegrityError if it is
 * not a complete, valid tar (truncated, corrupt compression, bad headers).
 */
export async function readArchive(path: string, signal?: AbortSignal): Promise<ArchiveCheck> {
  const tool = TOOLS.find((t) => path.endsWith(t.suffix));
  if (!tool) throw new IntegrityError(`${path}: unknown archive type`);
  const file = createReadStream(path, { highWaterMark: 1 << 20 });
  let source: Readable = file;
  let child: ReturnType<typeof spawn> | undefined;
  let childError: Promise<void> = Promise.resolve();
  if (tool.suffix === ".tar.gz") {
    source = file.pipe(createGunzip());
    file.on("error", (e) => source.destroy(e));
  } else if (tool.cmd) {
    const [cmd, ...args] = tool.cmd as [string, ...string[]];
    const proc = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    child = proc;
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    childError = new Promise<void>((resolve, reject) => {
      proc.on("error", (e) => reject(new IntegrityError(`${path}: cannot run ${cmd} to decompress it: ${e.message}`)));
      proc.on("close", (code) =>
        code === 0 || signal?.aborted ? resolve() : reject(new IntegrityError(`${path}: ${cmd} failed: ${stderr.trim() || `exit ${code}`}`)),
      );
    });
    file.pipe(proc.stdin);
    proc.stdin.on("error", () => undefined);
    source = proc.stdout;
  }
  const onAbort = () => {
    child?.kill();
    source.destroy(new InterruptedError());
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  // Keep the decompressor's verdict: when both fail, its message ("premature end") says more.
  const decompressed = childError.then(
    () => undefined,
    (e: unknown) => e,
  );
  try {
    const result = await parseTar(source, path).catch(async (err: unknown) => {
      throw (await decompressed) ?? err;
    });
    const failed = await decompressed;
    if (failed) throw failed;
    return result;
  } finally {
    signal?.removeEventListener("abort", onAbort);
    child?.kill();
    file.destroy();
  }
}

function parseTar(source: Readable, path: string): Promise<ArchiveCheck> {
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
    const fail = (e: unknown) => reject(e instanceof IntegrityError || e instanceof InterruptedError ? e : new IntegrityError(`${path}: not a valid archive: ${(e as Error).message}`));
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
