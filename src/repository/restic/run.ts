// Running the `restic` binary: its environment (the repository and the password come from the
// environment, never the command line), its JSON output, and its failures as the tool's errors.

import { spawn, type ChildProcess } from "node:child_process";
import { withoutCredentials } from "../../core/repo_spec";
import { AppError, InterruptedError, LockedError, RepositoryError, UsageError } from "../../errors";
import { recordChild } from "./locks";

export interface ResticTarget {
  /** The restic repository string: a path, sftp:…, rest:…, s3:… */
  repository: string;
  /** The binary (default "restic", found in PATH). */
  binary: string;
  /** The environment restic gets: ours (RESTIC_PASSWORD_FILE, AWS_* …), with RESTIC_REPOSITORY set. */
  env: NodeJS.ProcessEnv;
  /**
   * How long the first contact may retry a server it cannot reach before the run gives up (ms;
   * default CONNECT_TIMEOUT_MS). Later calls keep restic's own retries (up to 15 minutes), which
   * ride out a blip in the middle of a backup.
   */
  connectTimeoutMs?: number;
  /** Where each restic started is recorded, so that its lock can be told for ours if it dies (locks.ts). */
  children?: string;
}

/** The default of INCUS_BACKUP_RESTIC_CONNECT_TIMEOUT: 60 s. */
export const CONNECT_TIMEOUT_MS = 60_000;

/** INCUS_BACKUP_RESTIC_CONNECT_TIMEOUT (seconds) in ms; unset is the default. */
export function parseConnectTimeout(value: string | undefined): number {
  if (value === undefined || value === "") return CONNECT_TIMEOUT_MS;
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new UsageError(`INCUS_BACKUP_RESTIC_CONNECT_TIMEOUT must be a number of seconds above 0, not "${value}"`);
  return Math.round(seconds * 1000);
}

/** restic 0.17+ retrying a backend call ("Stat(<config/>) returned error, retrying after 1.2s: …"). */
const RETRYING = /returned error, retrying after [^:]*: (.*)/;

/** The password variables restic reads; one of them must be set (restic would otherwise read stdin). */
export const PASSWORD_VARIABLES = ["RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND", "RESTIC_PASSWORD"] as const;

/** The repository string for people: credentials in a URL (rest:https://user:secret@host/) are left out. */
export function displayRepository(repository: string): string {
  return withoutCredentials(repository);
}

/** Throws a one-line RepositoryError when restic has no way to get the password. */
export function checkPassword(env: NodeJS.ProcessEnv, repository: string): void {
  if (PASSWORD_VARIABLES.some((v) => (env[v] ?? "") !== "")) return;
  throw new RepositoryError(`no password for the restic repository ${displayRepository(repository)}: set RESTIC_PASSWORD_FILE (or RESTIC_PASSWORD_COMMAND)`);
}

export function resticEnv(target: ResticTarget): NodeJS.ProcessEnv {
  return { ...target.env, RESTIC_REPOSITORY: target.repository, RESTIC_PROGRESS_FPS: "0.2" };
}

/** The last "Fatal: …" line restic printed, else its last line: the reason, for one-line errors. */
export function resticReason(stderr: string): string {
  const lines = stderr
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "");
  const fatal = [...lines].reverse().find((l) => l.startsWith("Fatal:"));
  const line = fatal ?? lines[lines.length - 1] ?? "no message";
  return displayRepository(line.replace(/^Fatal:\s*/, ""));
}

/** What restic's backends print when the server cannot be reached at all (REST, S3, sftp over ssh). */
const UNREACHABLE =
  /(?:connect: connection refused|connect to host [^\n]*(?:Connection refused|Connection timed out|No route to host)|no such host|network is unreachable|i\/o timeout|unable to start the sftp session[^\n]*|Could not resolve hostname [^\n]*)/i;

