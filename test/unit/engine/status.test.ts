// Whether `status` can tell that the service recorded in the repository still runs.

import { describe, expect, it } from "vitest";
import type { DaemonState } from "../../../src/engine/daemon";
import { daemonAlive } from "../../../src/engine/status";

const base: DaemonState = { host: "backup", pid: 4242, started: "2025-09-14T03:00:00.000Z", schedule: "0 3 * * *", tz: "UTC", updated: "2025-09-14T03:00:00.000Z" } as DaemonState;
const gone = () => true;
const running = () => false;

describe("daemonAlive", () => {
  it.each<[string, DaemonState, Parameters<typeof daemonAlive>[1], boolean | null]>([
    ["this install, its process runs", { ...base, install: "a1", start: "7" }, { install: "a1", processGone: running }, true],
    ["this install, its process is gone", { ...base, install: "a1", start: "7" }, { install: "a1", processGone: gone }, false],
    // Every deployed container is called `backup`: the host name says nothing about whose PID it is.
    ["another install of the same host name: cannot tell", { ...base, install: "b2" }, { host: "backup", install: "a1", processGone: gone, pidAlive: () => false }, null],
    ["this process has no install id: cannot tell", { ...base, install: "a1" }, { host: "backup", processGone: gone, pidAlive: () => false }, null],
    ["an older state without an install id, same host: by PID", base, { host: "backup", install: "a1", pidAlive: () => false }, false],
    ["an older state, another host: cannot tell", base, { host: "other", pidAlive: () => true }, null],
  ])("%s", (_label, state, o, expected) => {
    expect(daemonAlive(state, o)).toBe(expected);
  });

  it("passes the recorded start time, so a reused PID counts as gone", () => {
    const asked: Array<[number, string | undefined]> = [];
    daemonAlive({ ...base, install: "a1", start: "99" }, { install: "a1", processGone: (pid, start) => (asked.push([pid, start]), false) });
    expect(asked).toEqual([[4242, "99"]]);
  });
});
