// The directory repository: opening, writing versions atomically with private modes, listing, checking.

import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, stat, writeFile, appendFile, cp, rm } from "node:fs/promises";
import { join, relative } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { describe, expect, it } from "vitest";
import { AppError, IntegrityError, RepositoryError, ExitCode } from "../../../src/errors";
import { itemId, itemLabel, type ItemKey } from "../../../src/core/selection";
import { EMPTY_POLICY, planRetention } from "../../../src/core/retention";
import { DirectoryStore } from "../../../src/repository/directory";
import { data, manifestFields, tempDir, web, writeVersion } from "../helpers/repo";

const V1 = "20250914-030002";
const V2 = "20250915-030002";

async function newRepo(): Promise<DirectoryStore> {
  const { repo, created } = await DirectoryStore.open(await tempDir(), { create: true });
  expect(created).toBe(true);
  return repo;
}

async function listed(repo: DirectoryStore): Promise<string[]> {
  const { versions } = await repo.list();
  return versions.map((v) => relative(repo.root, v.location)).sort();
}

describe("DirectoryStore.open", () => {
  it("refuses a missing directory, even with create", async () => {
    const dir = join(await tempDir(), "not-mounted");
    for (const create of [false, true]) {
      const err = await DirectoryStore.open(dir, { create }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RepositoryError);
      expect((err as RepositoryError).exitCode).toBe(ExitCode.Repository);
      expect((err as Error).message).toBe(`cannot open backup directory ${dir}: no such file or directory`);
    }
    await expect(stat(dir)).rejects.toThrow();
  });

  it("refuses a file", async () => {
    const file = join(await tempDir(), "file");
    await writeFile(file, "x");
    await expect(DirectoryStore.open(file, { create: true })).rejects.toThrow(/is not a directory/);
  });

  it("refuses a non-empty directory that is not a repository, and leaves it alone", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "holiday.jpg"), "x");
    const err = await DirectoryStore.open(dir, { create: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RepositoryError);
    expect((err as Error).message).toMatch(/is not an incus-backup repository \(no incus-backup\.json\) and is not empty/);
    expect(await readdir(dir)).toEqual(["holiday.jpg"]);
  });

  it("opens an empty directory without making it a repository unless asked", async () => {
    const dir = await tempDir();
    const { repo, created } = await DirectoryStore.open(dir, { create: false });
    expect(created).toBe(false);
    expect(await repo.isInitialized()).toBe(false);
    expect(await readdir(dir)).toEqual([]);
  });

  it("creates a repository in an empty directory (lost+found does not count)", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "lost+found"));
    const { repo, created } = await DirectoryStore.open(dir, { create: true });
    expect(created).toBe(true);
    expect(await repo.isInitialized()).toBe(true);
    const marker = JSON.parse(await readFile(join(dir, "incus-backup.json"), "utf8")) as Record<string, unknown>;
    expect(marker).toMatchObject({ format: "incus-backup", version: 1 });
    expect((await stat(join(dir, "incus-backup.json"))).mode & 0o777).toBe(0o600);

    const again = await DirectoryStore.open(dir, { create: true });
    expect(again.created).toBe(false);
  });

  it("of many initialisations at once, exactly one makes the repository and every one succeeds", async () => {
    for (let round = 0; round < 20; round++) {
      const dir = await tempDir();
      const results = await Promise.all(Array.from({ length: 6 }, () => DirectoryStore.open(dir, { create: true })));
      expect(results.filter((r) => r.created)).toHaveLength(1);
      expect(await readdir(dir)).toEqual(["incus-backup.json"]);
      const marker = JSON.parse(await readFile(join(dir, "incus-backup.json"), "utf8")) as Record<string, unknown>;
      expect(marker).toMatchObject({ format: "incus-backup", version: 1 });
    }
  });

  it("an initialisation whose candidate marker the lock holder tidied away still succeeds", async () => {
    // The lock holder removes candidate markers once the marker is in place; a run that wrote
    // its candidate before that then finds it gone when it links it.
    for (let round = 0; round < 40; round++) {
      const dir = await tempDir();
      const { repo: holder } = await DirectoryStore.open(dir, { create: true });
      const { repo: late } = await DirectoryStore.open(dir, { create: false });
      const results = await Promise.all([late.initialize(), holder.cleanupTemp(), late.initialize(), holder.cleanupTemp(), late.initialize()]);
      expect(results.filter((r) => r === true)).toEqual([]);
    }
  });

  it("counts a lock and another run's marker being written as empty, not as someone else's files", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "lock.json"), "{}");
    await writeFile(join(dir, ".lock.json-0123456789abcdef"), "{}");
    await writeFile(join(dir, ".incus-backup.json-0123456789abcdef"), "{");
    const { created } = await DirectoryStore.open(dir, { create: true });
    expect(created).toBe(true);
  });

  it("a marker of another kind that appears during initialisation is not success", async () => {
    const dir = await tempDir();
    const { repo } = await DirectoryStore.open(dir, { create: false });
    await writeFile(join(dir, "incus-backup.json"), JSON.stringify({ format: "restic", version: 1 }));
    await expect(repo.initialize()).rejects.toThrow(/does not describe an incus-backup repository/);
    expect((await readdir(dir)).sort()).toEqual(["incus-backup.json"]);
  });

  it.each<[string, string, RegExp]>([
    ["a newer format", JSON.stringify({ format: "incus-backup", version: 2 }), /repository format 2 in .* is not supported \(this tool reads 1\)/],
    ["a format as text", JSON.stringify({ format: "incus-backup", version: "1" }), /repository format "1" .* is not supported/],
    ["another tool's marker", JSON.stringify({ format: "restic", version: 1 }), /does not describe an incus-backup repository/],
    ["JSON null", "null", /does not describe an incus-backup repository/],
    ["broken JSON", "{", /is not valid JSON/],
  ])("refuses a marker with %s", async (_label, text, message) => {
    const dir = await tempDir();
    await writeFile(join(dir, "incus-backup.json"), text);
    const err = await DirectoryStore.open(dir, { create: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RepositoryError);
    expect((err as Error).message).toMatch(message);
  });
});

