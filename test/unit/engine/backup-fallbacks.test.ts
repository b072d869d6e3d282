// backupItems against a fake Incus and an in-memory store: which compressor the server is asked
// for and what happens when it refuses one, and the streamed (direct_backup) and exported paths.

import { gunzipSync } from "node:zlib";
import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { backupItems, type BackupDeps, type BackupOptions, type LiveItem } from "../../../src/engine/backup";
import { liveInstances, type LiveVolume } from "../../../src/engine/discover";
import { silentReporter } from "../../../src/engine/reporter";
import type { StorageVolume } from "../../../src/incus/storage_volumes";
import { FakeIncus, backupArchive, tarOf } from "../helpers/fake-incus";
import { MemoryStore } from "../helpers/memory-store";

const NOW = new Date("2025-09-14T03:00:02Z");
const VERSION = "20250914-030002";
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

function world(options: { direct?: boolean } = {}) {
  const fake = new FakeIncus({ apiExtensions: options.direct ? ["direct_backup"] : [] });
  fake.addInstance({ name: "a", status: "Stopped" });
  fake.addInstance({ name: "b", status: "Stopped" });
  const store = new MemoryStore();
  const warnings: string[] = [];
  const deps: BackupDeps = { client: fake.client, store, reporter: { ...silentReporter, warn: (t) => warnings.push(t) }, now: () => NOW, toolVersion: "test" };
  return { fake, store, warnings, deps };
}

function options(extra: Partial<BackupOptions> = {}): BackupOptions {
  return { selection: { kinds: ["instance", "volume"], names: [] }, compression: "zstd", snapshots: false, stop: false, parallel: 1, cpus: 8, command: "backup --all", ...extra };
}

async function run(w: ReturnType<typeof world>, opts: BackupOptions, extra: LiveItem[] = []) {
  const items = [...(await liveInstances(w.fake.client, "default")), ...extra];
  return backupItems(w.deps, opts, items, new AbortController().signal);
}

/** The compression_algorithm of each backup asked of the server, by instance or volume. */
function asked(fake: FakeIncus): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const r of fake.requests) {
    const m = /\/(?:instances|custom)\/([^/]+)\/backups$/.exec(r.path);
    if (r.method === "POST" && m) (out[m[1]!] ??= []).push(String((r.body as { compression_algorithm?: string }).compression_algorithm));
  }
  return out;
}

async function manifestOf(store: MemoryStore, name: string) {
  const v = (await store.list()).versions.find((x) => x.manifest.name === name);
  if (!v) throw new Error(`no version of ${name}`);
  return v.manifest;
}

const volumeItem = (name: string): LiveVolume => ({
  kind: "volume",
  project: "default",
  pool: "default",
  name,
  volume: { name, type: "custom", pool: "default", project: "default", description: "", config: {}, content_type: "filesystem" } as StorageVolume,
});

