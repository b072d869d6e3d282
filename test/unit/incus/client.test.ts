// Transport errors in words a user can act on: a connection Incus closed mid-request.

import { describe, expect, it } from "vitest";
import { brokenConnection } from "../../../src/incus/client";

describe("brokenConnection", () => {
  it.each<[string, unknown, RegExp | undefined]>([
    ["undici's closed socket", Object.assign(new Error("other side closed"), { code: "UND_ERR_SOCKET" }), /^Incus closed the connection \(other side closed\); did the daemon restart or stop\?$/],
    ["a reset, wrapped by undici", Object.assign(new Error("fetch failed"), { cause: Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }) }), /\(read ECONNRESET\)/],
    ["a write into a closed socket", Object.assign(new Error("write EPIPE"), { code: "EPIPE" }), /\(write EPIPE\)/],
    ["a full disk is not Incus's doing", Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }), undefined],
    ["a plain error", new Error("boom"), undefined],
  ])("%s", (_label, err, expected) => {
    const text = brokenConnection(err);
    if (expected === undefined) expect(text).toBeUndefined();
    else expect(text).toMatch(expected);
  });
});
