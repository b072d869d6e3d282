// `incus-backup prune`: remove old versions by a retention policy, per item; --dry-run shows the decisions.

import { command, flag, option, optional, string } from "cmd-ts";
import { ExitCode, UsageError } from "../errors";
import { KINDS, itemLabel } from "../core/selection";
import { EMPTY_POLICY, RULES, formatLocal, formatPolicy, formatReason, isEmptyPolicy, type RetentionPolicy } from "../core/retention";
import { parseCount, policyFromEnv, systemTimeZone, timeZoneFromEnv } from "../core/settings";
import { planCounts, pruneRun, type PrunePlan, type PruneResult } from "../engine/prune";
import { countText, dirArg, openRepository, selectionOf, selectorArgs } from "./common";
import { err, out, type CliContext } from "./context";
import { formatBytes, table } from "./format";
import { reporterFor } from "./progress";
import { writeMetrics } from "./metrics";

const keepArgs = {
  keepLast: option({ long: "keep-last", type: optional(countText), description: "keep the N newest versions" }),
  keepHourly: option({ long: "keep-hourly", type: optional(countText), description: "keep the newest version of each of the last N hours that have one" }),
  keepDaily: option({ long: "keep-daily", type: optional(countText), description: "keep the newest version of each of the last N days that have one" }),
  keepWeekly: option({ long: "keep-weekly", type: optional(countText), description: "the same for ISO weeks (Monday to Sunday)" }),
  keepMonthly: option({ long: "keep-monthly", type: optional(countText), description: "the same for calendar months" }),
  keepYearly: option({ long: "keep-yearly", type: optional(countText), description: "the same for calendar years" }),
};

export function pruneCommand(ctx: CliContext) {
  return command({
    name: "prune",
    description:
      "Remove old versions by a retention policy, applied to each item on its own (restic's forget rules). Periods are in the local time zone " +
      "(INCUS_BACKUP_TZ overrides). The newest version of an item is never removed. Without --keep-* options, the INCUS_BACKUP_KEEP_* settings are used.",
    examples: [
      { description: "See what a policy would do", command: "incus-backup prune --keep-daily 7 --keep-weekly 4 --keep-monthly 6 --dry-run" },
      { description: "Keep the last three versions of one instance", command: "incus-backup prune --instance --name web --keep-last 3" },
      { description: "Apply the scheduled service's policy now", command: "incus exec backup -- incus-backup prune" },
    ],
    args: {
      ...selectorArgs("read"),
      ...dirArg,
      ...keepArgs,
      dryRun: flag({ long: "dry-run", description: "only list every version as keep or remove, with the rules that keep it" }),
      json: flag({ long: "json", description: "print the decisions as JSON" }),
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(a, KINDS, true);
      const { policy, fromSettings } = policyOf(ctx, a);
      const tz = timeZoneFromEnv(ctx.env, systemTimeZone(ctx.env));
      if (fromSettings) err(ctx, `using the policy of the INCUS_BACKUP_KEEP_* settings: ${formatPolicy(policy)}`);
      const store = await openRepository(ctx, a);
      const reporter = reporterFor(ctx, "prune");
      const done = await pruneRun(
        { store, reporter, now: ctx.now },
        { selection, policy, tz, trigger: "manual", dryRun: a.dryRun, command: ctx.argv.join(" ") },
        ctx.signal,
      ).finally(() => (a.dryRun ? undefined : writeMetrics(ctx, store, reporter)));
      render(ctx, done.plan, done.result, a.json);
      const result = done.result;
      if (!result) return ExitCode.OK;
      if (result.interrupted) return ExitCode.Interrupted;
      if (result.failed.length === 0) return ExitCode.OK;
      return result.removed.length > 0 ? ExitCode.Partial : ExitCode.Failure;
    },
  });
}

type KeepValues = { [K in keyof typeof keepArgs]: string | undefined };

const FLAG_OF: Record<(typeof RULES)[number], keyof KeepValues> = {
  last: "keepLast",
  hourly: "keepHourly",
  daily: "keepDaily",
  weekly: "keepWeekly",
  monthly: "keepMonthly",
  yearly: "keepYearly",
};

/** The policy from the --keep-* options, else from the settings; an empty one is refused. */
function policyOf(ctx: CliContext, a: KeepValues): { policy: RetentionPolicy; fromSettings: boolean } {
  const policy: RetentionPolicy = { ...EMPTY_POLICY };
  let given = false;
  for (const r of RULES) {
    const v = a[FLAG_OF[r]];
    if (v === undefined) continue;
    given = true;
    policy[r] = parseCount(v, `--keep-${r}`);
  }
  if (given) {
    if (isEmptyPolicy(policy)) throw new UsageError("every --keep-* option is 0: that policy would remove every version");
    return { policy, fromSettings: false };
  }
  const settings = policyFromEnv(ctx.env);
  if (settings === undefined || isEmptyPolicy(settings)) {
    throw new UsageError("no retention policy: give at least one of --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly");
  }
  return { policy: settings, fromSettings: true };
}

function render(ctx: CliContext, plan: PrunePlan, result: PruneResult | undefined, json: boolean): void {
  const counts = planCounts(plan);
  if (json) {
    out(
      ctx,
      JSON.stringify(
        {
          dryRun: result === undefined,
          policy: plan.policy,
          tz: plan.tz,
          items: plan.items.map((i) => ({
            type: i.key.kind,
            project: i.key.project,
            ...(i.key.pool === undefined ? {} : { pool: i.key.pool }),
            name: i.key.name,
            versions: i.decisions.map((d) => ({
              version: d.entry.version,
              time: formatLocal(d.time, plan.tz),
              action: d.keep ? "keep" : "remove",
              reasons: d.reasons.map(formatReason),
              size: d.entry.entry.size,
            })),
          })),
          keep: counts.keep,
          remove: counts.remove,
          ...(result === undefined ? {} : { removed: result.removed.length, failed: result.failed, interrupted: result.interrupted }),
        },
        null,
        2,
      ),
    );
    return;
  }
  const rows = plan.items.flatMap((i) =>
    i.decisions.map((d) => [d.keep ? "keep" : "remove", itemLabel(i.key), d.entry.version, formatLocal(d.time, plan.tz), formatBytes(d.entry.entry.size), d.reasons.map(formatReason).join(", ")]),
  );
  if (rows.length > 0) out(ctx, table(["ACTION", "ITEM", "VERSION", "LOCAL TIME", "SIZE", "KEPT BY"], rows));
  const policy = `policy ${formatPolicy(plan.policy)}, periods in ${plan.tz}`;
  if (result === undefined) {
    out(ctx, `dry run: would remove ${counts.remove} and keep ${counts.keep} version(s) of ${plan.items.length} item(s), ${formatBytes(counts.removeBytes)} (${policy})`);
  } else {
    const freed = result.removed.reduce((n, r) => n + r.bytes, 0);
    out(ctx, `prune: removed ${result.removed.length} and kept ${result.kept} version(s) of ${plan.items.length} item(s), ${formatBytes(freed)} freed (${policy})`);
    for (const f of result.failed) out(ctx, `  failed: ${f.label} ${f.version}: ${f.error}`);
  }
  if (plan.damaged > 0) err(ctx, `warning: ${plan.damaged} damaged version(s) were left alone (run \`incus-backup verify\`)`);
}
