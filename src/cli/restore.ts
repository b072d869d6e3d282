// `incus-backup restore`: plan, confirm if anything would be replaced, then restore.

import { array, command, flag, multioption, number, option, optional, string } from "cmd-ts";
import { ExitCode, NotConfirmedError, UsageError, runExitCode } from "../errors";
import type { Plan, Step } from "../core/plan";
import type { FieldChange } from "../core/config_plan";
import { checkInstanceName, checkComponent } from "../core/names";
import { KINDS, itemLabel } from "../core/selection";
import { sizeOf, type RestoreResult } from "../engine/restore";
import { prepareRestore, runRestore, type DatabasePart } from "../engine/restore_command";
import { entityLabel, type ConfigResult } from "../engine/config_restore";
import { checkParallel, checkStopTimeout, stopTimeoutArg, checkVersionArg, connect, selfInstance, dirArg, openRepository, selectionOf, selectorArgs, socketArg } from "./common";
import { confirm } from "./confirm";
import { out, type CliContext } from "./context";
import { formatBytes, itemJson } from "./format";
import { reporterFor } from "./progress";
import { commandLine } from "./backup";
import { restoreFiles } from "./restore_files";

export function restoreCommand(ctx: CliContext) {
  return command({
    name: "restore",
    description:
      "Restore from the backups. Missing things are created; existing ones are replaced only after the backup is checked and you confirm (or --force). --all: configuration, images, volumes, instances, in that order.",
    examples: [
      { description: "Rebuild everything from the latest backups", command: "incus-backup restore --all --dir=/mnt/nas/sysbackup/incus" },
      { description: "One instance, latest backup of that day", command: "incus-backup restore --instance --name=docker01 --version=20250914" },
      { description: "A volume in use (its instances are stopped and started again)", command: "incus-backup restore --volume --name=dockge-data --version=20250914" },
      { description: "A copy next to the original", command: "incus-backup restore --instance --name=web --target-name=web-restored" },
      { description: "Profiles, networks, pools, projects", command: "incus-backup restore --database --dry-run" },
      { description: "One file, back into the running instance", command: "incus-backup restore --instance --name=web --path=/etc/nginx/nginx.conf" },
      { description: "A tree, into a directory to look at first", command: "incus-backup restore --instance --name=web --version=20250914 --path=/srv/app --to=/tmp/web-app" },
    ],
    args: {
      ...selectorArgs("restore"),
      ...dirArg,
      ...socketArg,
      version: option({
        long: "version",
        type: optional(string),
        description: "YYYYMMDD-HHMMSS or a prefix of it (the latest match wins); default: the latest",
      }),
      targetMember: option({
        long: "target-member",
        type: optional(string),
        description: "in a cluster: the member for items whose member (the one they were backed up on) is not in it; others go back to theirs",
      }),
      targetName: option({
        long: "target-name",
        type: optional(string),
        description: "restore one instance or volume under this new name, leaving the original alone",
      }),
      serverConfig: flag({
        long: "server-config",
        description: "with --database: also restore the server's own configuration (addresses, trust settings: host-specific)",
      }),
      parallel: option({ long: "parallel", type: optional(number), description: "items restored at the same time (default: one per CPU, at most 4)" }),
      dryRun: flag({ long: "dry-run", description: "print the plan and stop" }),
      force: flag({ long: "force", description: "replace existing things without asking" }),
      noStart: flag({ long: "no-start", description: "leave restored instances stopped" }),
      ...stopTimeoutArg,
      json: flag({ long: "json", description: "print the plan and the result as one JSON object (no plan text; with --dry-run, only the plan)" }),
      paths: multioption({
        long: "path",
        type: array(string),
        description: "restore only this file or tree of one instance or volume (as the instance sees it: /etc/nginx); repeatable; into the running instance, or with --to into a directory",
      }),
      to: option({ long: "to", type: optional(string), description: "with --path: write the files under this directory (DIR/etc/nginx/...) instead of into the instance" }),
      snapshot: option({ long: "snapshot", type: optional(string), description: "with --path: take the files from this snapshot kept in the backup (backup --snapshots)" }),
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(a, KINDS, false);
      const version = checkVersionArg(a.version);
      if (a.paths.length > 0) {
        const other = [a.targetName !== undefined && "--target-name", a.serverConfig && "--server-config", a.noStart && "--no-start", a.parallel !== undefined && "--parallel", a.stopTimeout !== undefined && "--stop-timeout"].filter(Boolean);
        if (other.length > 0) throw new UsageError(`--path restores files into the instance as it is now: ${other.join(", ")} do(es) not apply`);
        return restoreFiles(ctx, { ...a, selection, version });
      }
      if (a.to !== undefined || a.snapshot !== undefined) throw new UsageError(`${a.to !== undefined ? "--to" : "--snapshot"} goes with --path (which files to restore)`);
      const parallel = checkParallel(a.parallel);
      const stopTimeout = checkStopTimeout(a.stopTimeout);
      if (a.targetName !== undefined) {
        if (selection.kinds.length === 1 && selection.kinds[0] === "instance") checkInstanceName(a.targetName, "--target-name");
        else checkComponent(a.targetName, "--target-name");
      }
      const store = await openRepository(ctx, a);
      const client = connect(ctx, a.socket);
      const reporter = reporterFor(ctx, "restore");
      const deps = { client, store, reporter, now: ctx.now, ...(stopTimeout === undefined ? {} : { stopTimeout }) };
      try {
        const self = selfInstance(ctx);
        const prepared = await prepareRestore(
          deps,
          {
            selection,
            ...(version === undefined ? {} : { version }),
            ...(a.targetName === undefined ? {} : { targetName: a.targetName }),
            ...(a.targetMember === undefined ? {} : { targetMember: checkComponent(a.targetMember, "--target-member") }),
            serverConfig: a.serverConfig,
            noStart: a.noStart,
            dryRun: a.dryRun,
            ...(self ? { self } : {}),
            command: commandLine(ctx),
          },
          ctx.signal,
        );
        if (prepared.pendingRecoveries > 0) {
          reporter.warn(`${prepared.pendingRecoveries} interrupted restore(s) wait for recovery (the next restore or backup does it); the plan below ignores them`);
        }
        if (!a.json) {
          if (prepared.config) printConfigPlan(ctx, prepared.config);
          printPlan(ctx, prepared.plan);
        }
        if (a.dryRun) {
          if (a.json) out(ctx, JSON.stringify(restoreJson(prepared.plan, prepared.config, undefined), null, 2));
          return ExitCode.OK;
        }
        if (prepared.destructive && a.json && !a.force) {
          // JSON is for programs: nobody sees a plan to answer for.
          throw new NotConfirmedError("with --json, a restore that replaces existing things needs --force; nothing was changed", {
            hint: "see the plan with --dry-run --json",
          });
        }
        if (prepared.destructive) await confirm(ctx, "Go ahead and change the existing things marked above?", a.force);
        const done = await runRestore(deps, prepared, { command: commandLine(ctx), parallel }, ctx.signal);
        if (!a.json) return summarize(ctx, done.result, done.config);
        const code = exitCodeOf(done.result, done.config);
        out(ctx, JSON.stringify(restoreJson(prepared.plan, prepared.config, { ...done, exitCode: code }), null, 2));
        return code;
      } finally {
        await client.close();
      }
    },
  });
}

