// "The promise" (README): a restore that dies at any point leaves either the original item or the
// complete restored item, never neither, and the next run cleans up. Proved here by SIGKILLing
// replace-restores of an instance and of a volume in use by a running instance at every phase of
// the journal (import, swap / stop, refresh, finish) and between the calls inside each phase.
//
// After each kill the next run recovers: a restore of the same item (which must then complete),
// or a backup. Then: the journal is gone, no ibk-restore-* / ibk-old-* of that restore is left,
// the data is the original's or the backup's (checksums), and what was running runs.
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checksumTree, createVolumeWithData, incusOk, labShell, labSocket, labVersions, tracker, uniqueName, writeTestData, type Manifest } from "../lab/lab";
import { duplicateMacs, launchRealistic, macsOf, temporaryLeftovers } from "./helpers/realistic";
import { FaultProxy, killTool, pauseAt, reached, req, waitForStderr, type SeenRequest } from "./helpers/faults";
import { allInstanceNames, allVolumeNames, instanceStatus, repoDir, wrongModes } from "./helpers/server";
import { listJson, startTool, tool, toolOk } from "./helpers/tool";

interface Names {
  inst: string;
  vol: string;
  app: string;
  pool: string;
}

interface KillPoint {
  name: string;
  /** A preload pause, or proxy rules; resolves once the tool is at the point. */
  pause?: Parameters<typeof pauseAt>[0];
  proxy?: (p: FaultProxy, n: Names) => Promise<SeenRequest>;
}

const journalWrite = (nth: number) => ({ op: "rename" as const, when: "after" as const, match: /\/journal\/[0-9a-f]{12}\.json$/, nth });
const journalRemove = { op: "unlink" as const, when: "before" as const, match: /\/journal\/[0-9a-f]{12}\.json$/ };
const opWait = req("GET", /^\/1\.0\/operations\/[^/]+\/wait/);
const path = (p: string) => new RegExp(`^${p.replace(/\./g, "\\.")}(\\?|$)`);

/** Holds the first operation wait after the nth request matching `after`. */
async function waitAfter(p: FaultProxy, after: (r: SeenRequest) => boolean, nth = 1): Promise<SeenRequest> {
  await p.observe(after, nth);
  return p.holdRequest(opWait);
}

const INSTANCE_POINTS: KillPoint[] = [
  { name: "import: journal written, nothing uploaded yet", pause: journalWrite(1) },
  { name: "import: half the upload sent", proxy: (p) => p.holdUploadAfter(req("POST", path("/1.0/instances")), 512 << 10) },
  { name: "import: the server unpacking it (waiting for the operation)", proxy: (p) => waitAfter(p, req("POST", path("/1.0/instances"))) },
  { name: "swap: journal written, original still running", pause: journalWrite(2) },
  { name: "swap: before the original is stopped", proxy: (p, n) => p.holdRequest(req("PUT", path(`/1.0/instances/${n.inst}/state`))) },
  { name: "swap: while the original stops", proxy: (p, n) => waitAfter(p, req("PUT", path(`/1.0/instances/${n.inst}/state`))) },
  { name: "swap: original stopped, not renamed yet", proxy: (p, n) => p.holdRequest(req("POST", path(`/1.0/instances/${n.inst}`))) },
  { name: "swap: while the original is renamed aside", proxy: (p, n) => waitAfter(p, req("POST", path(`/1.0/instances/${n.inst}`))) },
  { name: "swap: original aside, not yet made inert (its NICs and MACs still on)", proxy: (p) => p.holdRequest(req("PUT", /^\/1\.0\/instances\/ibk-old-[0-9a-f]{8}(\?|$)/)) },
  { name: "swap: while the original is made inert", proxy: (p) => waitAfter(p, req("PUT", /^\/1\.0\/instances\/ibk-old-[0-9a-f]{8}(\?|$)/)) },
  { name: "swap: original aside, the restored one not yet given its name", proxy: (p) => p.holdRequest(req("POST", /^\/1\.0\/instances\/ibk-restore-[0-9a-f]{8}(\?|$)/)) },
  { name: "finish: journal written, restored one in place and stopped", pause: journalWrite(3) },
  { name: "finish: while the restored one starts", proxy: (p, n) => waitAfter(p, req("PUT", path(`/1.0/instances/${n.inst}/state`)), 2) },
  { name: "finish: before the original is deleted", proxy: (p) => p.holdRequest(req("DELETE", /^\/1\.0\/instances\/ibk-old-[0-9a-f]{8}(\?|$)/)) },
  { name: "finish: all done, before the journal is removed", pause: journalRemove },
];

