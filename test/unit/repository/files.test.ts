import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { drained } from "../../../src/incus/transfer";
import { FLUSH_EVERY, HashingFileWriter } from "../../../src/repository/files";

async function fileHandlePrototype(dir: string): Promise<{ datasync: () => Promise<void> }> {
  const fh = await open(join(dir, "probe"), "w");
  await fh.close();
  return Object.getPrototypeOf(fh) as { datasync: () => Promise<void> };
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

  it("flushes to disk in the background while a big file is written, and the file is whole", async () => {
    const proto = await fileHandlePrototype(dir);
    const spy = vi.spyOn(proto, "datasync");
    const w = await HashingFileWriter.create(join(dir, "big"));
    const chunk = 4 * 1024 * 1024;
    const chunks = (2 * FLUSH_EVERY) / chunk + 3;
    const sum = await writeChunks(w, chunks, chunk);
    expect(spy.mock.calls.length).toBeGreaterThanOrEqual(1);
    expect(w.entry().size).toBe(chunks * chunk);
    expect(createHash("sha256").update(readFileSync(join(dir, "big"))).digest("hex")).toBe(sum);
  });

  it("fails the next write when a background flush fails (NFS may report a full disk only then)", async () => {
    const proto = await fileHandlePrototype(dir);
    vi.spyOn(proto, "datasync").mockRejectedValue(Object.assign(new Error("ENOSPC: no space left on device, fdatasync"), { code: "ENOSPC" }));
    const w = await HashingFileWriter.create(join(dir, "full"));
    w.on("error", () => undefined);
    const chunk = 4 * 1024 * 1024;
    await expect(writeChunks(w, FLUSH_EVERY / chunk + 8, chunk)).rejects.toThrow(/ENOSPC/);
  });
});
