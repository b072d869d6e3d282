// What commands get from the outside world, passed in so they can be tested without a process.

import type { Readable, Writable } from "node:stream";

export interface CliContext {
  stdout: Writable & { isTTY?: boolean; columns?: number };
  stderr: Writable & { isTTY?: boolean; columns?: number };
  stdin: Readable & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  /** Fires on SIGINT / SIGTERM / SIGPWR. */
  signal: AbortSignal;
  now: () => Date;
  /** The full command line, for locks and run records. */
  argv: string[];
}

export function out(ctx: CliContext, line = ""): void {
  ctx.stdout.write(line + "\n");
}

export function err(ctx: CliContext, line: string): void {
  ctx.stderr.write(line + "\n");
}
