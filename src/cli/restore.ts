// `incus-backup restore`: plan, confirm if anything would be replaced, then restore.

import { command, flag, option, optional, string } from "cmd-ts";
import { ExitCode } from "../errors";
import { isDestructive, planRestore, type Plan, type Step } from "../core/plan";
import { checkInstanceName, checkComponent } from "../core/names";
import { itemLabel } from "../core/selection";
import { executePlan, liveState, recoverJournals, archiveOf, type RestoreResult } from "../engine/restore";
import { RepositoryLock } from "../repository/lock";
import { checkVersionArg, connect, dirArg, openRepository, selectionOf, selectorArgs, socketArg } from "./common";
import { confirm } from "./confirm";
import { out, type CliContext } from "./context";
import { formatBytes } from "./format";
import { reporterFor } from "./progress";
import { commandLine } from "./backup";

export function restoreCommand(ctx: CliContext) {
  return command({
    name: "restore",
    description:
      "Restore instances and volumes. Missing items are created; existing ones are replaced only after the backup is checked and you confirm (or --force).",
    examples: [
      { description: "Restore the latest backup of everything", command: "incus-backup restore --all --dir=/mnt/nas/sysbackup/incus" },
      { description: "One instance, latest backup of that day", command: "incus-backup restore --instance --name=docker01 --version=20250914" },
      { description: "A copy next to the original", command: "incus-backup restore --instance --name=web --target-name=web-restored" },
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
        description: "restore one item under this new name, leaving the original alone",
      }),
      dryRun: flag({ long: "dry-run", description: "print the plan and stop" }),
      force: flag({ long: "force", description: "replace existing items without asking" }),
      noStart: flag({ long: "no-start", description: "leave restored instances stopped" }),
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(a, ["instance", "volume"], false);
      const version = checkVersionArg(a.version);
      if (a.targetName !== undefined) {
        if (selection.kinds.length === 1 && selection.kinds[0] === "instance") checkInstanceName(a.targetName, "--target-name");
        else checkComponent(a.targetName, "--target-name");
      }
      const { repo } = await openRepository(ctx, a.dir, false);
      const { versions, damaged } = await repo.list(selection.kinds);
      const client = connect(ctx, a.socket);
      const reporter = reporterFor(ctx, "restore");
      try {
        const live = await liveState(client, ctx.signal);
        const plan = planRestore(
          versions.map((v) => ({ manifest: v.manifest, dir: v.dir })),
          live,
          { selection, ...(version === undefined ? {} : { version }), ...(a.targetName === undefined ? {} : { targetName: a.targetName }), noStart: a.noStart },
        );
        for (const d of damaged) reporter.warn(`ignoring a damaged backup at ${d.dir}: ${d.problem}`);
        printPlan(ctx, plan);
        if (a.dryRun) return ExitCode.OK;
        const destructive = isDestructive(plan);
        if (destructive) await confirm(ctx, "Replace the existing items listed above?", a.force);

        // Replacing writes a journal, so it holds the lock; plain creates need none.
        const lock = destructive
          ? await RepositoryLock.acquire(repo.root, commandLine(ctx), { onMessage: (t) => reporter.info(t) })
          : undefined;
        let result: RestoreResult;
        try {
          const deps = { client, repo, reporter, now: ctx.now };
          if (lock) for (const line of await recoverJournals(deps)) reporter.info(line);
          result = await executePlan(deps, plan, ctx.signal);
        } finally {
          await lock?.release();
        }
        return summarize(ctx, result);
      } finally {
        await client.close();
      }
    },
  });
}

export function printPlan(ctx: CliContext, plan: Plan): void {
  for (const n of plan.notes) out(ctx, n);
  out(ctx, "Restore plan:");
  for (const s of plan.steps) out(ctx, `  ${stepLine(s)}`);
  for (const s of plan.skipped) out(ctx, `  skip     ${itemLabel(s.item)}: ${s.reason}`);
}

function stepLine(s: Step): string {
  const from = `from ${s.source.manifest.version} (${formatBytes(archiveOf(s.source).size)})`;
  const label = itemLabel(s.target);
  const renamed = s.target.name !== s.source.manifest.name || s.target.project !== s.source.manifest.project
    ? ` [backup of ${itemLabel(s.source.manifest)}]`
    : "";
  switch (s.op) {
    case "create":
      return `create   ${label}${renamed} ${from}${s.start ? ", then start it (it was running)" : ""}`;
    case "replace":
      return `REPLACE  ${label}${renamed} ${from}: the existing instance and its snapshots are deleted${
        s.wasRunning ? `; it is running: stopped${s.start ? ", then the restored one is started" : ""}` : ""
      }`;
    case "replace-contents": {
      const users = [...s.restart, ...s.stopOnly].map((u) => `${u.project}/${u.name}`);
      return `REPLACE  ${label}${renamed} ${from}: all its current contents are replaced${
        users.length > 0 ? `; stops ${users.join(", ")}${s.restart.length > 0 ? ` and starts ${s.restart.map((u) => `${u.project}/${u.name}`).join(", ")} again` : ""}` : ""
      }`;
    }
  }
}

function summarize(ctx: CliContext, r: RestoreResult): number {
  const ok = r.steps.filter((s) => s.ok);
  const failed = r.steps.filter((s) => !s.ok);
  out(ctx, `restore: ${ok.length} of ${r.steps.length} item(s) restored`);
  for (const f of failed) out(ctx, `  failed: ${itemLabel(f.item)}: ${f.error}`);
  if (r.interrupted) return ExitCode.Interrupted;
  if (failed.length === 0) return ExitCode.OK;
  return ok.length > 0 ? ExitCode.Partial : ExitCode.Failure;
}