describe("writing versions", () => {
  it("makes a committed version visible with its manifest and size", async () => {
    const repo = await newRepo();
    const entry = await writeVersion(repo, web, V1, "0123456789");
    expect(entry.location).toBe(join(repo.root, "instances", "default", "web", V1));
    expect(entry.size).toBe(10);
    expect(entry.manifest.files).toEqual([
      { name: "instance.tar.zst", size: 10, sha256: createHash("sha256").update("0123456789").digest("hex") },
    ]);
    const { versions, damaged } = await repo.list();
    expect(damaged).toEqual([]);
    expect(versions).toEqual([entry]);
  });

  it("writes SHA256SUMS in sha256sum format, covering the manifest", async () => {
    const repo = await newRepo();
    const entry = await writeVersion(repo, data, V1, "abc");
    const sums = await readFile(join(entry.location, "SHA256SUMS"), "utf8");
    const manifestSum = createHash("sha256").update(await readFile(join(entry.location, "manifest.json"))).digest("hex");
    expect(sums).toBe(`${createHash("sha256").update("abc").digest("hex")}  volume.tar.zst\n${manifestSum}  manifest.json\n`);
  });

  it("hashes and sizes a streamed file", async () => {
    const repo = await newRepo();
    const w = await repo.begin(web, V1);
    const sink = await w.createFile("instance.tar.zst");
    const chunks = Array.from({ length: 50 }, (_, i) => Buffer.alloc(100_000, i));
    await pipeline(Readable.from(chunks), sink);
    w.addFile(sink.entry());
    const entry = await w.commit(manifestFields(web, V1));
    const all = Buffer.concat(chunks);
    expect(entry.manifest.files[0]).toEqual({ name: "instance.tar.zst", size: all.length, sha256: createHash("sha256").update(all).digest("hex") });
    await repo.verifyFile(entry, entry.manifest.files[0]!);
  });

  it("shows nothing of a version before its commit", async () => {
    const repo = await newRepo();
    const w = await repo.begin(web, V1);
    await w.writeFile("instance.tar.zst", "partial");
    expect(await listed(repo)).toEqual([]);
    await w.commit(manifestFields(web, V1));
    expect(await listed(repo)).toEqual([`instances/default/web/${V1}`]);
  });

  it("throws an aborted version away", async () => {
    const repo = await newRepo();
    const w = await repo.begin(web, V1);
    await w.writeFile("instance.tar.zst", "partial");
    await w.abort();
    expect(await listed(repo)).toEqual([]);
    expect(await readdir(join(repo.root, ".tmp"))).toEqual([]);
    await w.abort(); // twice is harmless
  });

  it("refuses to write a version that exists", async () => {
    const repo = await newRepo();
    await writeVersion(repo, web, V1);
    await expect(repo.begin(web, V1)).rejects.toThrow(new RepositoryError(`instance default/web already has a version ${V1}`));
  });

  it("removes writers' leftovers", async () => {
    const repo = await newRepo();
    const w = await repo.begin(web, V1);
    await w.writeFile("instance.tar.zst", "partial");
    expect(await repo.cleanupTemp()).toHaveLength(1);
    expect(await readdir(join(repo.root, ".tmp"))).toEqual([]);
    expect(await repo.cleanupTemp()).toEqual([]);
  });

  // Modes under every umask: directory-umask.test.ts (it sets the process umask, which a worker thread cannot).
});

