// Issue 6, bad input: hundreds of generated argument lists (unsafe and odd names, malformed
// versions, unknown flags and bad values, conflicting selectors), and malformed repository files.
// Never a stack trace, never a change to Incus or the repository, always a documented exit code
// with one "error:" line. Most argument lists run in-process through main() (the whole command
// line, against the lab's Incus, in milliseconds); a sample of them runs through the built tool.
import { cp, mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, createVolumeWithData, labEnv, launchInstance, tracker, type Tracker } from "../lab/lab";
import { type FileState, isolatedServer, repoDir, tempDir, treeState } from "./helpers/server";
import { listJson, tool, toolOk } from "./helpers/tool";
import { runCli, type CliRun } from "../unit/helpers/cli";

/** What bad input may end in (src/errors.ts): never 1 (a crash), 3 or 7. */
const DOCUMENTED = new Set([0, 2, 4, 5, 6, 8, 9]);

type Outcome = CliRun;

/** The whole command line in-process, with collected output, no terminal, and the lab's Incus. */
function inProcess(args: string[], env: NodeJS.ProcessEnv): Promise<Outcome> {
  return runCli(args, { env, now: () => new Date() });
}

/**
 * The problems with one outcome: an undocumented code, a stack trace, or a failure not said
 * clearly: one "error: " line, or (items that failed one by one) the summary's "failed:" lines,
 * or (status) the report's ERROR line.
 */
function problems(o: Outcome, documented = DOCUMENTED): string[] {
  const p: string[] = [];
  const all = o.stdout + o.stderr;
  if (!documented.has(o.code)) p.push(`exit ${o.code}`);
  if (/^\s+at .+[(:]\d+/m.test(all) || /\b(TypeError|ReferenceError|RangeError|SyntaxError)\b|Cannot read properties|is not a function|Invalid time value/.test(all)) {
    p.push("stack trace or JS error");
  }
  const errors = o.stderr.split("\n").filter((l) => l.startsWith("error: "));
  const report = /^repository +.*: ERROR: /m.test(o.stdout) || /^ {4}"error": "/m.test(o.stdout);
  const said = errors.length === 1 || (errors.length === 0 && (/^ {2}failed: /m.test(o.stdout) || report));
  if (o.code !== 0 && !said) p.push(`${errors.length} error lines`);
  return p;
}

/** A small deterministic random source, so a failure can be replayed from the seed. */
function prng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!, chance: (p: number) => next() < p };
}

const BAD_NAMES = [
  "..", ".", "../x", "x/..", "a/../b", "/abs", "a/b/c", "//", "a//b", "-", "--", "-x", " ", "a b", "tab\tname", "new\nline", "cr\rname",
  "bell\u0007", "esc\u001b[31mred", "del\u007fname", "\u0001", "ünïcødé", "名前", "emoji😀", "rtl\u202eevil", "zero\u200bwidth",
  "a".repeat(300), "b".repeat(64), "é".repeat(200), "$(reboot)", "`id`", "x;rm -rf /", "%2e%2e", "..\\x", "\\", "*", "?", "[a-z]", "~root",
  "name\u00a0nbsp", "'quoted'", '"dq"', "{}", "null", "undefined", "0", "123", "-1",
];
const BAD_VERSIONS = [
  "abc", "2025-09", "20250914-", "2025091", "20250914-03000", "20250914T030002", "20250914 030002", "20250914-030002-x", "２０２５０９１４", "-1",
  " 20250914", "20250914\n", "2025091a", "20250914-0300022", "v20250914", "20250914-03:00:02", "⁲⁰²⁵", "1e10",
];
const BAD_FLAGS = [
  ["--bogus"], ["--all=yes"], ["-x"], ["--"], ["---all"], ["--ALL"], ["--instances=1"], ["--force=no"], ["--json=maybe"], ["--dir"], ["--dir="], ["--name"], ["--name="],
  ["--parallel=0"], ["--parallel=-1"], ["--parallel=abc"], ["--parallel=1e9"], ["--parallel=2.5"], ["--parallel", "--all"], ["--compression=rar"],
  ["--compression="], ["--keep-last=-1"], ["--keep-daily=abc"], ["--keep-weekly=1.5"], ["--stop-timeout=-5"], ["--stop-timeout=abc"],
  ["--project=.."], ["--project=a/b"], ["--project="], ["--project", "x\u0001"], ["--version"], ["--target-name=../x"], ["--target-name="],
  ["--socket="], ["--deep=1"],
];

