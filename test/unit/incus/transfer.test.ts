import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { drained } from "../../../src/incus/transfer";

/** A writable whose writes fail once it is "full", like a file on a full disk. */
function failingSink(highWaterMark = 4): Writable {
  return new Writable({
    highWaterMark,
    write(_chunk, _enc, done) {
      setImmediate(() => done(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" })));
    },
  });
}

describe("drained", () => {
  it("resolves at once when the stream wants more", async () => {
    const w = new Writable({ write: (_c, _e, done) => done() });
    await expect(drained(w)).resolves.toBeUndefined();
  });

  it("rejects when the stream fails while waited for", async () => {
    const w = failingSink();
    w.on("error", () => undefined);
    expect(w.write(Buffer.alloc(16))).toBe(false);
    await expect(drained(w)).rejects.toThrow(/ENOSPC/);
  });

  it("rejects, instead of waiting for ever, when the stream failed before (no second error comes)", async () => {
    const w = failingSink();
    w.on("error", () => undefined);
    w.write(Buffer.alloc(16));
    await new Promise((r) => setTimeout(r, 10));
    expect(w.errored).toBeTruthy();
    // A later write neither drains nor errors again: this is where a download used to hang.
    expect(w.write(Buffer.alloc(16), () => undefined)).toBe(false);
    await expect(drained(w)).rejects.toThrow(/ENOSPC/);
  });

  it("rejects when the signal fires", async () => {
    const w = new Writable({ highWaterMark: 1, write: () => undefined });
    w.write(Buffer.alloc(8));
    const ac = new AbortController();
    const p = drained(w, ac.signal);
    ac.abort();
    await expect(p).rejects.toThrow(/interrupted/);
  });
});