describe("listing", () => {
  it("lists every version of every kind, and only the kinds asked for", async () => {
    const repo = await newRepo();
    await writeVersion(repo, web, V1);
    await writeVersion(repo, web, V2);
    await writeVersion(repo, data, V1);
    await writeVersion(repo, { kind: "instance", project: "prod", name: "web" }, V1);
    expect(await listed(repo)).toEqual([
      `instances/default/web/${V1}`,
      `instances/default/web/${V2}`,
      `instances/prod/web/${V1}`,
      `volumes/default/fast/data/${V1}`,
    ]);
    const { versions } = await repo.list(["volume"]);
    expect(versions.map((v) => v.manifest.name)).toEqual(["data"]);
  });

  it("ignores directories that are not version names", async () => {
    const repo = await newRepo();
    await writeVersion(repo, web, V1);
    await mkdir(join(repo.root, "instances", "default", "web", "20250230-000000"));
    await mkdir(join(repo.root, "instances", "default", "web", `${V2}.partial`));
    expect(await listed(repo)).toEqual([`instances/default/web/${V1}`]);
    expect((await repo.list()).damaged).toEqual([]);
  });

  it.each<[string, (dir: string) => Promise<void>, RegExp]>([
    ["a tampered manifest", (d) => appendFile(join(d, "manifest.json"), " "), /manifest\.json does not match its checksum in SHA256SUMS/],
    ["a missing manifest", (d) => rm(join(d, "manifest.json")), /manifest\.json is missing/],
    ["missing SHA256SUMS", (d) => rm(join(d, "SHA256SUMS")), /SHA256SUMS is missing/],
    ["malformed SHA256SUMS", (d) => appendFile(join(d, "SHA256SUMS"), "garbage\n"), /SHA256SUMS is malformed/],
  ])("reports %s as damaged and does not list it", async (_label, damage, problem) => {
    const repo = await newRepo();
    const good = await writeVersion(repo, web, V1);
    const bad = await writeVersion(repo, web, V2);
    await damage(bad.location);
    const { versions, damaged } = await repo.list();
    expect(versions).toEqual([good]);
    expect(damaged).toHaveLength(1);
    expect(damaged[0]).toMatchObject({ key: web, version: V2, location: bad.location });
    expect(damaged[0]!.problem).toMatch(problem);
  });

  it("reports a version copied under another name as damaged", async () => {
    const repo = await newRepo();
    const entry = await writeVersion(repo, web, V1);
    await cp(entry.location, join(repo.root, "instances", "default", "db", V1), { recursive: true });
    await cp(entry.location, join(repo.root, "instances", "default", "web", V2), { recursive: true });
    const { versions, damaged } = await repo.list();
    expect(versions).toEqual([entry]);
    expect(damaged.map((d) => d.problem)).toEqual([
      "manifest.json describes another item or version than its directory",
      "manifest.json describes another item or version than its directory",
    ]);
  });
});