/** Base command lines; every generated list takes one and adds at least one defect. */
function bases(dir: string): Array<{ args: string[]; name: "instance" | "volume" | "any" }> {
  const d = `--dir=${dir}`;
  return [
    { args: ["backup", "--instances", d], name: "instance" },
    { args: ["backup", "--volumes", d], name: "volume" },
    { args: ["backup", "--all", d], name: "any" },
    { args: ["restore", "--instance", "--force", d], name: "instance" },
    { args: ["restore", "--volume", "--force", d], name: "volume" },
    { args: ["restore", "--all", "--force", d], name: "any" },
    { args: ["restore", "--instances", "--dry-run", d], name: "instance" },
    { args: ["list", d], name: "any" },
    { args: ["list", "--instances", "--json", d], name: "instance" },
    { args: ["verify", "--deep", d], name: "any" },
    { args: ["prune", "--keep-last", "1", d], name: "any" },
    { args: ["prune", "--keep-daily", "2", "--dry-run", d], name: "any" },
    { args: ["status", d], name: "any" },
    { args: ["unlock", d], name: "any" },
  ];
}

type Defect = (args: string[], rnd: ReturnType<typeof prng>, kind: string) => string[];

const DEFECTS: Array<[string, Defect]> = [
  ["bad name", (a, r) => [...a, "--name", r.pick(BAD_NAMES)]],
  ["bad name with =", (a, r) => [...a, `--name=${r.pick(BAD_NAMES)}`]],
  ["bad name among good ones", (a, r) => [...a, "--name", "web", "--name", r.pick(BAD_NAMES)]],
  ["bad volume ref", (a, r) => [...a, "--name", `${r.pick(BAD_NAMES)}/${r.pick(["data", ...BAD_NAMES])}`]],
  ["empty name", (a) => [...a, "--name", ""]],
  ["bad project", (a, r) => [...a, "--project", r.pick(BAD_NAMES.filter((n) => n !== "0" && n !== "123" && n !== "null" && n !== "undefined" && !/^[a-z0-9]+$/.test(n)))]],
  ["malformed version", (a, r) => [...a, "--version", r.pick(BAD_VERSIONS)]],
  ["malformed version with =", (a, r) => [...a, `--version=${r.pick(BAD_VERSIONS)}`]],
  ["unknown flag or bad value", (a, r) => [...a, ...r.pick(BAD_FLAGS)]],
  ["unknown flag first", (a, r) => [a[0]!, ...r.pick(BAD_FLAGS), ...a.slice(1)]],
  ["bad target name", (a, r) => [...a, "--name", "web", "--target-name", r.pick(BAD_NAMES.filter((n) => n.length > 0))]],
  ["target name with several items", (a) => [...a, "--name", "web", "--name", "other", "--target-name", "copy"]],
  ["target name with --all", (a) => [...a.filter((x) => !/^--(instances?|volumes?)$/.test(x)), "--all", "--target-name", "copy"]],
  ["no selector", (a) => (/^(backup|restore)$/.test(a[0]!) ? a.filter((x) => !/^--(all|instances?|volumes?|images?|database)$/.test(x)) : [...a, "--bogus"])],
  ["unknown command", (a, r) => [r.pick(["bakup", "restor", "BACKUP", "", "-", "help!", "daemon2", "../backup"]), ...a.slice(1)]],
  ["a value where a flag goes", (a, r) => [...a, r.pick(BAD_NAMES)]],
];

/** Fields of the server that a command must never change. */
async function serverState(socket: string): Promise<unknown> {
  const q = async (path: string) => (await apiGet(path, { socket })) as Array<Record<string, unknown>>;
  const instances = (await q("/1.0/instances?recursion=2&all-projects=true")).map((i) => ({
    name: i.name,
    project: i.project,
    status: i.status,
    config: i.config,
    pid: (i.state as { pid?: number } | undefined)?.pid,
    backups: i.backups ?? null,
  }));
  const volumes = (await q("/1.0/storage-pools/default/volumes/custom?recursion=1&all-projects=true")).map((v) => ({ name: v.name, config: v.config }));
  const images = (await q("/1.0/images?recursion=1&all-projects=true")).map((i) => ({ fp: i.fingerprint, aliases: i.aliases }));
  return { instances, volumes, images };
}

