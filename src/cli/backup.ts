// `incus-backup backup`: back up instances and custom volumes into the repository.

import { displayRepository } from "../repository/restic/run";
import { command, flag, number, oneOf, option, optional } from "cmd-ts";
import { ExitCode, UsageError, runExitCode } from "../errors";
import { COMPRESSIONS, backup, runStatus, type BackupResult } from "../engine/backup";
import { itemLabel } from "../core/selection";
import { VERSION } from "../version";
import { checkParallel, checkStopTimeout, stopTimeoutArg, connect, dirArg, openRepository, selectionOf, selectorArgs, selfInstance, socketArg } from "./common";
import type { CliContext } from "./context";
import { err, out } from "./context";
import { formatBytes, formatDuration, itemJson } from "./format";
import { reporterFor } from "./progress";
import { writeMetrics } from "./metrics";

export function backupCommand(ctx: CliContext) {
  return command({
    name: "backup",
    description:
      "Back up instances, volumes, images and the server configuration. Each run adds one version (YYYYMMDD-HHMMSS, UTC) of each item; --all means database, volumes and instances (add --images for images).",
    examples: [
      { description: "Back up everything", command: "incus-backup backup --all --dir=/mnt/nas/sysbackup/incus" },
      { description: "Two instances only", command: "incus-backup backup --instances --name web --name db" },
      { description: "One volume, given with its pool", command: "incus-backup backup --volumes --name default/dockge-data" },
      { description: "Everything, images included", command: "incus-backup backup --all --images --dir=/mnt/nas/sysbackup/incus" },
      { description: "The server configuration only", command: "incus-backup backup --database --dir=/mnt/nas/sysbackup/incus" },
    ],
    args: {
      ...selectorArgs("backup"),
      ...dirArg,
      ...socketArg,
      compression: option({
        long: "compression",
        type: optional(oneOf(Object.keys(COMPRESSIONS))),
        description: "compression done by the server: zstd (default), gzip, xz, bzip2, lz4 or none",
      }),
      snapshots: flag({ long: "snapshots", description: "include the snapshots of instances and volumes" }),
      stop: flag({
        long: "stop",
        description: "stop each running instance for its backup and start it again afterwards (consistent, with downtime)",
      }),
      ...stopTimeoutArg,
      parallel: option({ long: "parallel", type: optional(number), description: "items backed up at the same time (default: one per CPU, at most 4)" }),
      json: flag({ long: "json", description: "print the summary as JSON: the version, the status, the exit code, and each item's result" }),
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(a, ["database", "volume", "instance"], false);
      const parallel = checkParallel(a.parallel);
      const stopTimeout = checkStopTimeout(a.stopTimeout);
      const store = await openRepository(ctx, a);
      const client = connect(ctx, a.socket);
      const reporter = reporterFor(ctx, "backup");
      try {
        const self = selfInstance(ctx);
        const result = await backup(
          { client, store, reporter, now: ctx.now, toolVersion: VERSION },
          {
            selection,
            compression: a.compression ?? store.defaultCompression ?? "zstd",
            snapshots: a.snapshots,
            stop: a.stop,
            ...(stopTimeout === undefined ? {} : { stopTimeout }),
            parallel,
            // Troubleshooting switch: INCUS_BACKUP_DIRECT=0 uses export-and-download even where streaming works.
            direct: ctx.env.INCUS_BACKUP_DIRECT !== "0",
            // And INCUS_BACKUP_PZSTD=0 asks the server for plain zstd even where it has pzstd.
            pzstd: ctx.env.INCUS_BACKUP_PZSTD !== "0",
            command: commandLine(ctx),
            ...(self ? { self } : {}),
          },
          ctx.signal,
        );
        if (!result) {
          err(ctx, "nothing to back up: nothing matches the selection");
          if (a.json) out(ctx, JSON.stringify({ version: null, status: "ok", exitCode: ExitCode.OK, items: [] }, null, 2));
          return ExitCode.OK;
        }
        return summarize(ctx, result, a.json);
      } finally {
        await client.close();
        // However the run ended: a failed one is what monitoring is for.
        await writeMetrics(ctx, store, reporter);
      }
    },
  });
}

/** Prints the run's summary on stdout (as JSON with --json) and returns the exit code it deserves. */
function summarize(ctx: CliContext, r: BackupResult, json: boolean): number {
  const code = r.interrupted ? ExitCode.Interrupted : runExitCode(r.items);
  if (json) {
    const items = r.items.map((i) => ({
      ...itemJson(i.item),
      ok: i.ok,
      ...(i.error === undefined ? {} : { error: i.error }),
      ...(i.bytes === undefined ? {} : { bytes: i.bytes }),
      seconds: i.seconds,
    }));
    out(ctx, JSON.stringify({ version: r.version, status: runStatus(r), exitCode: code, items }, null, 2));
    return code;
  }
  const ok = r.items.filter((i) => i.ok);
  const failed = r.items.filter((i) => !i.ok);
  const bytes = ok.reduce((n, i) => n + (i.bytes ?? 0), 0);
  const seconds = r.items.reduce((n, i) => Math.max(n, i.seconds), 0);
  out(ctx, `backup ${r.version}: ${ok.length} of ${r.items.length} item(s) backed up, ${formatBytes(bytes)}${seconds ? ` (longest item ${formatDuration(seconds)})` : ""}`);
  for (const f of failed) out(ctx, `  failed: ${itemLabel(f.item)}: ${f.error}`);
  return code;
}

export function commandLine(ctx: CliContext): string {
  // A repository URL may carry credentials (rest:https://user:secret@host/): never into a record or a log.
  return ctx.argv.map((a) => displayRepository(a)).join(" ");
}