function printConfigPlan(ctx: CliContext, part: DatabasePart): void {
  if (!part.plan) {
    if (part.note) out(ctx, part.note);
    return;
  }
  const p = part.plan;
  out(ctx, `Configuration from database backup ${part.version}:`);
  for (const a of p.actions) {
    const label = entityLabel(a.rec);
    if (a.action === "create") out(ctx, `  create   ${label}${a.notes.length ? ` (${a.notes.join("; ")})` : ""}`);
    else if (a.action === "conflict") out(ctx, `  conflict ${label}: ${a.reason}`);
    else {
      out(ctx, `  UPDATE   ${label}:`);
      for (const c of a.changes) out(ctx, `             ${changeLine(c)}`);
    }
  }
  if (p.server) {
    out(ctx, "  UPDATE   server configuration:");
    for (const c of p.server.changes) out(ctx, `             ${changeLine(c)}`);
  }
  if (p.unchanged > 0) out(ctx, `  same     ${p.unchanged} object(s) already as in the backup`);
  for (const e of p.extra) out(ctx, `  keep     ${entityLabel(e)} (not in the backup; left alone)`);
}

/** One diff line; secret values are never shown, only that they change. */
export function changeLine(c: FieldChange): string {
  if (c.secret) return `${c.field}: (secret value ${c.from === undefined ? "added" : c.to === undefined ? "removed" : "changed"})`;
  const v = (x: string | undefined) => (x === undefined ? "(unset)" : x === "" ? '""' : x);
  return `${c.field}: ${v(c.from)} -> ${v(c.to)}`;
}

export function printPlan(ctx: CliContext, plan: Plan): void {
  for (const n of plan.notes) out(ctx, n);
  if (plan.steps.length === 0 && plan.skipped.length === 0) return;
  out(ctx, "Restore plan:");
  for (const s of plan.steps) {
    out(ctx, `  ${stepLine(s)}`);
    for (const n of "notes" in s ? (s.notes ?? []) : []) out(ctx, `           ${n}`);
  }
  for (const s of plan.skipped) out(ctx, `  skip     ${itemLabel(s.item)}: ${s.reason}`);
}

