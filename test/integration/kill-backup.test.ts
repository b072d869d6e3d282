// Issue 6: SIGKILL `backup --all` (and `prune`) at many points, on Incus 6.0 (export and download)
// and 7.0 (streamed). After every kill: nothing partial is listed, every listed version verifies,
// no version that existed before is lost, the server keeps no backup that never expires, and the
// next backup takes the stale lock over and succeeds.
//
// The points are found without a hook in the product: HTTP requests are held back (or cut after
// some bytes) by a proxy between the tool and Incus, file-system steps are paused by a preload
// (helpers/faults.ts). Each case prints what it tried and what it found.
import { mkdir, readdir, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, incusOk, labVersions, launchInstance, tracker, uniqueName } from "../lab/lab";
import { FaultProxy, killTool, nonExpiring, pauseAt, reached, req, serverBackups, waitForStderr, type SeenRequest } from "./helpers/faults";
import { isolatedServer, repoDir, wrongModes } from "./helpers/server";
import { listJson, startTool, tool, toolInstallId, toolOk, type ListRow, type RunningTool } from "./helpers/tool";

/** A place to kill the tool: arms the proxy or the preload, and says when it is reached. */
interface Point {
  name: string;
  /** Which transfer it exists in (default both). */
  only?: "export" | "direct";
  /** The same code on every Incus version: killed on the first lab of the run only. */
  once?: boolean;
  /** Puts something in place first (leftovers, a stale lock). */
  prepare?: (dir: string) => Promise<void>;
  /** The command (default: backup --all --images). */
  args?: (dir: string) => string[];
  /** Preload pause, or a proxy rule armed before the start. */
  pause?: Parameters<typeof pauseAt>[0];
  proxy?: (p: FaultProxy, s: Setup) => Promise<SeenRequest>;
  /** Also acceptable as "no version lost": versions this command is meant to remove. */
  removes?: boolean;
}

interface Setup {
  big: string;
  small: string;
  volume: string;
}

const backupAll = (dir: string) => ["backup", "--all", "--images", `--dir=${dir}`];
const versionDir = /\/\d{8}-\d{6}$/;
const REPO_ENTRIES = new Set(["incus-backup.json", "instances", "volumes", "images", "database", "runs", "state", "journal", ".tmp"]);

