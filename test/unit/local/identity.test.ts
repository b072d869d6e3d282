// The install id the repository locks record, and a process's start time.

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { envInstallId, installId, processStart } from "../../../src/local/identity";
import { tempDir } from "../helpers/repo";

describe("installId", () => {
  it("is made once in the state directory and read back the same, also by runs at once", async () => {
    const dir = join(await tempDir(), "state");
    const ids = await Promise.all([installId(dir, {}), installId(join(dir, "."), {})]);
    expect(ids[0]).toMatch(/^[0-9a-f]{16}$/);
    expect(ids[1]).toBe(ids[0]);
    expect((await readFile(join(dir, "install-id"), "utf8")).trim()).toBe(ids[0]);
  });

  it("comes from INCUS_BACKUP_INSTALL_ID where that is a valid id (install.sh sets it), and nothing is written", async () => {
    const dir = join(await tempDir(), "state");
    expect(await installId(dir, { INCUS_BACKUP_INSTALL_ID: "0123456789abcdef" })).toBe("0123456789abcdef");
    expect(await envInstallId({ INCUS_BACKUP_STATE_DIR: dir, INCUS_BACKUP_INSTALL_ID: "0123456789abcdef" })).toBe("0123456789abcdef");
    await expect(readFile(join(dir, "install-id"))).rejects.toThrow(/ENOENT/);
    // Not an id: the state directory's is used.
    expect(await installId(dir, { INCUS_BACKUP_INSTALL_ID: "../x" })).toMatch(/^[0-9a-f]{16}$/);
  });

  it("is not made by readers (create: false)", async () => {
    const dir = join(await tempDir(), "state");
    expect(await envInstallId({ INCUS_BACKUP_STATE_DIR: dir }, { create: false })).toBeUndefined();
    await expect(readFile(join(dir, "install-id"))).rejects.toThrow(/ENOENT/);
  });

  it("is undefined where the state directory cannot be made", async () => {
    const file = join(await tempDir(), "a-file");
    await import("node:fs/promises").then((fs) => fs.writeFile(file, ""));
    expect(await installId(join(file, "state"), {})).toBeUndefined();
  });
});

describe("processStart", () => {
  it("reads this process's start time, and nothing for a PID that does not exist", () => {
    expect(processStart(process.pid)).toMatch(/^\d+$/);
    expect(processStart(2 ** 22 + 1)).toBeUndefined();
  });
});
