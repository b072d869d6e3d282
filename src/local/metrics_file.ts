// The metrics file for node_exporter's textfile collector: replaced whole, never seen half-written.

import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** The variable that asks for the metrics file, and where it goes. */
export const METRICS_FILE_ENV = "INCUS_BACKUP_METRICS_FILE";

/**
 * Writes `text` to `path` atomically: a temp file in the same directory (a rename is atomic only
 * within one file system), flushed, then renamed over the old one, as the textfile collector
 * requires. The temp name is hidden and does not end in `.prom`, so the collector never reads it.
 * World-readable: node_exporter runs as a user of its own.
 */
export async function writeMetricsFile(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}-${randomBytes(4).toString("hex")}.tmp`);
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
  try {
    try {
      await fh.chmod(0o644);
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** The writer the variable asks for, or none. */
export function metricsWriter(env: NodeJS.ProcessEnv): ((text: string) => Promise<void>) | undefined {
  const path = env[METRICS_FILE_ENV]?.trim();
  if (!path) return undefined;
  return async (text) => {
    try {
      await writeMetricsFile(path, text);
    } catch (err) {
      throw new Error(`${path}: ${(err as Error).message}`, { cause: err });
    }
  };
}