describe("a cluster's volumes, keyed by member", () => {
  const vd: ItemKey = { kind: "volume", project: "default", pool: "default", name: "vd" };
  const onNode1: ItemKey = { ...vd, member: "node1" };
  const onNode2: ItemKey = { ...vd, member: "node2" };
  /** A version as the tool wrote it before volumes were keyed by member: under the volume's directory, the member in its manifest. */
  const writeOld = async (repo: DirectoryStore, member: string, version: string) => {
    const w = await repo.begin(vd, version);
    await w.writeFile("volume.tar.zst", `vd ${member} ${version}`);
    return w.commit(manifestFields(vd, version, { member }));
  };

  it("keeps each member's versions under @MEMBER, and lists them as two items", async () => {
    const repo = await newRepo();
    await writeVersion(repo, onNode1, V1);
    await writeVersion(repo, onNode2, V1);
    await writeVersion(repo, data, V1);
    expect(await listed(repo)).toEqual([`volumes/default/default/vd/@node1/${V1}`, `volumes/default/default/vd/@node2/${V1}`, `volumes/default/fast/data/${V1}`]);
    const { versions, damaged } = await repo.list(["volume"]);
    expect(damaged).toEqual([]);
    expect(versions.map((v) => [itemLabel(v.manifest), v.manifest.member])).toEqual([
      ["volume default/default/vd on node1", "node1"],
      ["volume default/default/vd on node2", "node2"],
      ["volume default/fast/data", undefined],
    ]);
    expect(new Set(versions.map((v) => itemId(v.manifest))).size).toBe(3);
  });

  it("an instance's member is no part of where it is stored", async () => {
    const repo = await newRepo();
    await writeVersion(repo, { ...web, member: "node2" }, V1);
    expect(await listed(repo)).toEqual([`instances/default/web/${V1}`]);
  });

  it("lists a version written before volumes were keyed by member with the member its manifest names: one item with the newer ones", async () => {
    const repo = await newRepo();
    const old2 = await writeOld(repo, "node2", V1);
    const old1 = await writeOld(repo, "node1", "20250913-030002");
    const new2 = await writeVersion(repo, onNode2, V2);
    expect(relative(repo.root, old2.location)).toBe(`volumes/default/default/vd/${V1}`);
    const { versions, damaged } = await repo.list(["volume"]);
    expect(damaged).toEqual([]);
    const ids = (m: ItemKey) => versions.filter((v) => itemId(v.manifest) === itemId(m)).map((v) => v.location).sort();
    expect(ids(onNode2)).toEqual([old2.location, new2.location].sort());
    expect(ids(onNode1)).toEqual([old1.location]);
    // Retention works per item: node2's old and new versions are one item's, node1's another's.
    const plan = planRetention(versions.map((v) => ({ key: v.manifest, version: v.manifest.version, entry: v })), { ...EMPTY_POLICY, last: 1 }, "UTC");
    expect(plan.map((i) => [itemLabel(i.key), i.decisions.map((d) => `${d.entry.version}:${d.keep ? "keep" : "remove"}`).sort().reverse()])).toEqual([
      ["volume default/default/vd on node1", ["20250913-030002:keep"]],
      ["volume default/default/vd on node2", [`${V2}:keep`, `${V1}:remove`]],
    ]);
    await repo.deleteVersion(old2);
    expect(await listed(repo)).toEqual([`volumes/default/default/vd/${"20250913-030002"}`, `volumes/default/default/vd/@node2/${V2}`]);
  });

  it("reports a version under @MEMBER whose manifest names another member, or none, as damaged", async () => {
    const repo = await newRepo();
    const good = await writeVersion(repo, onNode1, V1);
    const none = await writeVersion(repo, vd, V2);
    await cp(good.location, join(repo.root, "volumes", "default", "default", "vd", "@node2", V1), { recursive: true });
    await cp(none.location, join(repo.root, "volumes", "default", "default", "vd", "@node3", V2), { recursive: true });
    const { versions, damaged } = await repo.list();
    expect(versions.map((v) => v.location).sort()).toEqual([good.location, none.location].sort());
    expect(damaged.map((d) => [itemLabel(d.key), d.version, d.problem])).toEqual([
      ["volume default/default/vd on node2", V1, "manifest.json describes another item or version than its directory"],
      ["volume default/default/vd on node3", V2, "manifest.json describes another item or version than its directory"],
    ]);
  });

  it("ignores a directory @ with no member, and refuses to write under a member that is no directory name", async () => {
    const repo = await newRepo();
    await writeVersion(repo, onNode1, V1);
    await mkdir(join(repo.root, "volumes", "default", "default", "vd", "@", V2), { recursive: true });
    expect(await listed(repo)).toEqual([`volumes/default/default/vd/@node1/${V1}`]);
    expect((await repo.list()).damaged).toEqual([]);
    const err = await repo.begin({ ...vd, member: ".." }, V2).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AppError);
    expect((err as AppError).exitCode).toBe(ExitCode.Failure);
    expect((err as Error).message).toBe('cluster member name ".." cannot be a directory name: it ".." is not allowed');
  });
});

