import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { drained } from "../../../src/incus/transfer";
import { WRITE_BUFFER } from "../../../src/chunks";
import { FLUSH_EVERY, HashingFileWriter, mkdirPrivate, writeFileAtomic } from "../../../src/repository/files";

type FileHandleMethods = { datasync: () => Promise<void>; writev: (b: Buffer[]) => Promise<unknown>; write: (...a: unknown[]) => Promise<unknown> };

async function fileHandlePrototype(dir: string): Promise<FileHandleMethods> {
  const fh = await open(join(dir, "probe"), "w");
  await fh.close();
  return Object.getPrototypeOf(fh) as FileHandleMethods;
}

/** Writes `chunks` chunks of `size` bytes, honouring back-pressure, and ends the stream. */
async function writeChunks(w: HashingFileWriter, chunks: number, size: number): Promise<string> {
  const h = createHash("sha256");
  for (let i = 0; i < chunks; i++) {
    const b = Buffer.alloc(size, i % 251);
    h.update(b);
    if (!w.write(b)) await drained(w);
  }
  await new Promise<void>((resolve, reject) => {
    w.once("error", reject);
    w.end(() => resolve());
  });
  return h.digest("hex");
}

describe("HashingFileWriter", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "ibk-files-"));
  });
  afterEach(() => {
    vi.restoreAllMocks();
    rmSync(dir, { recursive: true, force: true });
  });

  it("writes a private file and reports its size and sha256", async () => {
    const w = await HashingFileWriter.create(join(dir, "a"));
    const sum = await writeChunks(w, 3, 1000);
    expect(w.entry()).toEqual({ name: "a", size: 3000, sha256: sum });
    expect(statSync(join(dir, "a")).mode & 0o777).toBe(0o600);
    expect(createHash("sha256").update(readFileSync(join(dir, "a"))).digest("hex")).toBe(sum);
  });

  it("collects a download's small pieces into writes of WRITE_BUFFER bytes, and the file is whole", async () => {
    const proto = await fileHandlePrototype(dir);
    const writev = vi.spyOn(proto, "writev");
    const write = vi.spyOn(proto, "write");
    const w = await HashingFileWriter.create(join(dir, "pieces"));
    const piece = 16 * 1024 + 7; // odd sizes, as a socket delivers them
    const pieces = Math.ceil((5 * WRITE_BUFFER) / piece);
    const sum = await writeChunks(w, pieces, piece);
    expect(w.entry().size).toBe(pieces * piece);
    expect(createHash("sha256").update(readFileSync(join(dir, "pieces"))).digest("hex")).toBe(sum);
    // Five full batches and the rest at the end: not one write per piece.
    expect(writev.mock.calls.length + write.mock.calls.length).toBeLessThanOrEqual(7);
  });

  it("flushes to disk in the background while a big file is written, and the file is whole", async () => {
    const proto = await fileHandlePrototype(dir);
    const spy = vi.spyOn(proto, "datasync");
    // The flushing every FLUSH_EVERY (64 MiB) bytes, proved on 4 MiB: 11 MiB make two flushes.
    const every = 4 * 1024 * 1024;
    expect(FLUSH_EVERY).toBe(64 * 1024 * 1024);
    const w = await HashingFileWriter.create(join(dir, "big"), undefined, every);
    const chunk = 1024 * 1024;
    const chunks = (2 * every) / chunk + 3;
    const sum = await writeChunks(w, chunks, chunk);
    expect(spy.mock.calls.length).toBeGreaterThanOrEqual(1);
    expect(w.entry().size).toBe(chunks * chunk);
    expect(createHash("sha256").update(readFileSync(join(dir, "big"))).digest("hex")).toBe(sum);
  }, 60_000);

  it("fails the next write when a background flush fails (NFS may report a full disk only then)", async () => {
    const proto = await fileHandlePrototype(dir);
    vi.spyOn(proto, "datasync").mockRejectedValue(Object.assign(new Error("ENOSPC: no space left on device, fdatasync"), { code: "ENOSPC" }));
    const every = 4 * 1024 * 1024;
    const w = await HashingFileWriter.create(join(dir, "full"), undefined, every);
    w.on("error", () => undefined);
    const chunk = 1024 * 1024;
    await expect(writeChunks(w, every / chunk + 8, chunk)).rejects.toThrow(/ENOSPC/);
  }, 60_000);
});

describe("first use by runs at once", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "incus-backup-first-use-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("mkdirPrivate: many makers of the same new directories all succeed, and every level is 0700", async () => {
    const paths = ["runs", "state", "journal", ".tmp/a", ".tmp/b", ".tmp/c/d", "instances/default/web/20250914-030002"];
    await Promise.all([...paths, ...paths].map((p) => mkdirPrivate(join(dir, p))));
    for (const p of [".tmp", ".tmp/c", "instances", "instances/default", "instances/default/web", ...paths]) {
      expect((statSync(join(dir, p)).mode & 0o777).toString(8), p).toBe("700");
    }
  });

  it("writeFileAtomic: writes at once to one path leave one whole file and no temp files", async () => {
    const texts = Array.from({ length: 12 }, (_, i) => JSON.stringify({ writer: i, pad: "x".repeat(1000 * i) }));
    await Promise.all(texts.map((t) => writeFileAtomic(join(dir, "state.json"), t)));
    expect(texts).toContain(readFileSync(join(dir, "state.json"), "utf8"));
    expect(readdirSync(dir)).toEqual(["state.json"]);
  });
});
