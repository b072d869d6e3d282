// Image downloads: the parts of a split image reach their sinks one after the other, whatever the sinks' speed.

import { Readable, Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { IncusClient } from "../../../src/incus/client";
import { getImageFile, type ImagePart } from "../../../src/incus/images";

const BOUNDARY = "xYzZY";

function multipart(parts: Array<[field: string, data: Buffer]>): Buffer {
  const chunks: Buffer[] = [];
  for (const [field, data] of parts) {
    chunks.push(Buffer.from(`--${BOUNDARY}\r\nContent-Disposition: form-data; name="${field}"; filename="${field}.tar"\r\nContent-Type: application/octet-stream\r\n\r\n`));
    chunks.push(data, Buffer.from("\r\n"));
  }
  chunks.push(Buffer.from(`--${BOUNDARY}--\r\n`));
  return Buffer.concat(chunks);
}

/** A client whose image export answers with `body`, in small chunks. */
function fakeClient(body: Buffer): IncusClient {
  return {
    bulk: async () => ({
      statusCode: 200,
      headers: { "content-type": `multipart/form-data; boundary=${BOUNDARY}`, "content-length": String(body.length) },
      body: Readable.from((function* () {
        for (let i = 0; i < body.length; i += 4096) yield body.subarray(i, i + 4096);
      })()),
    }),
  } as unknown as IncusClient;
}

describe("getImageFile, split image", () => {
  it("writes all of the metadata part before any of the rootfs part, even when the first sink is slow", async () => {
    const meta = Buffer.alloc(64 << 10, 1);
    const rootfs = Buffer.alloc(64 << 10, 2);
    const order: ImagePart[] = [];
    const received: Record<string, number> = {};
    // A sink that queues: each write completes later, as a file on a busy disk does.
    const sink = (part: ImagePart, delayMs: number) =>
      new Writable({
        highWaterMark: 1 << 20,
        write(chunk: Buffer, _enc, done) {
          order.push(part);
          received[part] = (received[part] ?? 0) + chunk.length;
          setTimeout(done, delayMs);
        },
      });
    const parts = await getImageFile(fakeClient(multipart([["metadata", meta], ["rootfs", rootfs]])), "default", "f".repeat(64), async (part) =>
      sink(part, part === "meta" ? 5 : 0),
    );
    expect(parts.meta.size).toBe(meta.length);
    expect(parts.rootfs?.size).toBe(rootfs.length);
    expect(received).toEqual({ meta: meta.length, rootfs: rootfs.length });
    const firstRootfs = order.indexOf("rootfs");
    expect(order.slice(firstRootfs)).not.toContain("meta");
  });
});
