// Running a command in an instance (POST /1.0/instances/NAME/exec), as `incus exec` does without a
// terminal: its output recorded by the server, its exit code from the finished operation.

import { Readable } from "node:stream";
import { seg, type IncusClient } from "./client";
import type { Signal } from "./instances";

export interface ExecResult {
  /** The command's exit code; undefined when it did not end within the timeout. */
  code: number | undefined;
  stdout: string;
  stderr: string;
}

/** Reads at most this much of each recorded output: a check's verdict is in its last lines. */
const OUTPUT_LIMIT = 64 * 1024;

/**
 * Runs `command` (argv) in a running instance and waits at most `timeoutMs` for it to end. The
 * server records stdout and stderr; both are read back and the records deleted.
 */
export async function execInstance(
  c: IncusClient,
  project: string,
  name: string,
  command: string[],
  opts: Signal & { timeoutMs: number; environment?: Record<string, string> },
): Promise<ExecResult> {
  const op = await c.operation("POST", `/1.0/instances/${seg(name)}/exec`, `Run a command in instance ${name}`, {
    query: { project },
    body: { command, environment: opts.environment ?? {}, "wait-for-websocket": false, interactive: false, "record-output": true },
    ...(opts.signal === undefined ? {} : { signal: opts.signal }),
  });
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal === undefined ? timeout : AbortSignal.any([opts.signal, timeout]);
  let data;
  try {
    data = await op.wait({ signal, stepSeconds: Math.max(1, Math.min(20, Math.ceil(opts.timeoutMs / 1000))) });
  } catch (err) {
    if (timeout.aborted && !opts.signal?.aborted) return { code: undefined, stdout: "", stderr: "" };
    throw err;
  }
  const md = (data.metadata ?? {}) as { return?: number; output?: Record<string, string> };
  const read = async (fd: string): Promise<string> => {
    const path = md.output?.[fd];
    if (typeof path !== "string") return "";
    try {
      const res = await c.raw("GET", path.split("?")[0]!, `Read the output of a command in instance ${name}`, { query: { project } });
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const chunk of res.body as Readable) {
        if (n < OUTPUT_LIMIT) chunks.push(chunk as Buffer);
        n += (chunk as Buffer).length;
      }
      await c.call("DELETE", path.split("?")[0]!, `Delete the output of a command in instance ${name}`, { query: { project } }).catch(() => undefined);
      return Buffer.concat(chunks).subarray(0, OUTPUT_LIMIT).toString("utf8");
    } catch {
      return "";
    }
  };
  return { code: typeof md.return === "number" ? md.return : undefined, stdout: await read("1"), stderr: await read("2") };
}
