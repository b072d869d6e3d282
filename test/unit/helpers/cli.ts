// Runs the whole command line in-process, with collected output, a fixed clock and no terminal.
// The integration tests' tool() runs the tool this way too, with the real clock and a lab's environment.

import { PassThrough } from "node:stream";
import type { CliContext } from "../../../src/cli/context";
import { main } from "../../../src/main";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: NodeJS.ProcessEnv;
  now?: Date | (() => Date);
  signal?: AbortSignal;
  /** What stdin holds (a pipe, not a terminal); default empty, as with </dev/null. */
  input?: string;
  /** Then the command is aborted (as by a signal) and the promise rejects, with the output so far. */
  timeoutMs?: number;
}

export async function runCli(args: string[], opts: CliOptions = {}): Promise<CliRun> {
  const collect = (s: PassThrough) => {
    let text = "";
    s.setEncoding("utf8");
    s.on("data", (c: string) => (text += c));
    return () => text;
  };
  const stdout = Object.assign(new PassThrough(), { isTTY: false });
  const stderr = Object.assign(new PassThrough(), { isTTY: false });
  const stdin = Object.assign(new PassThrough(), { isTTY: false });
  stdin.end(opts.input ?? "");
  const out = collect(stdout);
  const err = collect(stderr);
  const now = opts.now ?? new Date("2025-09-14T03:00:02Z");
  const timeout = new AbortController();
  const ctx: CliContext = {
    stdout,
    stderr,
    stdin,
    env: opts.env ?? {},
    signal: opts.signal ? AbortSignal.any([opts.signal, timeout.signal]) : timeout.signal,
    now: typeof now === "function" ? now : () => now,
    argv: ["incus-backup", ...args],
  };
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    if (opts.timeoutMs === undefined) return;
    timer = setTimeout(() => {
      timeout.abort();
      reject(new Error(`incus-backup ${args.join(" ")} (in-process): no answer after ${opts.timeoutMs} ms\nstdout: ${out()}\nstderr: ${err()}`));
    }, opts.timeoutMs);
  });
  try {
    const code = await Promise.race([main(args, ctx), timedOut]);
    // As when the process exits: the output ends here, with all the command wrote collected (a
    // write after that is lost, as it would be after src/bin.ts's exit).
    await Promise.all([stdout, stderr].map((s) => new Promise((resolve, reject) => s.once("end", resolve).once("error", reject).end())));
    return { code, stdout: out(), stderr: err() };
  } finally {
    clearTimeout(timer);
  }
}
