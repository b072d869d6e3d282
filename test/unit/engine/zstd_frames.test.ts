import { spawnSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { PzstdHeaders, PzstdHeaderWriter } from "../../../src/engine/zstd_frames";

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

function header(size: number, magic = 0x184d2a50): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt32LE(magic, 0);
  h.writeUInt32LE(4, 4);
  h.writeUInt32LE(size, 8);
  return h;
}

/** Feeds `input` to a parser cut at the given offsets and returns everything it kept. */
function strip(input: Buffer, cuts: number[]): Buffer {
  const p = new PzstdHeaders();
  const out: Buffer[] = [];
  let at = 0;
  for (const c of [...cuts, input.length]) {
    out.push(...p.push(input.subarray(at, c)));
    at = c;
  }
  out.push(...p.end());
  return Buffer.concat(out);
}

describe("PzstdHeaders", () => {
  const frames = [randomBytes(40), randomBytes(1), randomBytes(300)].map((f) => Buffer.concat([ZSTD_MAGIC, f]));
  const pz = Buffer.concat(frames.flatMap((f) => [header(f.length), f]));
  const plain = Buffer.concat(frames);

  it("removes every header and keeps every frame byte, wherever the chunks are cut", () => {
    // Buffer.equals, not toEqual, inside the loop: a deep compare of every byte for every cut made this test take a second.
    const wrong: string[] = [];
    for (let a = 0; a <= pz.length; a += 3) {
      for (const b of [a, a + 1, a + 11, a + 12, a + 13, pz.length]) {
        if (b > pz.length) continue;
        if (!strip(pz, [a, b]).equals(plain)) wrong.push(`${a},${b}`);
      }
    }
    expect(wrong).toEqual([]);
  });

  it("leaves a plain zstd stream alone", () => {
    expect(strip(plain, [2, 5, 100])).toEqual(plain);
  });

  it("passes through a stream that does not start as pzstd's", () => {
    const odd = Buffer.from(header(5));
    odd.writeUInt32LE(8, 4); // a skippable frame, but not of pzstd's shape
    expect(strip(odd, [1, 6])).toEqual(odd);
    const gzip = Buffer.from([0x1f, 0x8b, 8, 0, 1, 2, 3]);
    expect(strip(gzip, [])).toEqual(gzip);
    expect(strip(Buffer.from([0x50, 0x2a]), [1])).toEqual(Buffer.from([0x50, 0x2a]));
  });

  it("refuses a stream that leaves pzstd's shape once started", () => {
    const tail = Buffer.concat([header(frames[0]!.length), frames[0]!, Buffer.from("not a header, not a frame")]);
    expect(() => strip(tail, [13])).toThrow(/expected a pzstd header after frame 1/);
    const noMagic = Buffer.concat([header(5), Buffer.from([0x28, 0xb5, 0x2f, 0xfe, 1])]);
    expect(() => strip(noMagic, [14])).toThrow(/frame 1 does not start with the zstd magic/);
    expect(() => strip(Buffer.concat([header(2), Buffer.from([0x28, 0xb5])]), [])).toThrow(/announced with 2 bytes/);
  });

  it("refuses a stream cut off inside a frame or a header", () => {
    expect(() => strip(pz.subarray(0, pz.length - 7), [50])).toThrow(/ends 7 bytes before the end of frame 3/);
    const halfHeader = Buffer.concat([header(frames[0]!.length), frames[0]!, header(9).subarray(0, 6)]);
    expect(() => strip(halfHeader, [])).toThrow(/ends inside a header/);
  });

  it("turns real pzstd output into a file that starts with the zstd magic and decompresses to the same bytes", () => {
    // Half random, half text, several MB: pzstd cuts it into several frames.
    const data = Buffer.concat([randomBytes(3 << 20), Buffer.from(randomBytes(3 << 20).toString("hex"))]);
    const compressed = spawnSync("pzstd", ["-p", "2", "-c"], { input: data, maxBuffer: 64 << 20 });
    expect(compressed.status).toBe(0);
    expect(compressed.stdout.subarray(0, 4)).not.toEqual(ZSTD_MAGIC);
    const p = new PzstdHeaders();
    const kept = Buffer.concat([...p.push(compressed.stdout.subarray(0, 1000)), ...p.push(compressed.stdout.subarray(1000)), ...p.end()]);
    expect(p.removed).toBeGreaterThan(1);
    expect(kept.subarray(0, 4)).toEqual(ZSTD_MAGIC);
    const back = spawnSync("zstd", ["-d", "-c"], { input: kept, maxBuffer: 64 << 20 });
    expect(back.status).toBe(0);
    expect(createHash("sha256").update(back.stdout).digest("hex")).toBe(createHash("sha256").update(data).digest("hex"));
  });
});

describe("PzstdHeaderWriter", () => {
  it("writes the frames into its destination and finishes after it", async () => {
    const got: Buffer[] = [];
    let destFinished = false;
    const dest = new Writable({
      highWaterMark: 8,
      write(chunk: Buffer, _e, done) {
        got.push(chunk);
        setImmediate(done);
      },
      final(done) {
        setTimeout(() => {
          destFinished = true;
          done();
        }, 20);
      },
    });
    const w = new PzstdHeaderWriter(dest);
    const frame = Buffer.concat([ZSTD_MAGIC, randomBytes(100)]);
    w.write(header(frame.length));
    w.write(frame);
    await new Promise<void>((resolve, reject) => {
      w.on("error", reject);
      w.end(() => resolve());
    });
    expect(destFinished).toBe(true);
    expect(Buffer.concat(got)).toEqual(frame);
  });

  it("fails when its destination fails (a full disk)", async () => {
    const dest = new Writable({
      write(_c, _e, done) {
        done(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }));
      },
    });
    const w = new PzstdHeaderWriter(dest);
    const failed = new Promise((resolve) => w.on("error", resolve));
    w.write(Buffer.concat([header(5), ZSTD_MAGIC, Buffer.from([1])]));
    await expect(failed).resolves.toMatchObject({ code: "ENOSPC" });
  });

  it("fails, and fails its destination, on a stream that leaves pzstd's shape", async () => {
    let destError: Error | undefined;
    const dest = new Writable({ write: (_c, _e, done) => done() });
    dest.on("error", (e) => (destError = e));
    const w = new PzstdHeaderWriter(dest);
    const failed = new Promise<Error>((resolve) => w.on("error", resolve));
    w.write(Buffer.concat([header(5), Buffer.from("oops!")]));
    await expect(failed).resolves.toMatchObject({ message: expect.stringMatching(/does not start with the zstd magic/) });
    await new Promise((r) => setImmediate(r));
    expect(dest.destroyed).toBe(true);
    expect(destError?.message).toMatch(/zstd magic/);
  });
});