const VOLUME_POINTS: KillPoint[] = [
  { name: "import: journal written, nothing uploaded yet", pause: journalWrite(1) },
  { name: "import: half the upload sent", proxy: (p, n) => p.holdUploadAfter(req("POST", path(`/1.0/storage-pools/${n.pool}/volumes/custom`)), 512 << 10) },
  { name: "import: the server unpacking it (waiting for the operation)", proxy: (p, n) => waitAfter(p, req("POST", path(`/1.0/storage-pools/${n.pool}/volumes/custom`))) },
  { name: "stop: journal written, its instance still running", pause: journalWrite(2) },
  { name: "stop: before its instance is stopped", proxy: (p, n) => p.holdRequest(req("PUT", path(`/1.0/instances/${n.app}/state`))) },
  { name: "stop: while its instance stops", proxy: (p, n) => waitAfter(p, req("PUT", path(`/1.0/instances/${n.app}/state`))) },
  { name: "refresh: journal written, instance stopped, contents not replaced yet", pause: journalWrite(3) },
  { name: "refresh: while the contents are replaced (copy --refresh)", proxy: (p, n) => waitAfter(p, req("POST", path(`/1.0/storage-pools/${n.pool}/volumes/custom`)), 2) },
  { name: "finish: journal written, contents replaced, instance still stopped", pause: journalWrite(4) },
  { name: "finish: while its instance starts again", proxy: (p, n) => waitAfter(p, req("PUT", path(`/1.0/instances/${n.app}/state`)), 2) },
  { name: "finish: before the temporary volume is deleted", proxy: (p, n) => p.holdRequest(req("DELETE", new RegExp(`^/1\\.0/storage-pools/${n.pool}/volumes/custom/ibk-restore-[0-9a-f]{8}(\\?|$)`))) },
  { name: "finish: all done, before the journal is removed", pause: journalRemove },
];

interface JournalEntry {
  phase: string;
  temp: string;
  aside?: string;
}

/** Figures for the closing note. */
const figures = { kills: 0, dataLost: 0, original: 0, restored: 0, notRunning: 0, duplicateMacs: 0 };

// The journal logic is the same on every Incus version and storage driver; what the server does
// while the tool is gone is not. The first lab's dir pool gets every kill point; the points where
// the server was still working are repeated on the first lab's btrfs pool and on the other lab's
// btrfs pool, so that each of them runs on both versions and on both drivers (a fourth setting,
// the other lab's dir pool, would prove nothing these three do not, for 7 more kills and their setup).
const [firstLab, ...otherLabs] = labVersions();
const matrix: Array<readonly [string, string]> = [
  [firstLab!, "default"],
  [firstLab!, "btrfs"],
  ...otherLabs.map((v) => [v, "btrfs"] as const),
];