const POINTS: Point[] = [
  { name: "right after taking the lock", pause: { op: "link", when: "after", match: /\/lock\.json$/ } },
  { once: true, name: "after reserving the run's version", pause: { op: "rename", when: "after", match: /\/runs\/\d{8}-\d{6}\.json$/ } },
  { once: true, name: "during the database export (before GET /internal/sql)", proxy: (p) => p.holdRequest(req("GET", /^\/internal\/sql/)) },
  { once: true, name: "between the database's files (config.json written, SQL dumps not)", pause: { op: "open", when: "before", match: /\/\.tmp\/[^/]*-database-[^/]*\/global\.sql$/ } },
  {
    name: "during the server-side create (waiting for the backup operation)",
    only: "export",
    // The first operation of a run on 6.0 is an item's backup being written by the server: the
    // server goes on writing it while the tool waits, and dies, here.
    proxy: (p) => p.holdRequest(req("GET", /^\/1\.0\/operations\/[^/]+\/wait/)),
  },
  {
    name: "mid-download of an instance (1 MiB of the export received)",
    only: "export",
    proxy: (p, s) => p.holdResponseAfter(req("GET", new RegExp(`^/1\\.0/instances/${s.big}/backups/[^/]+/export`)), 1 << 20),
  },
  {
    name: "mid-stream of an instance (1 MiB of the direct backup received)",
    only: "direct",
    proxy: (p, s) => p.holdResponseAfter(req("POST", new RegExp(`^/1\\.0/instances/${s.big}/backups`)), 1 << 20),
  },
  {
    name: "mid-download of a volume (256 KiB received)",
    proxy: (p, s) => p.holdResponseAfter(req("GET", new RegExp(`^/1\\.0/storage-pools/default/volumes/custom/${s.volume}/backups/[^/]+/export`)), 256 << 10),
    only: "export",
  },
  {
    name: "mid-stream of a volume (256 KiB received)",
    proxy: (p, s) => p.holdResponseAfter(req("POST", new RegExp(`^/1\\.0/storage-pools/default/volumes/custom/${s.volume}/backups`)), 256 << 10),
    only: "direct",
  },
  { once: true, name: "mid-download of an image (128 KiB received)", proxy: (p) => p.holdResponseAfter(req("GET", /^\/1\.0\/images\/[0-9a-f]{64}\/export/), 128 << 10) },
  {
    name: "archive complete, before its manifest is written",
    pause: { op: "open", when: "before", match: /\/\.tmp\/[^/]*-instance-[^/]*\/manifest\.json$/ },
  },
  {
    name: "manifest and SHA256SUMS written, before the rename into place",
    pause: { op: "rename", when: "before", match: /\/\.tmp\/[^/]*-instance-[^/]* -> .*\/instances\/default\/[^/]+\/\d{8}-\d{6}$/ },
  },
  {
    name: "right after the rename into place (before the parent's fsync and the server-side delete)",
    once: true,
    pause: { op: "rename", when: "after", match: /\/\.tmp\/[^/]*-instance-[^/]* -> .*\/instances\/default\/[^/]+\/\d{8}-\d{6}$/ },
  },
  {
    name: "before the server-side backup is deleted (DELETE .../backups/NAME)",
    only: "export",
    proxy: (p, s) => p.holdRequest(req("DELETE", new RegExp(`^/1\\.0/instances/${s.big}/backups/`))),
  },
  { once: true, name: "between the last rename and the run record", pause: { op: "rename", when: "before", match: /\/runs\/\d{8}-\d{6}\.json$/, nth: 2 } },
  {
    name: "the next run, while it removes an earlier run's leftovers in .tmp/",
    once: true,
    prepare: async (dir) => {
      await mkdir(join(dir, ".tmp", "20250101-000000-instance-0123456789ab"), { recursive: true, mode: 0o700 });
      await writeFile(join(dir, ".tmp", "20250101-000000-instance-0123456789ab", "instance.tar.zst"), "partial", { mode: 0o600 });
    },
    pause: { op: "rm", when: "before", match: /\/\.tmp\/20250101-000000-instance-0123456789ab$/ },
  },
  {
    name: "while taking over a stale lock (moved aside, not yet removed)",
    once: true,
    prepare: async (dir) => {
      const t = new Date().toISOString();
      // One of this install's runs, whose process is gone.
      const lock = { host: hostname(), pid: 999_999_999, install: await toolInstallId(), command: "incus-backup backup --all", started: t, refreshed: t, id: "0123456789abcdef" };
      await writeFile(join(dir, "lock.json"), JSON.stringify(lock), { mode: 0o600 });
    },
    pause: { op: "rename", when: "after", match: /\/lock\.json -> .*\/\.lock\.json-stale-[0-9a-f]+$/ },
  },
  {
    name: "prune --keep-last 2, one version renamed aside and not yet removed",
    once: true,
    args: (dir) => ["prune", "--keep-last", "2", `--dir=${dir}`],
    pause: { op: "rename", when: "after", match: /\/\d{8}-\d{6} -> .*\/\.tmp\/deleting-[0-9a-f]+$/, nth: 2 },
    removes: true,
  },
  {
    name: "prune --keep-last 1, before the second removal's rename",
    once: true,
    args: (dir) => ["prune", "--keep-last", "1", `--dir=${dir}`],
    pause: { op: "rename", when: "before", match: /\/\d{8}-\d{6} -> .*\/\.tmp\/deleting-[0-9a-f]+$/, nth: 2 },
    removes: true,
  },
];

/** Figures for the closing note, over both versions. */
const figures = { kills: 0, dataLost: 0, nextBackupOk: 0 };

