// `incus-backup restore`: plan, confirm if anything would be replaced, then restore.

import { command, flag, number, option, optional, string } from "cmd-ts";
import { ExitCode, IntegrityError, NotFoundError, UsageError, runExitCode } from "../errors";
import { isDestructive, planRestore, type Plan, type Step } from "../core/plan";
import { configIsDestructive, planConfig, type ConfigPlan, type FieldChange } from "../core/config_plan";
import { checkInstanceName, checkComponent } from "../core/names";
import { KINDS, itemId, itemLabel, matches, type Selection } from "../core/selection";
import { pickVersion } from "../core/version";
import { describeReplacements, executePlan, liveState, pendingRecoveries, recoverBeforePlanning, recoverJournals, sizeOf, type RestoreResult } from "../engine/restore";
import { applyConfigPlan, entityLabel, loadSnapshot, type ConfigResult } from "../engine/config_restore";
import { exportDatabase } from "../engine/database";
import type { IncusClient } from "../incus/client";
import { getProjects } from "../incus/projects";
import type { DamagedEntry, Repository, VersionEntry } from "../repository/repository";
import { RepositoryLock } from "../repository/lock";
import { checkParallel, checkVersionArg, connect, isSelf, selfInstance, dirArg, openRepository, selectionOf, selectorArgs, socketArg } from "./common";
import { confirm } from "./confirm";
import { out, type CliContext } from "./context";
import { formatBytes } from "./format";
import { reporterFor } from "./progress";
import { commandLine } from "./backup";

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
    ],
    args: {
      ...selectorArgs,
      ...dirArg,
      ...socketArg,
      version: option({
        long: "version",
        type: optional(string),
        description: "YYYYMMDD-HHMMSS or a prefix of it (the latest match wins); default: the latest",
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
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(a, KINDS, false);
      const version = checkVersionArg(a.version);
      const parallel = checkParallel(a.parallel);
      if (a.targetName !== undefined) {
        if (selection.kinds.length === 1 && selection.kinds[0] === "instance") checkInstanceName(a.targetName, "--target-name");
        else checkComponent(a.targetName, "--target-name");
      }
      const { repo } = await openRepository(ctx, a.dir, false);
      const { versions, damaged } = await repo.list(selection.kinds);
      const client = connect(ctx, a.socket);
      const reporter = reporterFor(ctx, "restore");
      try {
        // A restore that died half-way is finished or undone first: the plan must see the result.
        if (a.dryRun) {
          const pending = await pendingRecoveries(repo.root);
          if (pending > 0) reporter.warn(`${pending} interrupted restore(s) wait for recovery (the next restore or backup does it); the plan below ignores them`);
        } else {
          for (const line of await recoverBeforePlanning({ client, repo, reporter, now: ctx.now }, commandLine(ctx))) reporter.info(line);
        }
        refuseDamagedPick(selection, version, versions, damaged);
        for (const d of damaged) reporter.warn(`ignoring a damaged backup at ${d.dir}: ${d.problem}`);
        const config = selection.kinds.includes("database")
          ? await planDatabase(ctx, repo, client, versions, selection, version, a.serverConfig)
          : undefined;
        const itemKinds = selection.kinds.filter((k) => k !== "database");
        const plan: Plan =
          itemKinds.length > 0
            ? planRestore(
                versions.filter((v) => v.manifest.kind !== "database").map((v) => ({ manifest: v.manifest, dir: v.dir })),
                await liveState(client, ctx.signal),
                {
                  selection: { ...selection, kinds: itemKinds },
                  ...(version === undefined ? {} : { version }),
                  ...(a.targetName === undefined ? {} : { targetName: a.targetName }),
                  noStart: a.noStart,
                  allowEmpty: selection.kinds.length > 1,
                },
              )
            : { steps: [], skipped: [], notes: [] };
        // Never replace the container this restore runs in; restoring it under another name is fine.
        const self = selfInstance(ctx);
        const mine = plan.steps.filter((s) => s.op === "replace" && isSelf(self, s.target));
        if (mine.length > 0) {
          plan.steps = plan.steps.filter((s) => !mine.includes(s));
          const reason = "it is the container running this restore (restore it from the host, or under --target-name)";
          if (!config?.plan && plan.steps.length === 0) throw new UsageError(`not replacing ${itemLabel(mine[0]!.target)}: ${reason}`);
          plan.skipped.push(...mine.map((s) => ({ item: s.target, reason })));
        }
        if (!config?.plan && plan.steps.length === 0) {
          throw new NotFoundError(`nothing to restore for ${describeSelection(selection)}${version ? ` at version ${version}` : ""} (see \`incus-backup list\`)`);
        }
        await checkTargetProjects(client, plan, config?.plan, ctx.signal);
        await describeReplacements(client, plan, ctx.signal);
        if (config) printConfigPlan(ctx, config);
        printPlan(ctx, plan);
        if (a.dryRun) return ExitCode.OK;
        const destructive = isDestructive(plan) || (config?.plan !== undefined && configIsDestructive(config.plan));
        if (destructive) await confirm(ctx, "Go ahead and change the existing things marked above?", a.force);

        // Replacing items writes a journal, so it holds the lock; creating needs none.
        const lock = isDestructive(plan)
          ? await RepositoryLock.acquire(repo.root, commandLine(ctx), { onMessage: (t) => reporter.info(t) })
          : undefined;
        let configResult: ConfigResult | undefined;
        let result: RestoreResult;
        try {
          const deps = { client, repo, reporter, now: ctx.now };
          if (lock) for (const line of await recoverJournals(deps)) reporter.info(line);
          if (config?.plan) configResult = await applyConfigPlan(client, config.plan, reporter, ctx.signal);
          result = await executePlan(deps, plan, ctx.signal, parallel);
        } finally {
          await lock?.release();
        }
        return summarize(ctx, result, configResult);
      } finally {
        await client.close();
      }
    },
  });
}