function stepLine(s: Step): string {
  const from = `from ${s.source.manifest.version} (${formatBytes(sizeOf(s.source))})`;
  const label = itemLabel(s.target);
  const renamed =
    s.target.name !== s.source.manifest.name || s.target.project !== s.source.manifest.project
      ? ` [backup of ${itemLabel(s.source.manifest)}]`
      : "";
  switch (s.op) {
    case "create":
      return `create   ${label}${renamed} ${from}${s.start ? ", then start it (it was running)" : ""}`;
    case "replace":
      return `REPLACE  ${label}${renamed} ${from}: the existing instance is deleted${snapshotsLost(s.snapshots)}${
        s.wasRunning ? `; it is running: stopped${s.start ? ", then the restored one is started" : ""}` : ""
      }`;
    case "replace-contents": {
      const users = [...s.restart, ...s.stopOnly].map((u) => `${u.project}/${u.name}`);
      const restart = s.restart.map((u) => `${u.project}/${u.name}`);
      return `REPLACE  ${label}${renamed} ${from}: all its current contents are replaced${
        users.length > 0 ? `; stops ${users.join(", ")}${restart.length > 0 ? ` and starts ${restart.join(", ")} again` : ""}` : ""
      }`;
    }
    case "image": {
      const aliases = [
        ...s.createAliases.map((n) => `add alias ${n}`),
        ...s.moveAliases.map((m) => `MOVE alias ${m.name} from ${m.from.slice(0, 12)}`),
      ];
      const what = s.exists ? "already on the server (same fingerprint): not uploaded" : from;
      return `${s.moveAliases.length ? "REPLACE " : s.exists ? "keep    " : "create  "} ${label} ${what}${aliases.length ? `; ${aliases.join(", ")}` : ""}`;
    }
  }
}

/** What a replaced instance's snapshots come to: every one is deleted with it. */
function snapshotsLost(snapshots: string[] | undefined): string {
  if (snapshots === undefined) return " with its snapshots";
  if (snapshots.length === 0) return " (it has no snapshots)";
  const shown = snapshots.slice(0, 10).join(", ");
  return ` with its ${snapshots.length} snapshot(s): ${shown}${snapshots.length > 10 ? ", ..." : ""}`;
}

/** The --json form: the plan (what each step does to what), and the result once run. */
function restoreJson(plan: Plan, config: DatabasePart | undefined, done: { result: RestoreResult; config?: ConfigResult; exitCode: number } | undefined) {
  return {
    plan: plan.steps.map((s) => ({
      action: s.op,
      ...itemJson(s.target),
      version: s.source.manifest.version,
      ...("start" in s ? { start: s.start } : {}),
      ...("notes" in s && s.notes?.length ? { notes: s.notes } : {}),
    })),
    skipped: plan.skipped.map((s) => ({ ...itemJson(s.item), reason: s.reason })),
    notes: plan.notes,
    configuration: config?.plan
      ? { version: config.version ?? null, actions: config.plan.actions.map((x) => ({ action: x.action, object: entityLabel(x.rec) })), unchanged: config.plan.unchanged }
      : null,
    result: done
      ? {
          exitCode: done.exitCode,
          interrupted: done.result.interrupted,
          items: done.result.steps.map((s) => ({ ...itemJson(s.item), ok: s.ok, ...(s.error === undefined ? {} : { error: s.error }), seconds: s.seconds })),
          ...(done.config ? { configuration: done.config } : {}),
        }
      : null,
  };
}

function exitCodeOf(r: RestoreResult, config: ConfigResult | undefined): number {
  if (r.interrupted) return ExitCode.Interrupted;
  // Nothing went through: failures of one kind keep their own code (a corrupt backup is 9).
  return runExitCode(r.steps, config?.failed.length ?? 0, config?.applied ?? 0);
}

function summarize(ctx: CliContext, r: RestoreResult, config: ConfigResult | undefined): number {
  const ok = r.steps.filter((s) => s.ok);
  const failed = r.steps.filter((s) => !s.ok);
  if (config) {
    out(ctx, `configuration: ${config.applied} change(s) applied${config.failed.length ? `, ${config.failed.length} failed` : ""}`);
    for (const f of config.failed) out(ctx, `  failed: ${f.label}: ${f.error}`);
  }
  if (r.steps.length > 0) out(ctx, `restore: ${ok.length} of ${r.steps.length} item(s) restored`);
  for (const f of failed) out(ctx, `  failed: ${itemLabel(f.item)}: ${f.error}`);
  return exitCodeOf(r, config);
}
