// The exit code of a run whose items fail in part or in full (runExitCode over the results of
// backupItems and executePlan), with a fake Incus and an in-memory store.

import { PassThrough } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { runningDecompressors } from "../../../src/engine/archive";
import { backupItems, type BackupDeps, type BackupOptions } from "../../../src/engine/backup";
import { liveInstances } from "../../../src/engine/discover";
import { executePlan, type RestoreDeps } from "../../../src/engine/restore";
import { silentReporter } from "../../../src/engine/reporter";
import { ExitCode, LockLostError, exitCodeOf, runExitCode } from "../../../src/errors";
import type { Plan, Step } from "../../../src/core/plan";
import type { ItemKey } from "../../../src/core/selection";
import { FakeIncus, backupArchive } from "../helpers/fake-incus";
import { MemoryStore } from "../helpers/memory-store";
import { manifestFields } from "../helpers/repo";

const NOW = new Date("2025-09-14T03:00:02Z");
const signal = () => new AbortController().signal;

describe.each([
  ["streamed", true],
  ["exported", false],
] as const)("backup exit codes, %s", (_label, direct) => {
  function world() {
    const fake = new FakeIncus({ apiExtensions: direct ? ["direct_backup"] : [] });
    fake.addInstance({ name: "a", status: "Stopped" });
    fake.addInstance({ name: "b", status: "Stopped" });
    const store = new MemoryStore();
    const deps: BackupDeps = { client: fake.client, store, reporter: silentReporter, now: () => NOW, toolVersion: "test" };
    const opts: BackupOptions = { selection: { kinds: ["instance"], names: [] }, compression: "gzip", snapshots: false, stop: false, parallel: 1, cpus: 1, command: "backup --all" };
    return { fake, store, deps, opts };
  }

  it("one of two items fails: 3, and the other is stored", async () => {
    const { fake, store, deps, opts } = world();
    fake.fail("backup", "b", "Failed creating instance backup: disk I/O error on the server");
    const r = await backupItems(deps, opts, await liveInstances(fake.client, "default"), signal());
    expect(r.items.map((i) => [i.item.name, i.ok, i.exitCode]).sort()).toEqual([
      ["a", true, undefined],
      ["b", false, ExitCode.Failure],
    ]);
    expect(runExitCode(r.items)).toBe(ExitCode.Partial);
    expect((await store.list()).versions.map((v) => v.manifest.name)).toEqual(["a"]);
    expect((await store.listRuns()).map((x) => x.status)).toEqual(["partial"]);
  });

  it("every item fails on a full disk: 8, nothing is stored and nothing is left on the server", async () => {
    const { fake, store, deps, opts } = world();
    store.fillDisk();
    const r = await backupItems(deps, opts, await liveInstances(fake.client, "default"), signal());
    expect(r.items.map((i) => [i.item.name, i.ok, i.error, i.exitCode]).sort()).toEqual([
      ["a", false, "ENOSPC: no space left on device, write", ExitCode.Repository],
      ["b", false, "ENOSPC: no space left on device, write", ExitCode.Repository],
    ]);
    expect(runExitCode(r.items)).toBe(ExitCode.Repository);
    expect((await store.list()).versions).toEqual([]);
    expect(store.open.size).toBe(0);
    expect([...fake.backups.values()].flatMap((m) => [...m.keys()])).toEqual([]);
    expect((await store.listRuns()).map((x) => x.status)).toEqual(["failed"]);
  });

  it("the lock is taken over after the first item: the run stops with exit 7, starts nothing more, commits nothing more, writes no run record", async () => {
    const { fake, store, deps, opts } = world();
    fake.addInstance({ name: "c", status: "Stopped" });
    await store.lock("backup --all");
    const begun: string[] = [];
    const reporter = { ...silentReporter, itemStart: (i: ItemKey) => begun.push(i.name), itemDone: () => store.takeOver("a run on another host") };
    const err = await backupItems({ ...deps, reporter }, opts, await liveInstances(fake.client, "default"), signal()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockLostError);
    expect(exitCodeOf(err)).toBe(ExitCode.Locked);
    // Two at a time (parallel 1: one making, one transferring); once the first is done and the
    // lock gone, the third never starts and the second is not committed.
    expect(begun).toHaveLength(2);
    expect((await store.list()).versions).toHaveLength(1);
    expect(store.open.size).toBe(0);
    expect((await store.listRuns()).map((x) => x.status)).toEqual(["running"]);
  });

  it("the lock is taken over while an item is under way: that item is not committed", async () => {
    const { fake, store, deps, opts } = world();
    await store.lock("backup --all");
    const reporter = { ...silentReporter, itemStart: () => store.takeOver() };
    const err = await backupItems({ ...deps, reporter }, opts, await liveInstances(fake.client, "default"), signal()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockLostError);
    expect((err as Error).message).toMatch(/lock of this run was taken over/);
    expect((await store.list()).versions).toEqual([]);
    expect(store.open.size).toBe(0);
    expect([...fake.backups.values()].flatMap((m) => [...m.keys()])).toEqual([]);
  });

  it("one on a full disk, one for the server: 1", async () => {
    const { fake, store, deps, opts } = world();
    fake.fail("backup", "a", "Failed creating instance backup: disk I/O error on the server");
    store.fillDisk();
    const r = await backupItems(deps, opts, await liveInstances(fake.client, "default"), signal());
    expect(r.items.map((i) => [i.item.name, i.exitCode]).sort()).toEqual([
      ["a", ExitCode.Failure],
      ["b", ExitCode.Repository],
    ]);
    expect(runExitCode(r.items)).toBe(ExitCode.Failure);
  });
});

