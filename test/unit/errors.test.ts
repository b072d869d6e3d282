// Exit codes of errors and of runs of several items.

import { describe, expect, it } from "vitest";
import { ExitCode, IntegrityError, exitCodeOf, runExitCode } from "../../src/errors";

describe("exitCodeOf", () => {
  it("takes the tool's own errors' codes, maps disk errors to the repository code, and the rest to failure", () => {
    expect(exitCodeOf(new IntegrityError("x"))).toBe(ExitCode.Integrity);
    expect(exitCodeOf(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }))).toBe(ExitCode.Repository);
    expect(exitCodeOf(new Error("wrapped", { cause: Object.assign(new Error("x"), { code: "EDQUOT" }) }))).toBe(ExitCode.Repository);
    expect(exitCodeOf(new Error("Incus said no"))).toBe(ExitCode.Failure);
  });
});

describe("runExitCode", () => {
  const ok = { ok: true };
  const full = { ok: false, exitCode: ExitCode.Repository };
  const corrupt = { ok: false, exitCode: ExitCode.Integrity };
  it.each<[string, Array<{ ok: boolean; exitCode?: (typeof ExitCode)[keyof typeof ExitCode] }>, number]>([
    ["all ok", [ok, ok], 0],
    ["nothing to do", [], 0],
    ["some failed", [ok, full], 3],
    ["all failed of a full disk", [full, full], 8],
    ["all failed, corrupt", [corrupt], 9],
    ["all failed, of different causes", [full, corrupt], 1],
    ["all failed, no code", [{ ok: false }], 1],
  ])("%s -> %d", (_l, results, code) => {
    expect(runExitCode(results)).toBe(code);
  });

  it("counts failures and successes outside the items (a configuration restore)", () => {
    expect(runExitCode([full], 0, 1)).toBe(3);
    expect(runExitCode([full], 1, 0)).toBe(1);
    expect(runExitCode([], 1, 0)).toBe(1);
  });
});