async function setUp(track: Tracker): Promise<{ socket: string; dir: string }> {
  const socket = await isolatedServer(track);
  await launchInstance("web", { socket });
  await launchInstance("other", { socket, start: false });
  await createVolumeWithData("default", "data", { attachTo: "web", path: "/mnt/data", sizeMiB: 1, socket });
  const dir = await repoDir(track);
  await toolOk(["backup", "--all", `--dir=${dir}`], { socket });
  return { socket, dir };
}

describe("generated bad command lines", () => {
  const track = tracker();
  const SEED = Number(process.env.IBK_FUZZ_SEED ?? 20250914);
  const COUNT = 400;
  let socket: string;
  let dir: string;
  let repoBefore: FileState[];
  let serverBefore: unknown;
  let lists: string[][] = [];
  const figures = { inProcess: 0, binary: 0, crashes: 0, byCode: new Map<number, number>() };

  beforeAll(async () => {
    ({ socket, dir } = await setUp(track));
    await cp(dir, `${dir}.pristine`, { recursive: true, preserveTimestamps: true });
    track.defer(() => rm(`${dir}.pristine`, { recursive: true, force: true }));
    repoBefore = await treeState(dir);
    serverBefore = await serverState(socket);
    const rnd = prng(SEED);
    const seen = new Set<string>();
    const all = bases(dir);
    for (let i = 0; lists.length < COUNT && i < COUNT * 20; i++) {
      const base = rnd.pick(all);
      let args = rnd.pick(DEFECTS)[1](base.args, rnd, base.name);
      if (rnd.chance(0.25)) args = rnd.pick(DEFECTS)[1](args, rnd, base.name);
      const key = JSON.stringify(args);
      if (seen.has(key) || args.some((x) => x.includes("\u0000"))) continue;
      seen.add(key);
      lists.push(args);
    }
  });
  afterAll(async () => {
    const codes = [...figures.byCode].sort((a, b) => a[0] - b[0]).map(([c, n]) => `exit ${c}: ${n}`).join(", ");
    console.log(`bad-input figures (seed ${SEED}): ${figures.inProcess} argument lists in-process, ${figures.binary} through the built tool; ${figures.crashes} crashes; ${codes}`);
    await track.cleanup();
  });

  it(`${COUNT} argument lists in-process: documented exit codes, one error line, no stack trace, nothing changed`, async () => {
    expect(lists.length).toBe(COUNT);
    const env: NodeJS.ProcessEnv = { ...labEnv(socket), INCUS_SOCKET: socket };
    delete env.INCUS_BACKUP_DIR;
    const bad: string[] = [];
    for (const args of lists) {
      const o = await inProcess(args, env);
      figures.inProcess++;
      figures.byCode.set(o.code, (figures.byCode.get(o.code) ?? 0) + 1);
      const p = problems(o);
      // Which list changed the repository, if one does (the server is compared at the end).
      if (JSON.stringify(await treeState(dir)) !== JSON.stringify(repoBefore)) {
        p.push("changed the repository");
        await rm(dir, { recursive: true, force: true });
        await cp(`${dir}.pristine`, dir, { recursive: true, preserveTimestamps: true });
        repoBefore = await treeState(dir);
      }
      if (p.length) {
        figures.crashes++;
        bad.push(`${JSON.stringify(args)}: exit ${o.code}: ${p.join(", ")}\n  ${o.stderr.trim().split("\n").join("\n  ")}`);
      }
    }
    expect(bad).toEqual([]);
    expect(await treeState(dir)).toEqual(repoBefore);
    expect(await serverState(socket)).toEqual(serverBefore);
  });

  it("a sample of them through the built tool: the same", async () => {
    const sample = lists.filter((_, i) => i % 10 === 0);
    expect(sample.length).toBeGreaterThanOrEqual(40);
    const bad: string[] = [];
    for (const args of sample) {
      const o = await tool(args, { socket });
      figures.binary++;
      const p = problems(o);
      if (p.length) {
        figures.crashes++;
        bad.push(`${JSON.stringify(args)}: ${p.join(", ")}\n  ${o.stderr.trim()}`);
      }
      // The binary and main() agree.
      const again = await inProcess(args, { ...labEnv(socket), INCUS_SOCKET: socket });
      if (again.code !== o.code) bad.push(`${JSON.stringify(args)}: exit ${o.code} from the tool, ${again.code} in-process`);
    }
    console.log(`through the built tool: ${sample.length} argument lists, ${bad.length} problems`);
    expect(bad).toEqual([]);
    expect(await treeState(dir)).toEqual(repoBefore);
    expect(await serverState(socket)).toEqual(serverBefore);
  });
});

