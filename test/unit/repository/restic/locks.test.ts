// Which of restic's own locks the tool may clear, and the record of the restic processes it started.

import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { processStart } from "../../../../src/local/identity";
import { forgetEndedChildren, judgeResticLock, readChildren, recordChild, RESTIC_STALE_MS, type ResticLock } from "../../../../src/repository/restic/locks";
import { tempDir } from "../../helpers/repo";

const NOW = new Date("2025-09-14T03:30:00.000Z");
const lock = (over: Partial<ResticLock> = {}): ResticLock => ({ time: new Date(NOW.getTime() - 60_000).toISOString(), exclusive: false, hostname: "backup", username: "root", pid: 4242, ...over });
const self = { host: "backup", children: [{ pid: 4242, start: "777" }] };
const gone = () => true;
const running = () => false;

describe("judgeResticLock", () => {
  it.each<[string, ResticLock, typeof self, (pid: number, start?: string) => boolean, boolean, RegExp]>([
    ["a restic of this install that is gone", lock(), self, gone, true, /restic 4242 of this install is gone/],
    ["a restic of this install that runs", lock(), self, running, false, /that process runs/],
    // The danger restic's own rule has: every deployed container is called `backup`.
    ["this host name, a PID this install never started, not running here", lock({ pid: 5555 }), self, gone, false, /another host of the same name\?/],
    ["this host name, a PID not started by this install but running here", lock({ pid: 5555 }), self, running, false, /that process runs/],
    ["another host's", lock({ hostname: "nas" }), self, gone, false, /on another host/],
    ["anyone's, not refreshed for over 30 minutes (restic's own rule)", lock({ hostname: "nas", time: new Date(NOW.getTime() - RESTIC_STALE_MS - 60_000).toISOString() }), self, running, true, /not refreshed for 31 min/],
  ])("%s", (_label, l, s, isGone, clear, why) => {
    const v = judgeResticLock(l, NOW, s, isGone);
    expect(v.clear).toBe(clear);
    expect(v.why).toMatch(why);
  });

  it("checks the recorded start time, so a reused PID is not taken for our restic", () => {
    const asked: Array<[number, string | undefined]> = [];
    judgeResticLock(lock(), NOW, self, (pid, start) => (asked.push([pid, start]), false));
    expect(asked[0]).toEqual([4242, "777"]);
  });
});

describe("the children file", () => {
  it("records PIDs with their start times, and forgets the ended ones only", async () => {
    const file = join(await tempDir(), "restic-children");
    recordChild(file, process.pid);
    await writeFile(file, `${await readFile(file, "utf8")}4194305 12\nnot a line\n`);
    expect(await readChildren(file)).toEqual([
      { pid: process.pid, start: processStart(process.pid) },
      { pid: 4194305, start: "12" },
    ]);
    await forgetEndedChildren(file);
    expect(await readChildren(file)).toEqual([{ pid: process.pid, start: processStart(process.pid) }]);
  });

  it("is no error where it cannot be written", async () => {
    const file = join(await tempDir(), "missing-dir", "restic-children");
    recordChild(file, process.pid);
    expect(await readChildren(file)).toEqual([]);
    await forgetEndedChildren(file);
  });
});
