// `incus-backup drill`: restore backups into a scratch project, start them (or compare them), judge, delete.

import { array, command, flag, multioption, option, optional, string } from "cmd-ts";
import { ExitCode, UsageError } from "../errors";
import { DRILL_CHECK_KEY, DRILL_PROJECT, parseLimits } from "../core/drill";
import { itemLabel } from "../core/selection";
import { drillSettingsFromEnv } from "../core/settings";
import { drill, type DrillResult } from "../engine/drill";
import { checkVersionArg, connect, countText, dirArg, openRepository, socketArg } from "./common";
import { selectionFrom } from "../core/selection";
import { err, out, type CliContext } from "./context";
import { writeMetrics } from "./metrics";
import { itemJson } from "./format";
import { reporterFor } from "./progress";
import { VERSION } from "../version";

export function drillCommand(ctx: CliContext) {
  return command({
    name: "drill",
    description:
      `Prove that backups restore: each version is restored into the scratch project ${DRILL_PROJECT}, without NICs or devices that could meet production, ` +
      `started, checked with its ${DRILL_CHECK_KEY} command if it has one, and deleted; a volume is restored and compared with its backup. ` +
      "Without --name, every instance (at most --max, the least recently drilled first). Exits 0 when every drill passed, 3 when some failed, 1 when all did.",
    examples: [
      { description: "Every instance's latest backup", command: "incus-backup drill" },
      { description: "One instance, one day's backup", command: "incus-backup drill --instance --name web --version 20250914" },
      { description: "Three instances, in turn", command: "incus-backup drill --max 3" },
      { description: "Volumes too", command: "incus-backup drill --all" },
    ],
    args: {
      all: flag({ long: "all", description: "instances and custom volumes" }),
      instances: flag({ long: "instances", description: "instances (the default)" }),
      instance: flag({ long: "instance", description: "same as --instances" }),
      volumes: flag({ long: "volumes", description: "custom volumes: restored and compared with their backup, file by file" }),
      volume: flag({ long: "volume", description: "same as --volumes" }),
      names: multioption({ long: "name", type: array(string), description: "only items with this name; repeatable; a volume may be POOL/NAME" }),
      project: option({ long: "project", type: optional(string), description: "only items of this project" }),
      member: option({ long: "member", type: optional(string), description: "in a cluster: only items backed up on this member" }),
      version: option({ long: "version", type: optional(string), description: "the version to drill (YYYYMMDD-HHMMSS or a prefix); default: each item's latest" }),
      max: option({ long: "max", type: optional(countText), description: "without --name: at most N items, the least recently drilled first (default $INCUS_BACKUP_DRILL_MAX, else all)" }),
      timeout: option({ long: "timeout", type: optional(countText), description: "seconds a copy has to start, and its check to end (default $INCUS_BACKUP_DRILL_TIMEOUT, else 120)" }),
      settle: option({ long: "settle", type: optional(countText), description: "seconds a copy must stay running before it passes (default 3)" }),
      limits: multioption({ long: "limit", type: array(string), description: "limits.KEY=VALUE for the copies; repeatable (default $INCUS_BACKUP_DRILL_LIMITS, else limits.cpu=1)" }),
      ...dirArg,
      ...socketArg,
      json: flag({ long: "json", description: "print each drill's result as JSON" }),
    },
    handler: async (a): Promise<number> => {
      const any = a.all || a.instances || a.instance || a.volumes || a.volume;
      const selection = selectionFrom(
        { all: a.all, instances: a.instances || a.instance || !any, volumes: a.volumes || a.volume, names: a.names, project: a.project, member: a.member },
        ["instance", "volume"],
        false,
      );
      const version = checkVersionArg(a.version);
      const env = drillSettingsFromEnv(ctx.env);
      const number = (text: string | undefined, name: string, min: number, max: number) => {
        if (text === undefined) return undefined;
        if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new UsageError(`${name}=${JSON.stringify(text)}: use a whole number from ${min} to ${max}`);
        return Number(text);
      };
      const max = number(a.max, "--max", 1, 10_000) ?? env.max;
      const limits = a.limits.length ? parseLimits(a.limits, "--limit") : env.limits;
      const store = await openRepository(ctx, a);
      const client = connect(ctx, a.socket);
      try {
        const results = await drill(
          { client, store, reporter: reporterFor(ctx, "drill"), now: ctx.now },
          {
            selection,
            ...(version === undefined ? {} : { version }),
            ...(max === undefined ? {} : { max }),
            timeout: number(a.timeout, "--timeout", 1, 86_400) ?? env.timeout,
            settle: number(a.settle, "--settle", 0, 3600) ?? 3,
            limits,
            command: `incus-backup ${VERSION} drill`,
          },
          ctx.signal,
        );
        print(ctx, results, a.json);
        const failed = results.filter((r) => !r.ok).length;
        if (failed === 0) return ExitCode.OK;
        return failed === results.length ? ExitCode.Failure : ExitCode.Partial;
      } finally {
        await client.close();
        await writeMetrics(ctx, store, { warn: (t) => err(ctx, `warning: ${t}`) });
      }
    },
  });
}

function print(ctx: CliContext, results: DrillResult[], json: boolean): void {
  if (json) {
    out(ctx, JSON.stringify(results.map((r) => ({ ...itemJson(r.item), version: r.version, ok: r.ok, ...(r.reason ? { reason: r.reason } : {}), ...(r.output ? { output: r.output } : {}), dropped: r.dropped, timings: r.timings })), null, 2));
    return;
  }
  for (const r of results) {
    const t = r.timings;
    const parts = [t.import !== undefined ? `import ${t.import} s` : "", t.boot !== undefined ? `running ${t.boot} s` : "", t.check !== undefined ? `check ${t.check} s` : "", t.compare !== undefined ? `compare ${t.compare} s` : ""].filter(Boolean);
    const dropped = r.dropped.length ? `; the copy had no ${r.dropped.join(", ")}` : "";
    out(ctx, `${r.ok ? "PASS" : "FAIL"}  ${itemLabel(r.item)} ${r.version}${r.ok ? "" : `: ${r.reason}`} (${parts.join(", ") || `${t.total} s`})${dropped}`);
    if (!r.ok && r.output) for (const l of r.output.split("\n")) out(ctx, `        ${l}`);
  }
  const passed = results.filter((r) => r.ok).length;
  out(ctx, `drill: ${passed} of ${results.length} passed`);
}