describe("malformed repository files", () => {
  // Each file is read by every command: 7 readers and 3 writers (unlock, prune, backup).
  const track = tracker();
  let socket: string;
  let pristine: string;
  let serverBefore: unknown;
  let version: string;
  const figures = { cases: 0, runs: 0, crashes: 0 };

  beforeAll(async () => {
    ({ socket, dir: pristine } = await setUp(track));
    version = (await listJson(pristine, "--instances"))[0]!.version;
    serverBefore = await serverState(socket);
  });
  afterAll(async () => {
    console.log(`malformed-file figures: ${figures.cases} malformed files, ${figures.runs} commands run on them, ${figures.crashes} crashes`);
    await track.cleanup();
  });

  const now = new Date().toISOString();
  const CASES: Array<[string, (dir: string) => Promise<void>]> = [
    ["marker: not JSON", (d) => writeFile(join(d, "incus-backup.json"), "{ nope")],
    ["marker: format version 2", (d) => writeFile(join(d, "incus-backup.json"), JSON.stringify({ format: "incus-backup", version: 2 }))],
    ["marker: version as a string", (d) => writeFile(join(d, "incus-backup.json"), JSON.stringify({ format: "incus-backup", version: "1" }))],
    ["marker: an array", (d) => writeFile(join(d, "incus-backup.json"), "[]")],
    ["marker: null", (d) => writeFile(join(d, "incus-backup.json"), "null")],
    ["marker: a directory", async (d) => (await rm(join(d, "incus-backup.json")), await mkdir(join(d, "incus-backup.json")))],
    ["lock: not JSON", (d) => writeFile(join(d, "lock.json"), "{ half a lo")],
    ["lock: wrong types", (d) => writeFile(join(d, "lock.json"), JSON.stringify({ host: 5, pid: "abc", command: [], started: {}, refreshed: null }))],
    ["lock: fields missing", (d) => writeFile(join(d, "lock.json"), JSON.stringify({ host: "elsewhere", pid: 5 }))],
    ["lock: times that are numbers", (d) => writeFile(join(d, "lock.json"), JSON.stringify({ host: "elsewhere", pid: 5, command: "x", started: 1, refreshed: 2, id: 3 }))],
    ["lock: an array", (d) => writeFile(join(d, "lock.json"), "[1, 2]")],
    ["run record: not JSON", (d) => writeFile(join(d, "runs", `${version}.json`), "{")],
    ["run record: wrong types", (d) => writeFile(join(d, "runs", `${version}.json`), JSON.stringify({ version, command: 5, started: true, status: 9, items: "all" }))],
    ["run record: items of wrong types", (d) => writeFile(join(d, "runs", `${version}.json`), JSON.stringify({ version, command: "x", started: now, finished: now, status: "ok", items: [null, 5, { label: 7, ok: "yes", bytes: "many" }] }))],
    ["run record: null", (d) => writeFile(join(d, "runs", `${version}.json`), "null")],
    ["state: daemon.json wrong types", async (d) => (await mkdir(join(d, "state"), { recursive: true }), await writeFile(join(d, "state", "daemon.json"), JSON.stringify({ host: 1, pid: "x", started: 5, lastRun: "yes", coveredUntil: [], next: {} })))],
    ["state: prune.json wrong types", async (d) => (await mkdir(join(d, "state"), { recursive: true }), await writeFile(join(d, "state", "prune.json"), JSON.stringify({ started: 1, finished: null, policy: "all", removed: "x", failed: 7 })))],
    ["state: verify.json wrong types", async (d) => (await mkdir(join(d, "state"), { recursive: true }), await writeFile(join(d, "state", "verify.json"), JSON.stringify({ started: [], finished: 2, checked: "n", failed: "none", deep: "yes" })))],
    ["journal: not JSON", async (d) => (await mkdir(join(d, "journal"), { recursive: true }), await writeFile(join(d, "journal", "0123456789ab.json"), "{"))],
    [
      "journal: a real instance as its temporary one",
      async (d) => {
        await mkdir(join(d, "journal"), { recursive: true });
        const entry = { id: "0123456789ab", kind: "instance", project: "default", name: "web", temp: "other", aside: "data", phase: "import", restart: [], started: now };
        await writeFile(join(d, "journal", "0123456789ab.json"), JSON.stringify(entry));
      },
    ],
    [
      "journal: a real volume as its temporary one",
      async (d) => {
        await mkdir(join(d, "journal"), { recursive: true });
        const entry = { id: "0123456789ab", kind: "volume", project: "default", pool: "default", name: "nothing", temp: "data", phase: "import", restart: [], started: now };
        await writeFile(join(d, "journal", "0123456789ab.json"), JSON.stringify(entry));
      },
    ],
    [
      "journal: wrong types",
      async (d) => {
        await mkdir(join(d, "journal"), { recursive: true });
        const entry = { id: "0123456789ab", kind: "instance", project: 5, name: "web", temp: "ibk-restore-00000000", phase: "swap", restart: "web", stop: 7, started: 1 };
        await writeFile(join(d, "journal", "0123456789ab.json"), JSON.stringify(entry));
      },
    ],
    ["a .tmp that is a file", async (d) => (await rm(join(d, ".tmp"), { recursive: true, force: true }), await writeFile(join(d, ".tmp"), "x"))],
    ["an item directory that is a file", async (d) => (await rm(join(d, "instances", "default", "other"), { recursive: true }), await writeFile(join(d, "instances", "default", "other"), "x"))],
    ["runs that is a file", async (d) => (await rm(join(d, "runs"), { recursive: true }), await writeFile(join(d, "runs"), "x"))],
  ];

  it.each(CASES)("%s: every command ends with a documented code, one error line, no stack trace; readers change nothing, Incus never changes", async (what, damage) => {
    const dir = await tempDir(track, "ibk-copy-");
    await cp(pristine, dir, { recursive: true });
    await damage(dir);
    figures.cases++;
    const d = `--dir=${dir}`;
    const readers = [["list", d], ["list", "--json", d], ["verify", d], ["verify", "--deep", "--json", d], ["status", d], ["status", "--json", d], ["restore", "--instance", "--name", "web", "--dry-run", d]];
    const writers = [["backup", "--instances", "--name", "other", d], ["prune", "--keep-last", "5", d], ["unlock", d]];
    const said: string[] = [];
    const bad: string[] = [];
    const before = await treeState(dir);
    // In-process (main()), except status and backup, which also run as the built tool.
    const env: NodeJS.ProcessEnv = { ...labEnv(socket), INCUS_SOCKET: socket };
    delete env.INCUS_BACKUP_DIR;
    const run = (args: string[]) => (args[0] === "status" && !args.includes("--json") ? tool(args, { socket }) : inProcess(args, env));
    for (const args of readers) {
      const o = await run(args);
      figures.runs++;
      said.push(`${args[0]}${args[1]?.startsWith("--") && args[1] !== d ? ` ${args[1]}` : ""}: ${o.code}`);
      const p = problems(o);
      if (p.length) bad.push(`${args.join(" ")}: ${p.join(", ")}: ${o.stderr.trim()}`);
    }
    expect(await treeState(dir)).toEqual(before);
    for (const args of writers) {
      const o = args[0] === "backup" ? await tool(args, { socket }) : await inProcess(args, env);
      figures.runs++;
      said.push(`${args[0]}: ${o.code}`);
      // A lock file that cannot be read counts as held until it is 10 minutes old (exit 7, with a
      // hint to run unlock); every item failing on its own is exit 1 with the summary.
      const lockUnreadable = /locked by a lock file that cannot be read .*incus-backup unlock/.test(o.stderr);
      const p = problems(o, lockUnreadable ? new Set([...DOCUMENTED, 7]) : DOCUMENTED).filter((x) => !(x === "exit 1" && /: 0 of \d+ item/.test(o.stdout)));
      if (p.length) bad.push(`${args.join(" ")}: ${p.join(", ")}: ${o.stderr.trim()}`);
    }
    if (bad.length) figures.crashes += bad.length;
    console.log(`malformed ${what}: ${said.join(", ")}${bad.length ? `; PROBLEMS: ${bad.join(" | ")}` : ""}`);
    expect(bad).toEqual([]);
    expect(await serverState(socket)).toEqual(serverBefore);
    await rm(dir, { recursive: true, force: true });
  });
});