describe.each(matrix)("SIGKILL during replace-restores on Incus %s, %s pool", (version, pool) => {
  const track = tracker();
  const n: Names = { inst: uniqueName("kr-inst"), vol: uniqueName("kr-vol"), app: uniqueName("kr-app"), pool };
  let socket: string;
  let dir: string;
  let proxy: FaultProxy;
  let backup: { inst: Manifest; vol: Manifest };
  let round = 0;
  let version0: string;
  const on = () => ({ socket });

  beforeAll(async () => {
    socket = labSocket(version);
    // As on a real host: NICs (one with a static address), snapshots, cloud-init, limits, autostart.
    await launchRealistic(n.inst, { socket, track, pool, snapshots: 1, staticAddress: true });
    await launchRealistic(n.app, { socket, track, pool });
    const inst = await writeTestData(n.inst, "/root/data", { sizeMiB: 1, socket });
    const vol = await createVolumeWithData(pool, n.vol, { attachTo: n.app, path: "/mnt/vol", sizeMiB: 1, socket, track });
    dir = await repoDir(track);
    await toolOk(["backup", "--instances", "--volumes", "--name", n.inst, "--name", `${pool}/${n.vol}`, `--dir=${dir}`], { socket });
    backup = { inst, vol };
    // Backups made to recover add newer versions; every restore here is of this one.
    version0 = (await listJson(dir))[0]!.version;
    proxy = await FaultProxy.start(socket);
    track.defer(() => proxy.close());
  });
  afterAll(() => track.cleanup());

  async function journal(): Promise<JournalEntry[]> {
    const names = (await readdir(join(dir, "journal")).catch(() => [] as string[])).filter((f) => f.endsWith(".json"));
    return Promise.all(names.map(async (f) => JSON.parse(await readFile(join(dir, "journal", f), "utf8")) as JournalEntry));
  }

  const first = version === firstLab && pool === "default";
  const serverBusy = (p: KillPoint) => /while (the original stops|the original is renamed|the original is made inert|its instance stops|the contents)|unpacking/.test(p.name);
  const cases = [
    ...INSTANCE_POINTS.map((p) => ["instance", p] as const),
    ...VOLUME_POINTS.map((p) => ["volume", p] as const),
  ].filter(([, p]) => first || serverBusy(p));

  it.each(cases.map(([kind, p]) => [`${kind}: ${p.name}`, kind, p] as const))("%s", async (_label, kind, point) => {
    const t0 = Date.now();
    round++;
    // The live item differs from the backup, so the checksums tell which one survived.
    const where = kind === "instance" ? { instance: n.inst, path: "/root/data" } : { instance: n.app, path: "/mnt/vol" };
    await incusOk(["exec", where.instance, "--", "sh", "-c", `echo round ${round} >${where.path}/live-${round} && sync`], on());
    const original = await checksumTree(where.instance, where.path, on());
    const restored = kind === "instance" ? backup.inst : backup.vol;
    expect(original).not.toEqual(restored);
    const args = ["restore", `--${kind}`, "--name", kind === "instance" ? n.inst : `${pool}/${n.vol}`, `--version=${version0}`, "--force", `--dir=${dir}`];

    const at = point.proxy?.(proxy, n);
    const run = startTool(args, { socket: proxy.path, env: point.pause ? pauseAt(point.pause) : {} });
    if (at) await reached(run, at, point.name);
    else await waitForStderr(run, /IBK-PAUSED/);
    await killTool(run);
    proxy.dropHeld();
    figures.kills++;
    const [entry] = await journal();
    const afterKill = await describeState(entry);

    // The next run recovers: every other round a restore of the same item (which then completes),
    // otherwise a backup of it.
    const byRestore = round % 2 === 1;
    const next = byRestore
      ? await tool(args, { socket })
      : await tool(["backup", `--${kind}s`, "--name", kind === "instance" ? n.inst : `${pool}/${n.vol}`, `--dir=${dir}`], { socket });
    const recoveredSaid = next.stderr.split("\n").filter((l) => /interrupted restore/.test(l));

    const now = await checksumTree(where.instance, where.path, on()).catch((e: Error) => e);
    const survived = now instanceof Error ? "nothing readable" : eq(now, restored) ? "restored" : eq(now, original) ? "original" : "neither";
    if (survived !== "restored" && survived !== "original") figures.dataLost++;
    else figures[survived]++;
    const status = await instanceStatus(where.instance, on()).catch(() => "missing");
    if (status !== "Running") figures.notRunning++;
    const leftovers = entry ? await present([entry.temp, entry.aside].filter((x): x is string => !!x)) : [];
    const duplicates = await duplicateMacs(socket);
    if (duplicates.length > 0) figures.duplicateMacs++;
    console.log(
      `[${version}/${pool}] kill ${kind} restore at "${point.name}": ${afterKill}; ` +
        `recovered by ${byRestore ? "restore" : "backup"} (exit ${next.code}${recoveredSaid.length ? `: ${recoveredSaid.join("; ").replace(/^.*?: /, "")}` : ""}); ` +
        `${survived} data survived, ${where.instance} ${status}, journal ${(await journal()).length ? "LEFT" : "gone"}, ` +
        `${leftovers.length ? `LEFTOVERS ${leftovers.join(" ")}` : "no leftovers"} (${Date.now() - t0} ms)`,
    );
    expect(next.code, `${next.stdout}\n${next.stderr}`).toBe(0);
    expect(["original", "restored"]).toContain(survived);
    if (byRestore) expect(survived).toBe("restored");
    expect(status).toBe("Running");
    expect(await journal()).toEqual([]);
    expect(leftovers).toEqual([]);
    expect(duplicates).toEqual([]);
    expect(await wrongModes(dir)).toEqual([]);
  });

  /** What exists right after the kill, for the log line. */
  async function describeState(entry: JournalEntry | undefined): Promise<string> {
    if (!entry) return "no journal";
    const have = await present([entry.temp, ...(entry.aside ? [entry.aside] : [])]);
    return `journal phase ${entry.phase}${have.length ? `, ${have.join(" and ")} present` : ""}`;
  }

  /** Which of these instance or volume names exist on the server. */
  async function present(names: string[]): Promise<string[]> {
    const all = new Set([...(await allInstanceNames(socket)), ...(await allVolumeNames(socket))]);
    return names.filter((x) => all.has(x));
  }
});

