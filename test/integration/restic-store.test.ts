// The restic store against the real restic binary and a local repository (no Incus): a version is
// listed only once committed, streamed back byte for byte and checked, and what a writer that died
// left is never listed and is cleaned up by the next run.

import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createHash, randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import { ResticStore } from "../../src/repository/restic/store";
import { ExitCode } from "../../src/errors";
import type { ItemKey } from "../../src/core/selection";
import { removeTempDirs, tempDir } from "../unit/helpers/repo";
import { resticBinaries } from "./helpers/restic";

const binaries = await resticBinaries();
// The unit helpers' temp dirs; the unit projects remove them in their setup file.
afterEach(removeTempDirs);

async function store(binary: string): Promise<{ s: ResticStore; dir: string; env: NodeJS.ProcessEnv }> {
  const dir = await tempDir();
  await writeFile(join(dir, "pw"), "unit-test-password\n");
  const env = { PATH: process.env.PATH, HOME: dir, RESTIC_PASSWORD_FILE: join(dir, "pw"), RESTIC_CACHE_DIR: join(dir, "cache") };
  const s = new ResticStore({ repository: join(dir, "repo"), binary, env }, join(dir, "state"));
  return { s, dir, env };
}

const key: ItemKey = { kind: "volume", project: "default", pool: "default", name: "data" };
const manifest = (version: string) => ({
  format: 1 as const,
  kind: key.kind,
  project: key.project,
  pool: key.pool,
  name: key.name,
  version,
  created: new Date().toISOString(),
  tool: { name: "incus-backup" as const, version: "test" },
  server: {},
  options: {},
});

