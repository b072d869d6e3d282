// Runs the tool against a lab daemon: the built tool (dist/incus-backup.mjs) as a child process,
// with or without a terminal, or the same command line in this process (see `tool`).
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { labEnv } from "../../lab/lab";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const TOOL = join(root, "dist/incus-backup.mjs");

export interface ToolResult {
  code: number;
  /** With `tty`, stdout and stderr both go to the terminal and arrive here, with the terminal's CR/LF. */
  stdout: string;
  stderr: string;
  signal: NodeJS.Signals | null;
}

export interface ToolOptions {
  /** The daemon the tool talks to (INCUS_SOCKET); default: the primary lab. */
  socket?: string;
  /** Added to the environment; `undefined` removes a variable. INCUS_BACKUP_DIR is removed unless set here. */
  env?: Record<string, string | undefined>;
  /** Written to stdin (a pipe, so not a TTY); stdin is otherwise empty. */
  input?: string;
  /** Run under a pseudo-terminal (util-linux `script`): stdin, stdout and stderr are a TTY. */
  tty?: boolean;
  /** With `tty`: once the output matches `when`, type `text` (e.g. the answer to a prompt). */
  answer?: { when: RegExp; text: string };
  /** Run with this umask (e.g. 0o000, to check that the tool sets modes itself). */
  umask?: number;
  /** Default 120 s; then the tool is killed and the promise rejects. */
  timeoutMs?: number;
  /**
   * Run in a PID namespace of its own (and a /proc of its own), at this PID there: one this
   * machine does not run (foreignPid), as another host's run looks to this one. Not with `tty`
   * or `umask`.
   */
  otherPidNamespace?: number;
}

export interface RunningTool {
  child: ChildProcess;
  /** Output so far. */
  output(): { stdout: string; stderr: string };
  done: Promise<ToolResult>;
}

let checkedBuild = false;

