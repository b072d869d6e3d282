// The directory repository's modes under any umask. A file of its own, run in a process of its own
// (vitest.config.ts, UNIT_IN_PROCESSES): process.umask cannot be set in a worker thread.

import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { DirectoryStore } from "../../../src/repository/directory";
import { data, tempDir, web, writeVersion } from "../helpers/repo";

const V1 = "20250914-030002";
const V2 = "20250915-030002";

/** Every file and directory under `root` with its permission bits, root itself left out. */
async function modes(root: string): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  for (const rel of (await readdir(root, { recursive: true })).sort()) {
    const st = await stat(join(root, rel));
    out.push([rel, `${st.isDirectory() ? "d" : "f"}${(st.mode & 0o777).toString(8)}`]);
  }
  return out;
}

describe("DirectoryStore modes", () => {
  it.each([0o022, 0o000, 0o077])("makes files 0600 and directories 0700 under umask %s", async (mask) => {
    const root = await tempDir();
    const old = process.umask(mask);
    try {
      const { repo } = await DirectoryStore.open(root, { create: true });
      await writeVersion(repo, web, V1);
      await writeVersion(repo, data, V1);
      await repo.begin(web, V2); // a leftover in .tmp
      await repo.reserveVersion(new Date("2025-09-14T03:00:02Z"), { command: "test", started: "2025-09-14T03:00:02Z", status: "running" });
    } finally {
      process.umask(old);
    }
    const all = await modes(root);
    expect(all.length).toBeGreaterThan(15);
    for (const [path, mode] of all) expect([path, mode]).toEqual([path, mode.startsWith("d") ? "d700" : "f600"]);
  });
});
