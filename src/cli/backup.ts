// `incus-backup backup`: back up instances and custom volumes into the repository.

import { displayRepository } from "../repository/restic/run";
import { array, command, flag, multioption, number, oneOf, option, optional, string } from "cmd-ts";
import { ExitCode, UsageError, runExitCode } from "../errors";
import { COMPRESSIONS, backup, runStatus, type BackupResult } from "../engine/backup";
import { itemId, itemLabel } from "../core/selection";
import { MODES, parseMode, parsePatternList, type BackupOverrides, type Mode } from "../core/item_settings";
import { backupDefaultsFromEnv } from "../core/settings";
import { planBackupRun } from "../engine/backup";
import type { BackupPlan } from "../engine/backup_plan";
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
      snapshots: flag({ long: "snapshots", description: "include the snapshots of instances and volumes (over user.incus-backup.snapshots and $INCUS_BACKUP_SNAPSHOTS)" }),
      noSnapshots: flag({ long: "no-snapshots", description: "leave the snapshots out, whatever user.incus-backup.snapshots and $INCUS_BACKUP_SNAPSHOTS say" }),
      stop: flag({
        long: "stop",
        description: "stop each running instance for its backup and start it again afterwards (consistent, with downtime); the same as --mode stop",
      }),
      mode: option({
        long: "mode",
        type: optional(oneOf([...MODES])),
        description: "live or stop, for every instance of this run (over user.incus-backup.mode and $INCUS_BACKUP_MODE; default live)",
      }),
      exclude: multioption({
        long: "exclude",
        type: array(string),
        description: "leave out instances and volumes matching PATTERN (NAME, PROJECT/NAME, POOL/NAME, PROJECT/POOL/NAME; * and ?), as well as $INCUS_BACKUP_EXCLUDE; repeatable",
      }),
      excludeProject: multioption({
        long: "exclude-project",
        type: array(string),
        description: "leave out the instances and volumes of projects matching PATTERN, as well as $INCUS_BACKUP_EXCLUDE_PROJECTS; repeatable",
      }),
      ephemeral: flag({ long: "ephemeral", description: "back up ephemeral instances too (they are skipped unless named with --name, or $INCUS_BACKUP_EPHEMERAL=true)" }),
      dryRun: flag({ long: "dry-run", description: "print what would be backed up and how, and what is left out and why; change nothing" }),
      ...stopTimeoutArg,
      parallel: option({ long: "parallel", type: optional(number), description: "items backed up at the same time (default: one per CPU, at most 4)" }),
      json: flag({ long: "json", description: "print the summary as JSON: the version, the status, the exit code, and each item's result" }),
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(a, ["database", "volume", "instance"], false);
      const parallel = checkParallel(a.parallel);
      const stopTimeout = checkStopTimeout(a.stopTimeout);
      if (a.snapshots && a.noSnapshots) throw new UsageError("--snapshots and --no-snapshots contradict each other");
      if (a.stop && a.mode === "live") throw new UsageError("--stop and --mode live contradict each other");
      const env = backupDefaultsFromEnv(ctx.env);
      const defaults = {
        ...env.backup,
        exclude: [...env.backup.exclude, ...parsePatternList(a.exclude.join(","), "--exclude")],
        excludeProjects: [...env.backup.excludeProjects, ...parsePatternList(a.excludeProject.join(","), "--exclude-project", "projects")],
        ephemeral: env.backup.ephemeral || a.ephemeral,
      };
      const mode: Mode | undefined = a.stop ? "stop" : a.mode === undefined ? undefined : parseMode(a.mode, "--mode");
      const overrides: BackupOverrides = {
        ...(mode === undefined ? {} : { mode }),
        ...(a.snapshots ? { snapshots: true } : a.noSnapshots ? { snapshots: false } : {}),
      };
      const self = selfInstance(ctx);
      if (a.dryRun) {
        const client = connect(ctx, a.socket);
        try {
          const plan = await planBackupRun(client, { selection, defaults, overrides, snapshots: defaults.snapshots, stop: defaults.mode === "stop", ...(self ? { self } : {}) }, ctx.signal);
          out(ctx, a.json ? JSON.stringify(planJson(plan), null, 2) : formatPlan(plan));
          return ExitCode.OK;
        } finally {
          await client.close();
        }
      }
      const store = await openRepository(ctx, a);
      const client = connect(ctx, a.socket);
      const reporter = reporterFor(ctx, "backup");
      try {
        let plan: BackupPlan | undefined;
        const result = await backup(
          { client, store, reporter, now: ctx.now, toolVersion: VERSION },
          {
            selection,
            compression: a.compression ?? env.compression ?? store.defaultCompression ?? "zstd",
            snapshots: defaults.snapshots,
            stop: defaults.mode === "stop",
            defaults,
            overrides,
            onPlan: (p) => (plan = p),
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
          const skipped = (plan as BackupPlan | undefined)?.skipped ?? [];
          for (const x of skipped) err(ctx, `skipped ${itemLabel(x.item)}: ${x.reason}`);
          err(ctx, skipped.length ? `nothing to back up: every item the selection matches is left out` : "nothing to back up: nothing matches the selection");
          if (a.json) out(ctx, JSON.stringify({ version: null, status: "ok", exitCode: ExitCode.OK, items: [], skipped: skipped.map(skippedJson) }, null, 2));
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
    out(ctx, JSON.stringify({ version: r.version, status: runStatus(r), exitCode: code, items, skipped: r.skipped.map(skippedJson) }, null, 2));
    return code;
  }
  const ok = r.items.filter((i) => i.ok);
  const failed = r.items.filter((i) => !i.ok);
  const bytes = ok.reduce((n, i) => n + (i.bytes ?? 0), 0);
  const seconds = r.items.reduce((n, i) => Math.max(n, i.seconds), 0);
  out(ctx, `backup ${r.version}: ${ok.length} of ${r.items.length} item(s) backed up, ${formatBytes(bytes)}${seconds ? ` (longest item ${formatDuration(seconds)})` : ""}`);
  for (const f of failed) out(ctx, `  failed: ${itemLabel(f.item)}: ${f.error}`);
  for (const x of r.skipped) out(ctx, `  skipped: ${itemLabel(x.item)}: ${x.reason}`);
  return code;
}

function skippedJson(x: { item: Parameters<typeof itemJson>[0]; reason: string }) {
  return { ...itemJson(x.item), reason: x.reason };
}

/** `backup --dry-run --json`: each item with its mode and snapshots and where they come from, and what is left out. */
function planJson(plan: BackupPlan) {
  return {
    items: plan.items.map((i) => {
      const d = plan.decisions.get(itemId(i))!;
      return {
        ...itemJson(i),
        ...(d.mode === undefined ? {} : { mode: d.mode, modeFrom: d.modeFrom }),
        ...(i.kind === "instance" || i.kind === "volume" ? { snapshots: d.snapshots, snapshotsFrom: d.snapshotsFrom } : {}),
        ...(d.warnings.length ? { warnings: d.warnings } : {}),
      };
    }),
    skipped: plan.skipped.map(skippedJson),
  };
}

/** `backup --dry-run`: one line per item, how it would be backed up, then what is left out and why. */
function formatPlan(plan: BackupPlan): string {
  const lines = [`would back up ${plan.items.length} item(s)${plan.skipped.length ? `, skip ${plan.skipped.length}` : ""}:`];
  for (const i of plan.items) {
    const d = plan.decisions.get(itemId(i))!;
    const how: string[] = [];
    if (d.mode !== undefined) how.push(`${d.mode}${d.modeFrom === "default" ? "" : ` (${fromText(d.modeFrom!)})`}`);
    if (i.kind === "instance" || i.kind === "volume") how.push(`${d.snapshots ? "with" : "without"} snapshots${d.snapshotsFrom === "default" ? "" : ` (${fromText(d.snapshotsFrom)})`}`);
    lines.push(`  ${itemLabel(i)}${how.length ? `: ${how.join(", ")}` : ""}`);
    for (const w of d.warnings) lines.push(`    note: ${w}`);
  }
  for (const x of plan.skipped) lines.push(`  skip ${itemLabel(x.item)}: ${x.reason}`);
  return lines.join("\n");
}

function fromText(s: string): string {
  return s === "key" ? "its user.incus-backup.* key" : s;
}

export function commandLine(ctx: CliContext): string {
  // A repository URL may carry credentials (rest:https://user:secret@host/): never into a record or a log.
  return ctx.argv.map((a) => displayRepository(a)).join(" ");
}