/** A server restic could not reach; `retriedMs` when the tool stopped restic's retries. */
function unreachableError(where: string, reason: string, retriedMs?: number): RepositoryError {
  const retried = retriedMs === undefined ? "" : ` (retried for ${Math.round(retriedMs / 1000)} s)`;
  const hint = `check that the server is up and reachable from this container${retriedMs === undefined ? "" : "; INCUS_BACKUP_RESTIC_CONNECT_TIMEOUT sets how long to retry"}`;
  return new RepositoryError(`cannot reach the restic repository at ${where}${retried}: ${reason}`, { hint });
}

/**
 * What a failed restic call means for the tool. Exit codes 10, 11 and 12 are restic's from 0.17;
 * 0.14 exits 1 for all of them, so its messages are recognised as well.
 */
export function resticError(what: string, code: number | null, stderr: string, repository: string): AppError {
  const where = displayRepository(repository);
  const reason = resticReason(stderr);
  if (code === 130 || code === null) return new InterruptedError(`restic ${what} was interrupted`);
  // Before "no repository": restic 0.14 says "Is there a repository…?" under any failure to open
  // the config, including a server that is down.
  const unreachable = UNREACHABLE.exec(stderr);
  if (unreachable) return unreachableError(where, unreachable[0].trim());
  if (code === 10 || /Is there a repository at the following location\?|repository does not exist|unable to open config file/i.test(stderr)) {
    return new RepositoryError(`there is no restic repository at ${where}`, { hint: `Make one with: incus-backup init --repo restic:${where}` });
  }
  if (code === 12 || /wrong password or no key found/i.test(stderr)) {
    return new RepositoryError(`wrong password for the restic repository ${where} (from RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND)`);
  }
  if (code === 11 || /repository is already locked/i.test(stderr)) {
    const holder = /locked (?:exclusively )?by (PID \d+ on \S+ by [^\n(]+(?:\([^)]*\))?)/i.exec(stderr)?.[1]?.trim();
    return new LockedError(`the restic repository ${where} is locked${holder ? ` by ${holder}` : ""} (restic ${what})`, {
      hint: "Wait for that run to end; a stale lock of a run that died is removed by `incus-backup unlock`.",
    });
  }
  return new RepositoryError(`restic ${what} failed (exit ${code}) on ${where}: ${reason}`);
}

/** The failure of spawning restic at all: a missing binary, most of the time. */
export function spawnError(err: NodeJS.ErrnoException, binary: string): RepositoryError {
  if (err.code === "ENOENT") return new RepositoryError(`restic is not installed: no "${binary}" in PATH (apt-get install restic)`);
  return new RepositoryError(`cannot run ${binary}: ${err.message}`);
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

/** Keeps the last `limit` characters of a stream (stderr can be long on a retrying backend). */
export function collect(stream: NodeJS.ReadableStream | null, limit: number): () => string {
  let text = "";
  stream?.setEncoding("utf8");
  stream?.on("data", (d: string) => {
    text += d;
    if (text.length > limit * 2) text = text.slice(-limit);
  });
  return () => text.slice(-limit);
}

/** Starts restic with `args`; stdin is /dev/null unless `stdin` is "pipe". */
export function startRestic(target: ResticTarget, args: string[], options: { stdin?: "pipe" | "ignore"; signal?: AbortSignal } = {}): ChildProcess {
  checkPassword(target.env, target.repository);
  const child = spawn(target.binary, args, {
    env: resticEnv(target),
    stdio: [options.stdin ?? "ignore", "pipe", "pipe"],
  });
  if (target.children && child.pid !== undefined) recordChild(target.children, child.pid);
  return child;
}

/** Waits for a started restic, turning a spawn failure or a non-zero exit into the tool's error. */
export function finished(child: ChildProcess, target: ResticTarget, what: string, stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    let spawnFailed: NodeJS.ErrnoException | undefined;
    child.once("error", (err: NodeJS.ErrnoException) => {
      spawnFailed = err;
    });
    child.once("close", (code) => {
      if (spawnFailed) return reject(spawnError(spawnFailed, target.binary));
      if (code === 0) return resolve();
      reject(resticError(what, code, stderr(), target.repository));
    });
  });
}

