import { describe, expect, it } from "vitest";
import { TarWalker } from "../../../src/engine/tarwalk";

/** A minimal ustar header for `name` holding `size` bytes (type "0", or `type`). */
function header(name: string, size: number, type = "0"): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, "utf8");
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(size.toString(8).padStart(11, "0") + "\0", 124);
  h.write("00000000000\0", 136);
  h.write(type, 156);
  h.write("ustar\0", 257);
  h.write("00", 263);
  h.fill(" ", 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
}

function entry(name: string, data: Buffer | string, type = "0"): Buffer {
  const body = Buffer.from(data);
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([header(name, body.length, type), body, pad]);
}

const END = Buffer.alloc(1024);

async function walk(data: Buffer, chunk = 700): Promise<ReturnType<TarWalker["result"]>> {
  const w = new TarWalker();
  for (let i = 0; i < data.length; i += chunk) {
    await new Promise<void>((resolve, reject) => w.write(data.subarray(i, i + chunk), (e) => (e ? reject(e) : resolve())));
  }
  await new Promise<void>((resolve) => w.end(resolve));
  return w.result();
}

const index = entry("backup/index.yaml", "name: web\nbackend: dir\n");
const file = entry("backup/container/rootfs/etc/hostname", "web\n");
const big = entry("backup/container/rootfs/big", Buffer.alloc(5000, 7));

describe("TarWalker", () => {
  it("accepts a whole archive, counts its entries and reads the index name, in any chunk size", async () => {
    const tar = Buffer.concat([index, file, big, END, Buffer.alloc(4096)]);
    for (const chunk of [1, 100, 512, 700, 100_000]) {
      expect(await walk(tar, chunk)).toEqual({ entries: 3, indexName: "web" });
    }
  });

  it("does not count pax records as entries", async () => {
    const tar = Buffer.concat([index, entry("PaxHeader/x", "30 path=backup/long/name\n", "x"), file, END]);
    expect(await walk(tar)).toEqual({ entries: 2, indexName: "web" });
  });

  it("refuses an archive cut between two entries (no end-of-archive marker)", async () => {
    expect(await walk(Buffer.concat([index, file]))).toEqual({ problem: expect.stringMatching(/end-of-archive marker/) });
    expect(await walk(Buffer.concat([index, file, Buffer.alloc(512)]))).toEqual({ problem: expect.stringMatching(/end-of-archive marker/) });
  });

  it("refuses an archive cut inside an entry, or inside a header", async () => {
    const tar = Buffer.concat([index, big, END]);
    expect(await walk(tar.subarray(0, index.length + 1000))).toEqual({ problem: expect.stringMatching(/middle of an entry/) });
    expect(await walk(tar.subarray(0, index.length + 100))).toEqual({ problem: expect.stringMatching(/middle of an entry/) });
  });

  it("refuses a damaged header and data after the end", async () => {
    const damaged = Buffer.concat([index, file, END]);
    damaged[index.length + 10] = damaged[index.length + 10]! ^ 0xff;
    expect(await walk(damaged)).toEqual({ problem: expect.stringMatching(/damaged header/) });
    expect(await walk(Buffer.concat([index, END, file]))).toEqual({ problem: expect.stringMatching(/after the end/) });
  });

  it("refuses an empty archive", async () => {
    expect(await walk(END)).toEqual({ problem: "it holds no files" });
  });
});