describe("verifyFile", () => {
  async function stored() {
    const repo = await newRepo();
    const entry = await writeVersion(repo, web, V1, Buffer.alloc(4096, 7));
    const file = entry.manifest.files[0]!;
    return { repo, entry, file, path: join(entry.location, file.name) };
  }

  it("passes an intact file", async () => {
    const { repo, entry, file } = await stored();
    await expect(repo.verifyFile(entry, file)).resolves.toBeUndefined();
  });

  it("detects a changed size", async () => {
    const { repo, entry, file, path } = await stored();
    await appendFile(path, "x");
    const err = await repo.verifyFile(entry, file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as IntegrityError).exitCode).toBe(ExitCode.Integrity);
    expect((err as Error).message).toBe(`${path}: size is 4097 bytes, the manifest says 4096`);
  });

  it("detects one flipped byte", async () => {
    const { repo, entry, file, path } = await stored();
    const bytes = await readFile(path);
    bytes[2000] = bytes[2000]! ^ 0x01;
    await writeFile(path, bytes);
    const err = await repo.verifyFile(entry, file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as Error).message).toBe(`${path}: sha256 mismatch (the file is corrupt)`);
  });

  it("detects a missing file", async () => {
    const { repo, entry, file, path } = await stored();
    await rm(path);
    const err = await repo.verifyFile(entry, file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as Error).message).toBe(`${path}: no such file or directory`);
  });
});

describe("reserveVersion and run records", () => {
  const at = new Date("2025-09-14T03:00:02.500Z");
  const record = { command: "incus-backup backup --all", started: at.toISOString(), status: "running" as const };

  it("takes the run's start time, moved on by a second while a run record has it", async () => {
    const repo = await newRepo();
    expect(await repo.reserveVersion(at, record)).toBe("20250914-030002");
    expect(await repo.reserveVersion(at, record)).toBe("20250914-030003");
    expect(await repo.reserveVersion(at, record)).toBe("20250914-030004");
    expect(await repo.reserveVersion(new Date("2025-09-14T03:00:03Z"), record)).toBe("20250914-030005");
    expect((await repo.listRuns()).map((r) => r.version)).toEqual(["20250914-030002", "20250914-030003", "20250914-030004", "20250914-030005"]);
  });

  it("keeps what saveRun writes", async () => {
    const repo = await newRepo();
    const version = await repo.reserveVersion(at, record);
    await repo.saveRun({ ...record, version, status: "ok", finished: "2025-09-14T03:10:00.000Z" });
    expect(await repo.listRuns()).toEqual([{ ...record, version, status: "ok", finished: "2025-09-14T03:10:00.000Z" }]);
  });

  it("skips unreadable run records", async () => {
    const repo = await newRepo();
    await repo.reserveVersion(at, record);
    await writeFile(join(repo.root, "runs", "20250101-000000.json"), "{");
    expect((await repo.listRuns()).map((r) => r.version)).toEqual(["20250914-030002"]);
  });

  it.each<[string, unknown]>([
    ["items that is a string", { items: "all" }],
    ["an item that is null", { items: [null] }],
    ["an item with ok as a string", { items: [{ label: "x", ok: "yes" }] }],
    ["an item with bytes as a string", { items: [{ label: "x", ok: true, bytes: "many" }] }],
    ["a status of its own", { status: 9 }],
    ["a start that is not a time", { started: true }],
    ["a finish that is not a time", { finished: "later" }],
    ["a command that is a number", { command: 5 }],
    ["a version other than its file's", { version: "20250101-000001" }],
  ])("skips a run record with %s", async (_label, change) => {
    const repo = await newRepo();
    await repo.reserveVersion(at, record);
    const good = { ...record, version: "20250101-000000", status: "ok", finished: at.toISOString(), items: [{ label: "database", ok: true, bytes: 5, seconds: 1 }] };
    await writeFile(join(repo.root, "runs", "20250101-000000.json"), JSON.stringify(good));
    expect((await repo.listRuns()).map((r) => r.version)).toEqual(["20250101-000000", "20250914-030002"]);
    await writeFile(join(repo.root, "runs", "20250101-000000.json"), JSON.stringify({ ...good, ...(change as object) }));
    expect((await repo.listRuns()).map((r) => r.version)).toEqual(["20250914-030002"]);
  });
});

