// Applying a prune plan on a store that deletes in batches and frees space separately (as restic
// does: forget, then prune): one batch, the space freed once, and a lock held by someone else is
// the whole prune's failure (exit 7), not a list of failed versions. And what --member hands the
// policy: whole items.

import { describe, expect, it } from "vitest";
import { applyPrune, planPrune } from "../../../src/engine/prune";
import { silentReporter } from "../../../src/engine/reporter";
import { EMPTY_POLICY } from "../../../src/core/retention";
import { itemLabel } from "../../../src/core/selection";
import { ExitCode, LockedError } from "../../../src/errors";
import type { DamagedVersion, StoredVersion } from "../../../src/repository/store";
import { MemoryStore } from "../helpers/memory-store";
import { manifestFields } from "../helpers/repo";

class BatchStore extends MemoryStore {
  batches: string[][] = [];
  reclaimed = 0;
  lockedBy: string | undefined;
  async deleteVersions(vs: ReadonlyArray<StoredVersion | DamagedVersion>): Promise<void> {
    if (this.lockedBy) throw new LockedError(`the restic repository memory:/ is locked by ${this.lockedBy}`);
    this.batches.push(vs.map((v) => ("manifest" in v ? v.manifest.version : v.version)));
    for (const v of vs) await this.deleteVersion(v);
  }
  async reclaim(): Promise<string> {
    this.reclaimed++;
    return "1 MiB of unused data";
  }
}

const web = { kind: "instance" as const, project: "default", name: "web" };
const VERSIONS = ["20250901-030000", "20250902-030000", "20250903-030000"];

function store(): BatchStore {
  const s = new BatchStore();
  for (const v of VERSIONS) s.put(manifestFields(web, v), { "instance.tar": Buffer.from(v) });
  return s;
}

const policy = (last: number) => ({ ...EMPTY_POLICY, last });
const signal = () => new AbortController().signal;

describe("applyPrune on a store with deleteVersions and reclaim", () => {
  it("deletes in one batch, then frees the space once", async () => {
    const s = store();
    const plan = await planPrune(s, { kinds: ["instance"], names: [] }, policy(1), "UTC");
    const r = await applyPrune(s, plan, silentReporter, signal());
    expect(r.removed.map((x) => x.version)).toEqual(["20250902-030000", "20250901-030000"]);
    expect(s.batches).toEqual([["20250902-030000", "20250901-030000"]]);
    expect(s.reclaimed).toBe(1);
    expect((await s.list()).versions.map((v) => v.manifest.version)).toEqual(["20250903-030000"]);
  });

  it("frees nothing when nothing is removed", async () => {
    const s = store();
    const plan = await planPrune(s, { kinds: ["instance"], names: [] }, policy(5), "UTC");
    await applyPrune(s, plan, silentReporter, signal());
    expect(s.batches).toEqual([]);
    expect(s.reclaimed).toBe(0);
  });

  it("a lock held by another program fails the prune with exit 7, removing nothing", async () => {
    const s = store();
    s.lockedBy = "PID 4242 on nas by root";
    const plan = await planPrune(s, { kinds: ["instance"], names: [] }, policy(1), "UTC");
    await expect(applyPrune(s, plan, silentReporter, signal())).rejects.toMatchObject({ exitCode: ExitCode.Locked, message: expect.stringContaining("PID 4242 on nas") });
    expect((await s.list()).versions).toHaveLength(3);
    expect(s.reclaimed).toBe(0);
  });
});

describe("planPrune with --member", () => {
  it("takes whole items: every version of an instance that has one backed up on that member, and that member's volume only", async () => {
    const s = new MemoryStore();
    const db = { kind: "instance" as const, project: "default", name: "db" };
    const vd = { kind: "volume" as const, project: "default", pool: "local", name: "vd" };
    // web moved from node1 to node2; db stayed on node1; vd is on both members (two items).
    VERSIONS.forEach((v, i) => s.put(manifestFields(web, v, { member: i === 2 ? "node2" : "node1" }), { "instance.tar": Buffer.from(v) }));
    for (const v of VERSIONS) s.put(manifestFields(db, v, { member: "node1" }), { "instance.tar": Buffer.from(v) });
    for (const member of ["node1", "node2"]) for (const v of VERSIONS) s.put(manifestFields({ ...vd, member }, v), { "volume.tar": Buffer.from(v) });
    const plan = await planPrune(s, { kinds: ["volume", "instance"], names: [], member: "node2" }, policy(1), "UTC");
    expect(plan.items.map((i) => [itemLabel(i.key), i.decisions.filter((d) => !d.keep).length])).toEqual([
      ["instance default/web", 2],
      ["volume default/local/vd on node2", 2],
    ]);
  });
});
