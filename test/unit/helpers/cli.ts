// Runs the whole command line in-process, with collected output, a fixed clock and no terminal.

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
  // An empty stdin, as with </dev/null.
  const stdin = Object.assign(new PassThrough(), { isTTY: false });
  stdin.end();
  const out = collect(stdout);
  const err = collect(stderr);
  const now = opts.now ?? new Date("2025-09-14T03:00:02Z");
  const ctx: CliContext = {
    stdout,
    stderr,
    stdin,
    env: opts.env ?? {},
    signal: opts.signal ?? new AbortController().signal,
    now: typeof now === "function" ? now : () => now,
    argv: ["incus-backup", ...args],
  };
  const code = await main(args, ctx);
  await new Promise((r) => setImmediate(r));
  return { code, stdout: out(), stderr: err() };
}