describe("deleteVersion", () => {
  it("removes one version and keeps the others", async () => {
    const repo = await newRepo();
    const first = await writeVersion(repo, web, V1);
    await writeVersion(repo, web, V2);
    await repo.deleteVersion(first);
    expect(await listed(repo)).toEqual([`instances/default/web/${V2}`]);
    await expect(stat(first.location)).rejects.toThrow();
    expect(await readdir(join(repo.root, ".tmp"))).toEqual([]);
  });

  it("removes a damaged version", async () => {
    const repo = await newRepo();
    const entry = await writeVersion(repo, web, V1);
    await rm(join(entry.location, "manifest.json"));
    const { damaged } = await repo.list();
    await repo.deleteVersion(damaged[0]!);
    expect(await repo.list()).toEqual({ versions: [], damaged: [] });
  });

  it("counts the size of what is left", async () => {
    const repo = await newRepo();
    const first = await writeVersion(repo, web, V1, "12345");
    await writeVersion(repo, data, V1, "123");
    expect(await repo.totalSize()).toBe(8);
    await repo.deleteVersion(first);
    expect(await repo.totalSize()).toBe(3);
  });
});

describe("run records", () => {
  it("pruneRunRecords removes only old records whose versions are all gone", async () => {
    const { mkdtemp, readdir, rm } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { DirectoryStore } = await import("../../../src/repository/directory");
    const dir = await mkdtemp(join(tmpdir(), "ibk-runs-"));
    try {
      const { repo } = await DirectoryStore.open(dir, { create: true });
      const versions: string[] = [];
      for (let i = 0; i < 5; i++) {
        versions.push(await repo.reserveVersion(new Date(Date.UTC(2025, 0, 1 + i, 3)), { command: "t", started: "x", status: "ok" }));
      }
      // One version still holds an item: its record stays even though it is old.
      const w = await repo.begin({ kind: "instance", project: "default", name: "web" }, versions[1]!);
      await w.writeFile("instance.tar.zst", "x");
      await w.commit({
        format: 1, kind: "instance", project: "default", name: "web", version: versions[1]!, created: new Date().toISOString(),
        tool: { name: "incus-backup", version: "t" }, server: {}, options: {},
      });
      expect(await repo.pruneRunRecords(2)).toBe(2);
      expect((await readdir(join(dir, "runs"))).sort()).toEqual([versions[1], versions[3], versions[4]].map((v) => `${v}.json`));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("the server a repository holds the backups of", () => {
  it("is kept in the marker beside the id, read back, replaced whole; a damaged record counts as none", async () => {
    const dir = await tempDir();
    const { repo } = await DirectoryStore.open(dir, { create: true });
    const id = await repo.ensureId();
    expect(await repo.serverOwner()).toBeUndefined();
    const lock = await repo.lock("test", { install: "" });
    try {
      await repo.setServerOwner({ fingerprint: "ab".repeat(32), name: "incus01", since: "2025-09-14T03:00:02.000Z" });
      expect(await repo.serverOwner()).toEqual({ fingerprint: "ab".repeat(32), name: "incus01", since: "2025-09-14T03:00:02.000Z" });
      const marker = JSON.parse(await readFile(join(dir, "incus-backup.json"), "utf8")) as Record<string, unknown>;
      expect(marker).toMatchObject({ format: "incus-backup", id, server: { name: "incus01" } });
      await writeFile(join(dir, "incus-backup.json"), JSON.stringify({ ...marker, server: { name: 5 } }));
      expect(await repo.serverOwner()).toBeUndefined();
      expect(await repo.repositoryId()).toBe(id);
    } finally {
      await lock.release();
    }
  });
});
