// indexWatcher: the name in an archive's backup/index.yaml, found in its first bytes as they pass
// by, and an answer (undefined) when the bytes stop coming before it, so that no decompressor is
// left waiting for more.
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { indexWatcher } from "../../../src/engine/archive";

describe("indexWatcher", () => {
  let dir: string;
  let archive: Buffer;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "incus-backup-archive-"));
    const root = join(dir, "tree");
    mkdirSync(join(root, "backup/container/rootfs"), { recursive: true });
    writeFileSync(join(root, "backup/index.yaml"), "name: web\nbackend: dir\n");
    writeFileSync(join(root, "backup/container/rootfs/data"), Buffer.alloc(256 * 1024, 7));
    execFileSync("tar", ["-cf", join(dir, "a.tar"), "-C", root, "backup/index.yaml", "backup/container"]);
    execFileSync("zstd", ["-q", join(dir, "a.tar"), "-o", join(dir, "a.tar.zst")]);
    archive = readFileSync(join(dir, "a.tar.zst"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("finds the name as the archive passes by, in pieces", async () => {
    const w = indexWatcher("instance.tar.zst");
    for (let off = 0; off < archive.length; off += 1000) w.write(archive.subarray(off, off + 1000));
    w.end();
    await expect(w.result).resolves.toBe("web");
  });

  it("answers undefined when the bytes stop before the index (an upload that failed early), and a second end does nothing", async () => {
    const w = indexWatcher("instance.tar.zst");
    w.write(archive.subarray(0, 8));
    w.end();
    w.end();
    w.write(archive.subarray(8));
    // The decompressor saw the end of its input: it fails on a truncated frame or ends, and either
    // way the watcher settles instead of waiting for ever.
    const answer = await w.result.catch(() => "failed");
    expect([undefined, "failed"]).toContain(answer);
  });

  it("answers undefined when nothing came at all", async () => {
    const w = indexWatcher("instance.tar.zst");
    w.end();
    await expect(w.result).resolves.toBeUndefined();
  });
});