describe.each(binaries)("restic store, restic $version", ({ binary }) => {
  it("makes a repository once, lists a version only once committed, and streams it back checked", { timeout: 60_000 }, async () => {
    const { s } = await store(binary);
    expect(await s.isInitialized()).toBe(false);
    await expect(s.list()).rejects.toMatchObject({ exitCode: ExitCode.Repository });
    expect(await s.initialize()).toBe(true);
    expect(await s.initialize()).toBe(false);
    expect(await s.repositoryId()).toMatch(/^[0-9a-f]{64}$/);

    const data = randomBytes(3 * 1024 * 1024 + 17);
    const w = await s.begin(key, "20250914-030000");
    const sink = await w.createFile("volume.tar");
    await pipeline(Readable.from([data.subarray(0, 1000), data.subarray(1000)]), sink);
    w.addFile(sink.entry());
    await w.writeFile("note.json", "{}\n");
    expect((await s.list()).versions).toEqual([]);
    const v = await w.commit(manifest("20250914-030000"));

    const listed = await s.list();
    expect(listed.damaged).toEqual([]);
    expect(listed.versions.map((x) => [x.manifest.version, x.size])).toEqual([["20250914-030000", data.length + 3]]);
    expect(listed.versions[0]!.location).toBe(v.location);
    const file = listed.versions[0]!.manifest.files[0]!;
    expect(file.sha256).toBe(createHash("sha256").update(data).digest("hex"));
    const f = await s.openFile(listed.versions[0]!, file);
    const back: Buffer[] = [];
    for await (const c of f.stream) back.push(c as Buffer);
    await f.checked;
    expect(Buffer.concat(back).equals(data)).toBe(true);
    expect((await s.readSmallFile(listed.versions[0]!, listed.versions[0]!.manifest.files[1]!)).toString()).toBe("{}\n");

    // A file whose stored bytes differ from the manifest fails its check, never passes quietly.
    const lie = { ...file, sha256: "0".repeat(64) };
    await expect(s.verifyFile(listed.versions[0]!, lie)).rejects.toMatchObject({ exitCode: ExitCode.Integrity });

    // A file catalog kept for it goes when the version does.
    await s.saveCatalog(listed.versions[0]!, file, Buffer.from("catalog"));
    expect((await s.readCatalog(listed.versions[0]!, file))?.toString()).toBe("catalog");
    await s.deleteVersions(listed.versions);
    expect((await s.list()).versions).toEqual([]);
    expect(await s.readCatalog(listed.versions[0]!, file)).toBeUndefined();
  });

  it("never lists what an aborted or killed writer left, and cleans it up", { timeout: 60_000 }, async () => {
    const { s } = await store(binary);
    await s.initialize();
    // Aborted half-way: restic is stopped before its input ends, so it saves nothing.
    const a = await s.begin(key, "20250914-030000");
    const sink = await a.createFile("volume.tar");
    sink.write(randomBytes(1024 * 1024));
    await a.abort();
    // Died after its data was stored but before the manifest (as a kill -9 would leave it).
    const b = await s.begin(key, "20250914-030001");
    const done = await b.writeFile("volume.tar", randomBytes(4096));
    expect(done.ref).toMatch(/^[0-9a-f]{8,64}$/);
    expect(await s.list()).toEqual({ versions: [], damaged: [] });
    const removed = await s.cleanupTemp();
    expect(removed).toHaveLength(1);
    expect(removed[0]).toContain("20250914-030001");
    expect(await s.cleanupTemp()).toEqual([]);
  });

  it("keeps the server whose backups it holds in a snapshot of its own (the newest counts), never listed or tidied away; another install's unfinished data stays a day", { timeout: 60_000 }, async () => {
    const { s, dir, env } = await store(binary);
    await s.initialize();
    expect(await s.serverOwner()).toBeUndefined();
    const lock = await s.lock("test");
    try {
      await s.setServerOwner({ fingerprint: "aa".repeat(32), name: "incus01", since: "2025-09-14T03:00:00.000Z" });
      await new Promise((r) => setTimeout(r, 1100)); // restic's snapshot times have a second's grain here
      await s.setServerOwner({ fingerprint: "bb".repeat(32), name: "incus02", since: "2025-09-15T03:00:00.000Z" });
    } finally {
      await lock.release();
    }
    const again = new ResticStore({ repository: join(dir, "repo"), binary, env }, join(dir, "state"));
    expect(await again.serverOwner()).toEqual({ fingerprint: "bb".repeat(32), name: "incus02", since: "2025-09-15T03:00:00.000Z" });
    expect(await again.list()).toEqual({ versions: [], damaged: [] });
    // Unfinished data of another install (another host of the same name) is not this run's to tidy.
    const otherEnv = { ...env, INCUS_BACKUP_INSTALL_ID: "1111222233334444" };
    const w = await new ResticStore({ repository: join(dir, "repo"), binary, env: otherEnv }, join(dir, "state")).begin(key, "20250914-030002");
    await w.writeFile("volume.tar", randomBytes(4096));
    // Fresh stores: no listing cached from before that write.
    expect(await new ResticStore({ repository: join(dir, "repo"), binary, env }, join(dir, "state")).cleanupTemp()).toEqual([]);
    expect(await new ResticStore({ repository: join(dir, "repo"), binary, env: otherEnv }, join(dir, "state")).cleanupTemp()).toHaveLength(1);
    expect(await new ResticStore({ repository: join(dir, "repo"), binary, env }, join(dir, "state")).serverOwner()).toMatchObject({ name: "incus02" });
  });

  it("refuses a wrong password with exit 8 and one line", { timeout: 60_000 }, async () => {
    const { s, dir, env } = await store(binary);
    await s.initialize();
    await writeFile(join(dir, "wrong"), "not-the-password\n");
    const other = new ResticStore({ repository: join(dir, "repo"), binary, env: { ...env, RESTIC_PASSWORD_FILE: join(dir, "wrong") } }, join(dir, "state"));
    await expect(other.list()).rejects.toMatchObject({ exitCode: ExitCode.Repository, message: `wrong password for the restic repository ${join(dir, "repo")} (from RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND)` });
  });
  it("takes a repository's id from its record only while the repository holds the record's witness: one made anew in the same place is asked", { timeout: 60_000 }, async () => {
    const { s, dir, env } = await store(binary);
    // Counts the `restic cat config` calls (a restic that logs its arguments, then runs).
    const log = join(dir, "calls");
    const logging = join(dir, "restic");
    await writeFile(logging, `#!/bin/sh\necho "$1" >>${log}\nexec ${binary} "$@"\n`, { mode: 0o755 });
    const cats = async () => (await readFile(log, "utf8").catch(() => "")).split("\n").filter((l) => l === "cat").length;
    const fresh = () => new ResticStore({ repository: join(dir, "repo"), binary: logging, env }, join(dir, "state"));
    await s.initialize();
    const id = await s.repositoryId();
    // No witness yet (no owner snapshot): asked.
    expect(await fresh().repositoryId()).toBe(id);
    expect(await cats()).toBe(1);
    await s.setServerOwner({ fingerprint: "f".repeat(64), name: "server-a", since: new Date().toISOString() });
    // The owner snapshot is the witness: the next opening lists the snapshots and asks no more.
    const known = fresh();
    expect(await known.repositoryId()).toBe(id);
    expect(await cats()).toBe(1);
    await known.list();
    // Made anew in the same place (same location, same state root): a new id, asked for.
    await rm(join(dir, "repo"), { recursive: true });
    expect(await fresh().initialize()).toBe(true);
    const again = fresh();
    const newId = await again.repositoryId();
    expect(newId).toMatch(/^[0-9a-f]{64}$/);
    expect(newId).not.toBe(id);
    expect(await cats()).toBeGreaterThanOrEqual(2);
    // The record names no credential: repository strings are kept hashed.
    expect(await readFile(join(dir, "state", "restic-ids.json"), "utf8")).not.toContain(join(dir, "repo"));
  });
});