/** A stale bundle would test yesterday's code: refuse it rather than pass or fail for the wrong reason. */
function checkBuild(): void {
  if (checkedBuild) return;
  let built: number;
  try {
    built = statSync(TOOL).mtimeMs;
  } catch {
    throw new Error(`${TOOL} is missing: run \`npm run build\` first (npm test does)`);
  }
  const newest = (dir: string): number =>
    Math.max(
      0,
      ...readdirSync(dir, { withFileTypes: true }).map((e) =>
        e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs,
      ),
    );
  if (newest(join(root, "src")) > built) throw new Error(`${TOOL} is older than src/: run \`npm run build\` first (npm test does)`);
  checkedBuild = true;
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The tool's environment: the lab's (labEnv), without INCUS_BACKUP_DIR, with `opts.env` over it. */
function toolEnv(opts: ToolOptions): NodeJS.ProcessEnv {
  const env = labEnv(opts.socket);
  delete env.INCUS_BACKUP_DIR;
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

/** Starts the tool as a process; for tests that act while it runs (kill it, watch its files). */
export function startTool(args: string[], opts: ToolOptions = {}): RunningTool {
  checkBuild();
  const env = toolEnv(opts);
  const umask = opts.umask === undefined ? "" : `umask ${opts.umask.toString(8).padStart(3, "0")}; `;
  const node = [process.execPath, TOOL, ...args].map(shellQuote).join(" ");
  const [cmd, argv] = opts.otherPidNamespace
    ? inPidNamespace(opts.otherPidNamespace, [process.execPath, TOOL, ...args])
    : opts.tty
    ? // -e: exit with the tool's code; -c: the command; /dev/null: no typescript file.
      ["script", ["-qec", `${umask}exec ${node}`, "/dev/null"]]
    : umask
      ? ["sh", ["-c", `${umask}exec ${node}`]]
      : [process.execPath, [TOOL, ...args]];
  const child = spawn(cmd as string, argv as string[], { env, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  let answered = false;
  child.stdout!.setEncoding("utf8").on("data", (d: string) => {
    stdout += d;
    if (opts.answer && !answered && opts.answer.when.test(stdout)) {
      answered = true;
      child.stdin!.write(opts.answer.text);
    }
  });
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdin!.on("error", () => {});
  if (opts.input !== undefined) child.stdin!.write(opts.input);
  // `script` passes an end of input on to the tool as end of file; keep the terminal open instead.
  if (!opts.tty) child.stdin!.end();

  const timeoutMs = opts.timeoutMs ?? 120_000;
  const done = new Promise<ToolResult>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`incus-backup ${args.join(" ")}: no answer after ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      child.stdin!.end();
      resolve({ code: code ?? 128, stdout, stderr, signal });
    });
  });
  return { child, output: () => ({ stdout, stderr }), done };
}

/**
 * Runs the tool to the end and returns its exit code and output (never rejects on a non-zero exit).
 *
 * A run that needs nothing of a process of its own (no terminal, umask, PID namespace or Node
 * options) runs main() in this process, with the same command line, environment, stdin and a
 * stdout and stderr that are no terminal, as src/bin.ts gives it: starting Node and loading the
 * bundle cost 0.2 CPU-s and 0.25 s per run, and the suite makes about a thousand such runs (issue
 * 21). What only a process shows (the bundle itself, signals, exit codes through the process, output
 * through pipes, locks between processes, a kill at any point) stays with startTool: the smoke
 * files (spawnEveryRun), deploy, bundle, kill, concurrency and terminal tests, and the runs
 * needsProcess names. INCUS_BACKUP_TEST_SPAWN=1 runs every one as a process.
 */
export function tool(args: string[], opts: ToolOptions = {}): Promise<ToolResult> {
  return needsProcess(opts) ? startTool(args, opts).done : inProcess(args, opts);
}

let everyRunSpawned = process.env.INCUS_BACKUP_TEST_SPAWN === "1";

/** Every run of this test file as a process of the built tool: for the files that prove the user's commands end to end (test:smoke). */
export function spawnEveryRun(): void {
  everyRunSpawned = true;
}

/**
 * What main() in this process cannot give a run: a terminal, a umask, a PID namespace, Node
 * options (pauseAt's preload), or a PATH of its own (the programs the tool starts, such as zstd,
 * are found through the process's PATH).
 */
function needsProcess(opts: ToolOptions): boolean {
  return everyRunSpawned || !!opts.tty || opts.umask !== undefined || !!opts.otherPidNamespace || (opts.env !== undefined && ("NODE_OPTIONS" in opts.env || "PATH" in opts.env));
}

let loaded: Promise<typeof import("../../unit/helpers/cli")> | undefined;

async function inProcess(args: string[], opts: ToolOptions): Promise<ToolResult> {
  const env = toolEnv(opts);
  // Code that read this process's environment instead of the command's would reach the machine's
  // Incus and state directory; here it finds neither (a path under a file can never be made).
  process.env.INCUS_SOCKET = "/dev/null/in-process-runs-pass-their-env";
  process.env.INCUS_BACKUP_STATE_DIR = "/dev/null/in-process-runs-pass-their-env";
  delete process.env.INCUS_DIR;
  const { runCli } = await (loaded ??= import("../../unit/helpers/cli"));
  const r = await runCli(args, { env, now: () => new Date(), input: opts.input, timeoutMs: opts.timeoutMs ?? 120_000 });
  return { ...r, signal: null };
}

/** Runs the tool and fails, showing its output, unless it exits with `code` (default 0). */
export async function toolOk(args: string[], opts: ToolOptions = {}, code = 0): Promise<ToolResult> {
  const r = await tool(args, opts);
  if (r.code !== code) {
    throw new Error(`incus-backup ${args.join(" ")}: exit ${r.code} (expected ${code})\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  }
  return r;
}

/** One row of `list --json`. */
export interface ListRow {
  type: string;
  project: string;
  pool?: string;
  name: string;
  version: string;
  created: string;
  size: number;
  sha256: string | null;
  path: string;
}

/** `list --json` of a repository (more arguments narrow it). */
export async function listJson(dir: string, ...args: string[]): Promise<ListRow[]> {
  const r = await toolOk(["list", "--json", `--dir=${dir}`, ...args]);
  try {
    return JSON.parse(r.stdout) as ListRow[];
  } catch (e) {
    // Seen once in CI, under five groups' load (an empty or cut stdout): say all there is to know.
    throw new Error(`incus-backup list --json --dir=${dir}: exit 0, but stdout (${r.stdout.length} bytes) is not JSON (${(e as Error).message}): ${JSON.stringify(r.stdout.slice(-300))}; stderr: ${JSON.stringify(r.stderr)}`);
  }
}

/**
 * The install id the tool records in its locks here (the lab's INCUS_BACKUP_STATE_DIR, see
 * labEnv), for a lock file that must look like one of this install's runs. The tool makes it the
 * first time it takes a lock: if none did yet, a prune on a throwaway repository does.
 */
export async function toolInstallId(): Promise<string> {
  const path = join(labEnv().INCUS_BACKUP_STATE_DIR!, "install-id");
  const read = () => readFile(path, "utf8").then((t) => t.trim(), () => "");
  if (!(await read())) {
    const dir = await mkdtemp(join(tmpdir(), "ibk-id-"));
    try {
      await toolOk(["init", `--dir=${dir}`]);
      await toolOk(["prune", "--keep-last", "1", `--dir=${dir}`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  return read();
}

/** The PID, as this machine sees it, of a process that is `nsPid` in its own PID namespace under `parent`. */
export function hostPidOf(parent: number, nsPid: number): number | undefined {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${name}/status`, "utf8");
    } catch {
      continue;
    }
    const ns = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/);
    if (ns && ns.length > 1 && Number(ns.at(-1)) === nsPid && Number(name) > parent) return Number(name);
  }
  return undefined;
}

/**
 * A PID that no process of this machine has now, near the top of the range (the machine reaches
 * it only when its PIDs wrap): for a process in a PID namespace of its own, as another host's
 * process looks from here.
 */
export function foreignPid(): number {
  const max = Number(readFileSync("/proc/sys/kernel/pid_max", "utf8").trim());
  for (let pid = max - 10; pid > max - 1000; pid--) if (!existsSync(`/proc/${pid}`)) return pid;
  throw new Error("no free PID near pid_max");
}

/** The command line that runs `argv` as PID `pid` of a new PID namespace (sh is its PID 1; the command is forked once ns_last_pid is set). */
export function inPidNamespace(pid: number, argv: string[]): [string, string[]] {
  return ["unshare", ["--pid", "--fork", "--kill-child", "--mount-proc", "sh", "-c", `echo ${pid - 1} >/proc/sys/kernel/ns_last_pid && "$@"`, "sh", ...argv]];
}