// A restored instance that does not start is deleted and the original put back (real-host.test.ts);
// killed at each step of that, the next run must still end with the original back and running.
const PUT_BACK_POINTS: Array<{ name: string; hold: RegExp; method: string; nth?: number }> = [
  { name: "before the restored one (which did not start) is deleted", method: "DELETE", hold: /^\/1\.0\/instances\/NAME(\?|$)/ },
  { name: "before the original gets its devices back", method: "PUT", hold: /^\/1\.0\/instances\/ibk-old-[0-9a-f]{8}(\?|$)/, nth: 2 },
  { name: "before the original gets its MACs back", method: "PATCH", hold: /^\/1\.0\/instances\/ibk-old-[0-9a-f]{8}(\?|$)/ },
  { name: "before the original gets its name back", method: "POST", hold: /^\/1\.0\/instances\/ibk-old-[0-9a-f]{8}(\?|$)/ },
  // The state then looks like a completed swap; only the journal tells it is an undo.
  { name: "after the original has its name back, before it starts again", method: "PUT", hold: /^\/1\.0\/instances\/NAME\/state(\?|$)/, nth: 3 },
];

describe("SIGKILL while a restore that failed to start puts the original back", () => {
  const track = tracker();
  const name = uniqueName("kr-back");
  let socket: string;
  let dir: string;
  let proxy: FaultProxy;
  let macs: Record<string, string>;
  let broken: string;
  const devNode = `/dev/ibk-${name}`;

  beforeAll(async () => {
    socket = labSocket();
    await launchRealistic(name, { socket, track, snapshots: 1, staticAddress: true });
    // The backup has a host device node that is gone by the time of the restores: the restored
    // instance cannot start (see real-host.test.ts).
    await labShell(`mknod ${devNode} c 1 3`);
    track.defer(() => labShell(`rm -f ${devNode}`));
    await incusOk(["config", "device", "add", name, "stick", "unix-char", `source=${devNode}`, "path=/dev/stick"], { socket });
    dir = await repoDir(track);
    await toolOk(["backup", "--instances", "--name", name, `--dir=${dir}`], { socket });
    // The runs that recover make newer backups (without the device); every restore is of this one.
    broken = (await listJson(dir))[0]!.version;
    await incusOk(["config", "device", "remove", name, "stick"], { socket });
    await labShell(`rm ${devNode}`);
    macs = await macsOf(name, socket);
    proxy = await FaultProxy.start(socket);
    track.defer(() => proxy.close());
  });
  afterAll(() => track.cleanup());

  it.each(PUT_BACK_POINTS.map((p) => [p.name, p] as const))("killed %s: the next run puts it back, running, with its MACs", async (_label, point) => {
    const before = await temporaryLeftovers(socket);
    const data = await checksumTree(name, "/root", { socket });
    const held = proxy.holdRequest(req(point.method, new RegExp(point.hold.source.replace("NAME", name))), point.nth ?? 1);
    const run = startTool(["restore", "--instance", "--name", name, `--version=${broken}`, "--force", `--dir=${dir}`], { socket: proxy.path });
    await reached(run, held, point.name);
    await killTool(run);
    proxy.dropHeld();
    figures.kills++;
    const next = await tool(["backup", "--instances", "--name", name, `--dir=${dir}`], { socket });
    const said = next.stderr.split("\n").filter((l) => /interrupted restore/.test(l));
    const status = await instanceStatus(name, { socket }).catch(() => "missing");
    if (status !== "Running") figures.notRunning++;
    const duplicates = await duplicateMacs(socket);
    if (duplicates.length > 0) figures.duplicateMacs++;
    console.log(`kill while putting the original back, ${point.name}: next run exit ${next.code}: ${said.join("; ")}; ${name} ${status}`);
    expect(next.code, next.stderr).toBe(0);
    expect(said.join("\n")).toMatch(/undone/);
    expect(status).toBe("Running");
    expect(await macsOf(name, socket)).toEqual(macs);
    expect(await checksumTree(name, "/root", { socket })).toEqual(data);
    figures.original++;
    expect(duplicates).toEqual([]);
    expect(await temporaryLeftovers(socket, before)).toEqual([]);
    expect((await readdir(join(dir, "journal")).catch(() => [] as string[])).filter((f) => f.endsWith(".json"))).toEqual([]);
  });
});

afterAll(() => {
  console.log(
    `kill-restore figures: ${figures.kills} kills, ${figures.dataLost} with data lost; ` +
      `${figures.original} ended with the original, ${figures.restored} with the restored item; ${figures.notRunning} not running afterwards; ` +
      `${figures.duplicateMacs} with duplicate MACs`,
  );
  expect(figures.dataLost).toBe(0);
  expect(figures.notRunning).toBe(0);
  expect(figures.duplicateMacs).toBe(0);
});

function eq(a: Manifest, b: Manifest): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