/**
 * A damaged version that the restore would have used (the item's latest, or latest matching
 * --version) stops it before anything changes: quietly taking an older version, or none, would
 * restore something other than what was asked for. Older damaged versions are only warned about.
 */
function refuseDamagedPick(selection: Selection, version: string | undefined, versions: VersionEntry[], damaged: DamagedEntry[]): void {
  const wanted = (v: string) => version === undefined || v.startsWith(version);
  for (const d of damaged) {
    if (!matches(selection, d.key) || !wanted(d.version)) continue;
    const newer = versions.some((v) => itemId(v.manifest) === itemId(d.key) && wanted(v.manifest.version) && v.manifest.version > d.version);
    if (newer) continue;
    throw new IntegrityError(`${itemLabel(d.key)} version ${d.version} is damaged (${d.problem}); nothing was changed`, {
      hint: "see `incus-backup verify`; restore another version with --version",
    });
  }
}

/**
 * Items restored into a project the server does not have fail one by one, some with a refused
 * upload that loses Incus's reason: say so once, before anything changes. Projects the
 * configuration restore creates first count as there.
 */
async function checkTargetProjects(client: IncusClient, plan: Plan, config: ConfigPlan | undefined, signal: AbortSignal): Promise<void> {
  const wanted = new Set(plan.steps.map((s) => s.target.project));
  if (wanted.size === 0) return;
  const have = new Set((await getProjects(client, { signal })).map((p) => p.name));
  for (const a of config?.actions ?? []) if (a.action === "create" && a.rec.kind === "project") have.add(a.rec.id);
  const missing = [...wanted].filter((p) => !have.has(p));
  if (missing.length > 0) {
    throw new NotFoundError(`project ${missing.map((p) => JSON.stringify(p)).join(", ")} does not exist on the server; nothing was changed`, {
      hint: "create it first, or restore the database (--database) with it, or choose another --project",
    });
  }
}

interface DatabasePart {
  version?: string;
  plan?: ConfigPlan;
  note?: string;
}

/** Picks the database version, checks and loads it, and plans it against the server as it is now. */
async function planDatabase(
  ctx: CliContext,
  repo: Repository,
  client: IncusClient,
  versions: VersionEntry[],
  selection: Selection,
  version: string | undefined,
  serverConfig: boolean,
): Promise<DatabasePart> {
  const dbVersions = versions.filter((v) => v.manifest.kind === "database");
  const onlyDatabase = selection.kinds.length === 1;
  const picked = pickVersion(dbVersions.map((v) => v.manifest.version), version);
  if (picked === undefined) {
    if (!onlyDatabase) return { note: `no database backup${version ? ` matching ${version}` : ""}: the configuration is left as it is` };
    const available = dbVersions.map((v) => v.manifest.version).sort().reverse();
    throw new NotFoundError(
      dbVersions.length === 0
        ? "there is no database backup in the repository (make one with `incus-backup backup --database`)"
        : `no database version matching ${JSON.stringify(version)}; available: ${available.slice(0, 20).join(", ")}`,
    );
  }
  const entry = dbVersions.find((v) => v.manifest.version === picked)!;
  const snapshot = await loadSnapshot(repo, entry, ctx.signal);
  const live = await exportDatabase(client, ctx.signal);
  const plan = planConfig(snapshot, live, { ...(selection.project === undefined ? {} : { project: selection.project }), serverConfig });
  return { version: picked, plan };
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

function describeSelection(sel: Selection): string {
  const names = sel.names.length ? ` named ${sel.names.map((n) => JSON.stringify(n)).join(", ")}` : "";
  return `${sel.kinds.join(", ")}${names}${sel.project ? ` in project ${sel.project}` : ""}`;
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
  if (r.interrupted) return ExitCode.Interrupted;
  // Nothing went through: failures of one kind keep their own code (a corrupt backup is 9).
  return runExitCode(r.steps, config?.failed.length ?? 0, config?.applied ?? 0);
}