/**
 * Runs restic to the end and returns its output (small outputs only: JSON listings, reports).
 * An aborted signal, or `timeoutMs` passing, stops it (stopRestic).
 */
export async function runRestic(
  target: ResticTarget,
  args: string[],
  options: { signal?: AbortSignal; input?: string | Buffer; timeoutMs?: number; firstContact?: boolean } = {},
): Promise<RunResult> {
  const child = startRestic(target, args, { stdin: options.input === undefined ? "ignore" : "pipe" });
  const stdout = collect(child.stdout, 64 * 1024 * 1024);
  const stderr = collect(child.stderr, 64 * 1024);
  // Set when the tool stops restic itself: the error the call then ends with.
  let stopped: AppError | undefined;
  const stopWith = (err: AppError) => {
    stopped ??= err;
    stopRestic(child);
  };
  const where = displayRepository(target.repository);
  const timers: NodeJS.Timeout[] = [];
  // First contact: a server restic cannot reach is given connectTimeoutMs, not restic's 15 minutes.
  if (options.firstContact) {
    const connectMs = target.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    const watch = () => {
      const retry = RETRYING.exec(stderr());
      if (!retry) return;
      child.stderr?.off("data", watch);
      timers.push(setTimeout(() => stopWith(unreachableError(where, displayRepository(retry[1]!.trim()), connectMs)), connectMs));
    };
    child.stderr?.on("data", watch);
  }
  if (options.timeoutMs !== undefined) {
    const ms = options.timeoutMs;
    timers.push(setTimeout(() => stopWith(new RepositoryError(`restic ${args[0] ?? ""} took longer than ${Math.round(ms / 1000)} s on ${where} and was stopped`)), ms));
  }
  // Stopped because the run was: that is the error, not restic's exit status.
  const onAbort = () => stopWith(new InterruptedError());
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();
  if (options.input !== undefined) {
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(options.input);
  }
  try {
    await finished(child, target, args[0] ?? "", stderr);
  } catch (err) {
    throw stopped ?? err;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    for (const t of timers) clearTimeout(t);
  }
  if (options.signal?.aborted) throw new InterruptedError();
  return { stdout: stdout(), stderr: stderr() };
}

/** How long a restic asked to stop may take before it is killed (ms). */
export const STOP_GRACE_MS = 5_000;

/**
 * Stops a restic that is still running. SIGINT is its clean way out: no snapshot, its lock
 * removed. But removing the lock needs the repository, and on a server that went away restic
 * retries for many minutes, so after STOP_GRACE_MS it is killed; the lock it leaves is stale,
 * and the next exclusive call clears it (`restic unlock`).
 */
export function stopRestic(child: ChildProcess): void {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGINT");
  // restic 0.18 waits for its stdin to close after SIGINT; closing it at once could let an
  // unfinished backup read an end of input first, so give the signal a moment.
  setTimeout(() => child.stdin?.destroy(), 500).unref();
  const kill = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }, STOP_GRACE_MS);
  kill.unref();
  child.once("close", () => clearTimeout(kill));
}

/** The JSON lines restic printed (backup --json prints one object per line; others print one document). */
export function jsonLines(stdout: string): unknown[] {
  const out: unknown[] = [];
  for (const line of stdout.split("\n")) {
    const t = line.trim();
    if (!t.startsWith("{") && !t.startsWith("[")) continue;
    try {
      out.push(JSON.parse(t));
    } catch {
      // restic mixes the odd plain line into --json output (warnings): skip it.
    }
  }
  return out;
}

/** restic's version, as [major, minor, patch], from `restic version`. */
export function parseResticVersion(text: string): [number, number, number] | undefined {
  const m = /restic (\d+)\.(\d+)\.(\d+)/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined;
}