describe.each(labVersions())("SIGKILL during backup --all on Incus %s", (version) => {
  const track = tracker();
  const s: Setup = { big: uniqueName("kb-big"), small: uniqueName("kb-small"), volume: uniqueName("kb-vol") };
  let socket: string;
  let dir: string;
  let proxy: FaultProxy;
  let direct: boolean;
  const t0 = Date.now();

  beforeAll(async () => {
    socket = await isolatedServer(track, { version });
    const on = { socket };
    await launchInstance(s.big, { socket });
    // Random data, so the archive stays a few MiB and a download can be cut in the middle.
    await incusOk(["exec", s.big, "--", "sh", "-c", "dd if=/dev/urandom of=/root/big bs=1048576 count=6 2>/dev/null && sync"], on);
    await launchInstance(s.small, { socket, start: false });
    await incusOk(["storage", "volume", "create", "default", s.volume], on);
    await incusOk(["config", "device", "add", s.big, s.volume, "disk", "pool=default", `source=${s.volume}`, "path=/mnt/vol"], on);
    await incusOk(["exec", s.big, "--", "sh", "-c", "dd if=/dev/urandom of=/mnt/vol/data bs=1048576 count=2 2>/dev/null && sync"], on);
    const server = (await apiGet("/1.0", on)) as { api_extensions: string[] };
    direct = server.api_extensions.includes("direct_backup");
    expect(direct).toBe(version !== "6.0");
    dir = await repoDir(track);
    proxy = await FaultProxy.start(socket);
    track.defer(() => proxy.close());
    // The versions every kill must leave alone.
    await toolOk(backupAll(dir), { socket });
    expect((await listJson(dir)).length).toBe(5);
  });
  afterAll(async () => {
    console.log(`[${version}] kill-backup: ${Date.now() - t0} ms in all`);
    await track.cleanup();
  });

  const first = version === labVersions()[0];
  const points = POINTS.filter((p) => (!p.only || p.only === (version === "6.0" ? "export" : "direct")) && (first || !p.once));

  it.each(points.map((p) => [p.name, p] as const))("%s", async (_name, point) => {
    const t1 = Date.now();
    const before = await listJson(dir);
    await point.prepare?.(dir);
    const args = (point.args ?? backupAll)(dir);
    const at = point.proxy?.(proxy, s);
    const run: RunningTool = startTool(args, { socket: proxy.path, env: point.pause ? pauseAt(point.pause) : {}, umask: 0o000 });
    if (at) await reached(run, at, point.name);
    else await waitForStderr(run, /IBK-PAUSED/);
    const lockHeld = await exists(join(dir, "lock.json"));
    const tmpFiles = await countFiles(join(dir, ".tmp"));
    await killTool(run);
    proxy.dropHeld();
    figures.kills++;

    // Nothing partial listed; everything listed verifies; nothing that was there is gone.
    const after = await listJson(dir);
    const verify = await tool(["verify", "--json", `--dir=${dir}`]);
    const failed = (JSON.parse(verify.stdout || "[]") as Array<{ ok: boolean; path: string; problems: string[] }>).filter((r) => !r.ok);
    const lost = missing(before, after, point.removes === true);
    if (lost.length > 0 || verify.code !== 0) figures.dataLost++;
    expect(failed, verify.stderr).toEqual([]);
    expect(verify.code).toBe(0);
    expect(lost).toEqual([]);
    for (const r of after) expect(r.path).toMatch(versionDir);
    const server = await serverBackups(socket);
    expect(nonExpiring(server)).toEqual([]);
    expect(await wrongModes(dir)).toEqual([]);

    // The next backup takes over, cleans up and succeeds.
    const next = await tool(backupAll(dir), { socket });
    expect(next.code, next.stderr).toBe(0);
    if (lockHeld) expect(next.stderr).toMatch(/taking over a stale lock: locked by pid \d+ on host \S+ \(install [0-9a-f]{8}\) since .* \(incus-backup (backup|prune) .*\) \(process \d+ is gone\)/);
    figures.nextBackupOk++;
    expect(await countFiles(join(dir, ".tmp"))).toBe(0);
    // Nothing but the repository's own entries at its top (no lock files left behind).
    expect((await readdir(dir)).filter((n) => !REPO_ENTRIES.has(n))).toEqual([]);
    const final = await listJson(dir);
    expect(final.length).toBe(after.length + 5);
    expect(missing(after, final, false)).toEqual([]);
    const leftAfterNext = await serverBackups(socket);
    expect(nonExpiring(leftAfterNext)).toEqual([]);
    console.log(
      `[${version}] kill ${point.name}: lock ${lockHeld ? "held" : "not held"}, ${tmpFiles} file(s) in .tmp; ` +
        `after: ${after.length} version(s) listed (${after.length - before.length >= 0 ? "+" : ""}${after.length - before.length}), verify ok, none lost; ` +
        `${server.length} server-side backup(s), all expiring; next backup ok${/stale lock/.test(next.stderr) ? " (took over the stale lock)" : ""}` +
        `${/removed (\d+) unfinished/.test(next.stderr) ? `, ${/removed (\d+) unfinished/.exec(next.stderr)![1]} leftover(s) removed` : ""} (${Date.now() - t1} ms)`,
    );
  });

  it("the killed runs left the repository verifiable in depth", async () => {
    const r = await toolOk(["verify", "--deep", `--dir=${dir}`]);
    console.log(`[${version}] after ${points.length} kills: ${r.stdout.trim()}`);
  });
});

afterAll(() => {
  console.log(`kill-backup figures: ${figures.kills} kills, ${figures.dataLost} with data lost, ${figures.nextBackupOk} next backups ok`);
  expect(figures.dataLost).toBe(0);
});

/** Versions of `before` that are not in `after`; with `removing`, an item may lose all but its newest. */
function missing(before: ListRow[], after: ListRow[], removing: boolean): string[] {
  const key = (r: ListRow) => `${r.type} ${r.project}/${r.pool ?? ""}/${r.name} ${r.version}`;
  const now = new Set(after.map(key));
  const gone = before.filter((r) => !now.has(key(r)));
  if (!removing) return gone.map(key);
  // prune may remove old versions, never an item's newest one.
  const newest = new Map<string, string>();
  for (const r of before) {
    const item = `${r.type} ${r.project}/${r.pool ?? ""}/${r.name}`;
    if ((newest.get(item) ?? "") < r.version) newest.set(item, r.version);
  }
  return gone.filter((r) => newest.get(`${r.type} ${r.project}/${r.pool ?? ""}/${r.name}`) === r.version).map(key);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

async function countFiles(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    n += e.isDirectory() ? await countFiles(join(dir, e.name)) : 1;
  }
  return n;
}