describe.each([
  ["streamed (direct_backup)", true, "direct"],
  ["exported", false, "export"],
] as const)("backupItems, %s", (_label, direct, transfer) => {
  it("asks for pzstd when cores are idle, and stores plain zstd frames (pzstd's headers removed)", async () => {
    const w = world({ direct });
    w.fake.instances.delete("default/b");
    const r = await run(w, options());
    expect(r.items.map((i) => [i.item.name, i.ok, i.error])).toEqual([["a", true, undefined]]);
    expect(asked(w.fake)).toEqual({ a: ["pzstd"] });
    const m = await manifestOf(w.store, "a");
    expect(m.options).toEqual({ compression: "zstd", compressor: "pzstd", optimized_storage: false, transfer, instance_only: true, stopped: false });
    expect(m.files.map((f) => f.name)).toEqual(["instance.tar.zst"]);
    const stored = w.store.file({ kind: "instance", project: "default", name: "a" }, VERSION, "instance.tar.zst")!;
    const served = backupArchive("a", "pzstd");
    expect(served.subarray(0, 4).equals(ZSTD_MAGIC)).toBe(false);
    expect(stored.subarray(0, 4).equals(ZSTD_MAGIC)).toBe(true);
    expect(stored.length).toBe(served.length - 12);
    expect(execFileSync("zstd", ["-dcq"], { input: stored }).equals(tarOf([["backup/index.yaml", "name: a\nbackend: dir\n"], ["backup/container/rootfs/etc/hostname", "a\n"]]))).toBe(true);
    expect(w.warnings).toEqual([]);
  });

  it("pzstd refused: plain zstd, quietly", async () => {
    const w = world({ direct });
    w.fake.fail("backup", undefined, 'Unsupported compression algorithm "pzstd"', { compression: "pzstd", times: Infinity });
    const r = await run(w, options());
    // Streamed, a's retry queues behind b for the make slot: results come in either order.
    expect(r.items.map((i) => [i.item.name, i.ok]).sort()).toEqual([
      ["a", true],
      ["b", true],
    ]);
    expect(asked(w.fake).a).toEqual(["pzstd", "zstd"]);
    expect(asked(w.fake).b?.at(-1)).toBe("zstd");
    for (const name of ["a", "b"]) {
      const m = await manifestOf(w.store, name);
      expect(m.options).toEqual({ compression: "zstd", optimized_storage: false, transfer, instance_only: true, stopped: false });
      expect(w.store.file({ kind: "instance", project: "default", name }, VERSION, "instance.tar.zst")).toEqual(backupArchive(name, "zstd"));
    }
    expect(w.warnings).toEqual([]);
  });

  it("pzstd refused: the next items are not asked for pzstd again", async () => {
    const w = world({ direct });
    w.fake.fail("backup", undefined, 'Unsupported compression algorithm "pzstd"', { compression: "pzstd", times: Infinity });
    await run(w, options());
    expect(asked(w.fake)).toEqual({ a: ["pzstd", "zstd"], b: ["zstd"] });
  });

  it("zstd refused: gzip, with a warning", async () => {
    const w = world({ direct });
    w.fake.instances.delete("default/b");
    w.fake.fail("backup", undefined, 'exec: "zstd": executable file not found in $PATH', { compression: "zstd", times: Infinity });
    const r = await run(w, options({ pzstd: false }));
    expect(r.items.map((i) => [i.item.name, i.ok, i.error])).toEqual([["a", true, undefined]]);
    expect(asked(w.fake)).toEqual({ a: ["zstd", "gzip"] });
    expect(w.warnings).toEqual(['the server cannot compress with zstd (exec: "zstd": executable file not found in $PATH); using gzip']);
    const m = await manifestOf(w.store, "a");
    expect(m.options).toEqual({ compression: "gzip", optimized_storage: false, transfer, instance_only: true, stopped: false });
    expect(m.files.map((f) => f.name)).toEqual(["instance.tar.gz"]);
    const stored = w.store.file({ kind: "instance", project: "default", name: "a" }, VERSION, "instance.tar.gz")!;
    expect(gunzipSync(stored).subarray(0, 17).toString()).toBe("backup/index.yaml");
  });

  it("zstd refused: the next items use gzip without asking for zstd or warning again", async () => {
    const w = world({ direct });
    w.fake.fail("backup", undefined, 'exec: "zstd": executable file not found in $PATH', { compression: "zstd", times: Infinity });
    const r = await run(w, options({ pzstd: false, parallel: 1 }));
    expect(r.items.every((i) => i.ok)).toBe(true);
    const seen = asked(w.fake);
    // One of them finds out; the other is asked for gzip at once.
    expect(Object.values(seen).sort()).toEqual([["gzip"], ["zstd", "gzip"]]);
    expect(w.warnings).toHaveLength(1);
  });

  it("gzip refused too: the item fails with the server's message", async () => {
    const w = world({ direct });
    w.fake.instances.delete("default/b");
    w.fake.fail("backup", undefined, "compression is broken", { times: Infinity });
    const r = await run(w, options({ pzstd: false }));
    expect(asked(w.fake)).toEqual({ a: ["zstd", "gzip"] });
    expect(r.items).toMatchObject([{ ok: false, error: expect.stringContaining("compression is broken") }]);
    expect((await w.store.list()).versions).toEqual([]);
    expect(w.store.open.size).toBe(0);
  });

  it("backs up a custom volume the same way", async () => {
    const w = world({ direct });
    w.fake.instances.clear();
    w.fake.addVolume({ name: "data" });
    const r = await run(w, options({ compression: "gzip" }), [volumeItem("data")]);
    expect(r.items.map((i) => [i.item.name, i.ok, i.error])).toEqual([["data", true, undefined]]);
    const m = await manifestOf(w.store, "data");
    expect(m).toMatchObject({ kind: "volume", pool: "default", options: { compression: "gzip", transfer, volume_only: true } });
    expect(w.store.file({ kind: "volume", project: "default", pool: "default", name: "data" }, VERSION, "volume.tar.gz")).toEqual(backupArchive("data", "gzip"));
  });
});

describe("backupItems, the transfer", () => {
  it("with direct_backup: the POST returns the stream, and nothing is made on the server", async () => {
    const w = world({ direct: true });
    w.fake.instances.delete("default/b");
    await run(w, options({ compression: "gzip" }));
    expect(w.fake.calls(/backups/)).toEqual(["POST /1.0/instances/a/backups"]);
    expect(w.fake.requests.find((r) => r.path.endsWith("/backups"))?.body).toEqual({ optimized_storage: false, compression_algorithm: "gzip", instance_only: true });
    expect((await manifestOf(w.store, "a")).options.transfer).toBe("direct");
  });

  it("without it: a server-side backup that expires in a day is made, downloaded, then deleted", async () => {
    const w = world();
    w.fake.instances.delete("default/b");
    await run(w, options({ compression: "gzip" }));
    const post = w.fake.requests.find((r) => r.path.endsWith("/backups"))!;
    const body = post.body as { name: string; expires_at: string };
    expect(body).toEqual({ name: expect.stringMatching(new RegExp(`^incus-backup-${VERSION}-[0-9a-f]{6}$`)), expires_at: "2025-09-15T03:00:02.000Z", optimized_storage: false, compression_algorithm: "gzip", instance_only: true });
    expect(w.fake.calls(/backups|operations/)).toEqual([
      "POST /1.0/instances/a/backups",
      "GET /1.0/operations/op-1/wait",
      `GET /1.0/instances/a/backups/${body.name}/export`,
      `DELETE /1.0/instances/a/backups/${body.name}`,
      "GET /1.0/operations/op-2/wait",
    ]);
    expect([...w.fake.backups.values()].flatMap((m) => [...m.keys()])).toEqual([]);
    expect((await manifestOf(w.store, "a")).options.transfer).toBe("export");
  });

  it("direct_backup turned off by the options: exported", async () => {
    const w = world({ direct: true });
    w.fake.instances.delete("default/b");
    await run(w, options({ compression: "gzip", direct: false }));
    expect(w.fake.calls(/backups/)).toEqual(expect.arrayContaining([expect.stringMatching(/\/export$/)]));
    expect((await manifestOf(w.store, "a")).options.transfer).toBe("export");
  });
});