describe("restore exit codes (executePlan)", () => {
  const VERSION = "20250914-030002";
  const key = (name: string): ItemKey => ({ kind: "instance", project: "default", name });

  function world() {
    const fake = new FakeIncus();
    const store = new MemoryStore();
    const deps: RestoreDeps = { client: fake.client, store, reporter: silentReporter, now: () => NOW };
    /**
     * A stored backup of an instance. `corrupt` flips a byte the check of the archive's index does
     * not read: in the data of a plain tar, or the end of a zstd frame (zstd then fails, and the
     * index check finds no index, which it allows): only the sha256, checked during the upload, can tell.
     */
    const stored = (name: string, corrupt = false, compression: "none" | "zstd" = "none") => {
      const file = compression === "none" ? "instance.tar" : "instance.tar.zst";
      const v = store.put(manifestFields(key(name), VERSION, { options: { compression } }), { [file]: backupArchive(name, compression) });
      if (corrupt) store.corrupt(v, file, compression === "none" ? 1536 : -1);
      return v;
    };
    return { fake, store, deps, stored };
  }

  const create = (source: Step["source"]): Step => ({ op: "create", source, target: key(source.manifest.name), start: false });
  const plan = (...steps: Step[]): Plan => ({ steps, skipped: [], notes: [] });

  it("every step fails on a corrupt archive: 9, and the server creates nothing and keeps what it had", async () => {
    const { fake, store, deps, stored } = world();
    fake.addInstance({ name: "b", status: "Running", config: { "user.origin": "original" } });
    const replace: Step = { op: "replace", source: stored("b", true, "zstd"), target: key("b"), wasRunning: true, start: true };
    const r = await executePlan(deps, plan(create(stored("a", true)), replace), signal());
    expect(r.steps.map((s) => [s.item.name, s.ok, s.exitCode]).sort()).toEqual([
      ["a", false, ExitCode.Integrity],
      ["b", false, ExitCode.Integrity],
    ]);
    expect(r.steps.find((s) => s.item.name === "a")?.error).toBe(`memory:/instance/default/a/${VERSION}/instance.tar: sha256 mismatch (the file is corrupt)`);
    expect(r.steps.find((s) => s.item.name === "b")?.error).toBe(
      `memory:/instance/default/b/${VERSION}/instance.tar.zst: sha256 mismatch (the file is corrupt) (the existing instance was not touched)`,
    );
    expect(runExitCode(r.steps)).toBe(ExitCode.Integrity);
    // Both archives were uploaded, but their last bytes never went: nothing was imported.
    expect(fake.calls(/^POST \/1\.0\/instances$/)).toHaveLength(2);
    expect(fake.instanceNames()).toEqual(["b"]);
    expect(fake.instance("b")).toMatchObject({ status: "Running", config: { "user.origin": "original" } });
    expect(store.journal.all()).toEqual([]);
  });

  it("a replace stops the running original with the --stop-timeout given, else with 60 s", async () => {
    for (const [given, sent] of [[7, 7], [undefined, 60]] as const) {
      const { fake, deps, stored } = world();
      fake.addInstance({ name: "b", status: "Running", config: { "user.origin": "original" } });
      const replace: Step = { op: "replace", source: stored("b"), target: key("b"), wasRunning: true, start: true };
      const r = await executePlan(given === undefined ? deps : { ...deps, stopTimeout: given }, plan(replace), signal());
      expect(r.steps.map((s) => s.ok)).toEqual([true]);
      const bodies = fake.requests.filter((q) => q.method === "PUT" && q.path === "/1.0/instances/b/state").map((q) => q.body as { action?: string; timeout?: number });
      expect(bodies.filter((b) => b.action === "stop").map((b) => b.timeout)).toEqual([sent]);
    }
  });

  it("an archive of another instance than its manifest says: 9, found in its first bytes, and the server makes nothing", async () => {
    const { fake, store, deps } = world();
    const v = store.put(manifestFields(key("a"), VERSION), { "instance.tar": backupArchive("other", "none") });
    const r = await executePlan(deps, plan(create(v)), signal());
    expect(r.steps).toMatchObject([{ ok: false, exitCode: ExitCode.Integrity, error: expect.stringContaining('holds a backup of "other", not of "a"') }]);
    expect(runExitCode(r.steps)).toBe(ExitCode.Integrity);
    // The upload was cut short: the server never got a whole archive to act on.
    expect(fake.instanceNames()).toEqual([]);
    expect(fake.calls(/^POST/).length).toBeLessThanOrEqual(1);
    expect(fake.operations.size).toBe(0);
  });

  it("an upload refused before the archive's first bytes came (restic takes a while to start): the step fails, and no decompressor is left waiting", async () => {
    const { fake, store, deps, stored } = world();
    fake.refuseUploads = true;
    const v = stored("a", false, "zstd");
    // The stored archive's bytes start coming only after the upload has already failed.
    const late: RestoreDeps = {
      ...deps,
      store: Object.assign(Object.create(store) as MemoryStore, {
        openFile: async (...args: Parameters<MemoryStore["openFile"]>) => {
          const f = await store.openFile(...args);
          const stream = new PassThrough();
          setTimeout(() => f.stream.pipe(stream), 200);
          stream.on("close", () => f.stream.destroy());
          return { ...f, stream };
        },
      }),
    };
    const settled = async () => {
      for (let i = 0; i < 100 && runningDecompressors() > 0; i++) await sleep(20);
      return runningDecompressors();
    };
    expect(await settled()).toBe(0);
    const r = await executePlan(late, plan(create(v)), signal());
    expect(r.steps).toMatchObject([{ ok: false, error: expect.stringContaining("ECONNREFUSED") }]);
    expect(await settled()).toBe(0);
    expect(fake.instanceNames()).toEqual([]);
  });

  it("a gzip archive damaged at its start: 9, naming the file", async () => {
    const { store, deps } = world();
    const v = store.put(manifestFields(key("a"), VERSION, { options: { compression: "gzip" } }), { "instance.tar.gz": backupArchive("a", "gzip") });
    store.corrupt(v, "instance.tar.gz", 30);
    const r = await executePlan(deps, plan(create(v)), signal());
    expect(r.steps).toMatchObject([{ ok: false, exitCode: ExitCode.Integrity, error: expect.stringContaining("instance.tar.gz") }]);
  });

  it("one corrupt archive, one import the server fails: 1", async () => {
    const { fake, deps, stored } = world();
    fake.fail("import", "b", "Failed importing backup: no space left on the storage pool");
    const r = await executePlan(deps, plan(create(stored("a", true)), create(stored("b"))), signal());
    expect(r.steps.map((s) => [s.item.name, s.ok, s.exitCode]).sort()).toEqual([
      ["a", false, ExitCode.Integrity],
      ["b", false, ExitCode.Failure],
    ]);
    expect(r.steps.find((s) => s.item.name === "b")?.error).toBe("Import instance b: Failed importing backup: no space left on the storage pool");
    expect(runExitCode(r.steps)).toBe(ExitCode.Failure);
    expect(fake.instanceNames()).toEqual([]);
  });

  it("one corrupt archive, one restored: 3", async () => {
    const { fake, deps, stored } = world();
    const r = await executePlan(deps, plan(create(stored("a", true)), create(stored("b"))), signal());
    expect(r.steps.map((s) => [s.item.name, s.ok]).sort()).toEqual([
      ["a", false],
      ["b", true],
    ]);
    expect(runExitCode(r.steps)).toBe(ExitCode.Partial);
    expect(fake.instanceNames()).toEqual(["b"]);
  });
});
