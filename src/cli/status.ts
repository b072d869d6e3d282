// `incus-backup status`: the last run, what runs now, the next run, policy, last prune and verify, repository size; problems as exit codes.

import { command, flag } from "cmd-ts";
import { hostname } from "node:os";
import { UsageError } from "../errors";
import { healthExitCode } from "../core/health";
import { ENV, settingsFromEnv, systemTimeZone, timeZoneFromEnv, type Settings } from "../core/settings";
import { checkTimeZone, formatLocal, formatPolicy } from "../core/retention";
import { gatherStatus, type StatusReport } from "../engine/status";
import { describeOwner } from "../engine/ownership";
import { envInstallId } from "../local/identity";
import { pidAlive, processGone } from "../repository/lock";
import { dirArg, repoSpec } from "./common";
import { repoSpecText } from "../core/repo_spec";
import { openStore } from "../repository/open";
import { out, type CliContext } from "./context";
import { formatBytes, formatDuration } from "./format";

export function statusCommand(ctx: CliContext) {
  return command({
    name: "status",
    description:
      "Show the last run and its items, a run in progress, the next scheduled run, the retention policy, the last prune, verify and restore drills, the repository size, and the problems found. " +
      "For monitoring (a Nagios-style check, cron), the exit code is the first problem of: 2 the service's settings are invalid (it then schedules nothing); " +
      "8 the repository cannot be read, is not one (an unmounted NAS), or is not the one the service was set up with; " +
      "12 the service is not running (it stopped, its process is gone, or, where its settings are set, it never started on this repository); " +
      "11 overdue: no successful or partial run started since the latest scheduled time, which is more than an hour plus the last such run's duration ago (only with a schedule); " +
      "10 the last run failed, was partial or interrupted, or died; 13 the last restore drill of an item failed. 0 when none applies. --json lists every problem with its code.",
    examples: [
      { description: "In the deployed container", command: "incus exec backup -- incus-backup status" },
      { description: "For monitoring", command: "incus exec backup -- incus-backup status --json" },
      { description: "A check for cron or Nagios: nonzero is a problem", command: "incus exec backup -- incus-backup status >/dev/null || echo \"backup problem: exit $?\"" },
    ],
    args: {
      ...dirArg,
      json: flag({ long: "json", description: "print the status as JSON" }),
    },
    handler: async (a): Promise<number> => {
      const spec = repoSpec(ctx, a);
      const dir = repoSpecText(spec);
      const system = systemTimeZone(ctx.env);
      let settings: Settings | undefined;
      let settingsError: string | undefined;
      // The service's settings count only where the service runs: deploy/install.sh always sets
      // the schedule, so without it this is a run by hand (on the host, say).
      if (ctx.env[ENV.schedule] !== undefined) {
        try {
          settings = settingsFromEnv(ctx.env, system);
        } catch (err) {
          if (!(err instanceof UsageError)) throw err;
          settingsError = err.message;
        }
      }
      let tz = system;
      try {
        tz = checkTimeZone(timeZoneFromEnv(ctx.env, system));
      } catch {
        // a bad INCUS_BACKUP_TZ is shown as the settings error; times are then in the system's zone
      }
      const install = await envInstallId(ctx.env, { create: false });
      const report = await gatherStatus({
        location: dir,
        open: () => openStore(spec, { create: false, env: ctx.env }),
        now: ctx.now(),
        tz,
        host: hostname(),
        ...(install === undefined ? {} : { install }),
        pidAlive,
        processGone,
        ...(settings ? { settings } : {}),
        ...(settingsError ? { settingsError } : {}),
      });
      out(ctx, a.json ? JSON.stringify(report, null, 2) : formatStatus(report));
      return healthExitCode(report.problems);
    },
  });
}

/** The text form: one labelled line per topic, the last run's items indented below it. */
export function formatStatus(r: StatusReport): string {
  const at = (iso: string) => formatLocal(new Date(iso), r.tz);
  const lines: Array<[string, string]> = [];
  const add = (label: string, value: string) => lines.push([label, value]);
  const repo = r.repository;
  if (repo.error) add("repository", `${repo.dir}: ERROR: ${repo.error}`);
  else {
    add(
      "repository",
      `${repo.dir}: ${repo.items} item(s), ${repo.versions} version(s), ${formatBytes(repo.size)}${repo.damaged ? `, ${repo.damaged} DAMAGED (run \`incus-backup verify\`)` : ""}${repo.id ? ` (id ${repo.id})` : ""}`,
    );
  }
  if (repo.server) add("server", `the backups of ${describeOwner(repo.server)}, since ${at(repo.server.since)}`);
  if (r.settingsError) add("settings", `ERROR: ${r.settingsError}; nothing is scheduled until this is fixed`);
  add("running", r.running ? `${r.running.command}: pid ${r.running.pid} on ${r.running.host} since ${at(r.running.since)}` : "nothing");
  const run = r.lastRun;
  const itemLines: string[] = [];
  if (run) {
    const items = run.items ?? [];
    const ok = items.filter((i) => i.ok);
    const bytes = ok.reduce((n, i) => n + (i.bytes ?? 0), 0);
    const took = run.finished ? ` (${formatDuration((Date.parse(run.finished) - Date.parse(run.started)) / 1000)})` : "";
    const end = run.finished ? ` to ${at(run.finished)}` : "";
    add("last run", `${run.version} ${run.status.toUpperCase()}: ${at(run.started)}${end}${took}, ${ok.length} of ${items.length} item(s), ${formatBytes(bytes)}`);
    for (const i of items) {
      // A volume keyed by its member says so in its label already.
      const how = [i.member && !i.label.endsWith(` on ${i.member}`) ? `on ${i.member}` : "", i.mode === "stop" ? "stopped" : "", i.snapshots ? "with snapshots" : ""].filter(Boolean).join(", ");
      itemLines.push(i.ok ? `ok      ${i.label}  ${formatBytes(i.bytes ?? 0)}  ${formatDuration(i.seconds ?? 0)}${how ? `  (${how})` : ""}` : `FAILED  ${i.label}: ${i.error ?? "?"}`);
    }
    for (const x of run.skipped ?? []) itemLines.push(`skipped ${x.label}: ${x.reason}`);
  } else add("last run", "none yet");
  const lastRunIndex = lines.length;
  const s = r.schedule;
  if (s) {
    const next = s.next ? at(s.next) : "not planned (the service is not running)";
    const from = s.source === "daemon" ? ", as the service last planned it" : "";
    const catchUp = s.catchUp === null ? "" : `, catch-up ${s.catchUp ? "on" : "off"}`;
    add("next run", `${next} (schedule "${s.expression}" in ${s.tz}${catchUp}${from})`);
  } else add("next run", "no schedule here (the service's settings are not set)");
  if (r.policy) add("policy", `keep ${formatPolicy(r.policy)}${r.policy.source === "default" ? " (default)" : r.policy.source === "last prune" ? " (of the last prune)" : ""}`);
  if (r.images !== null) add("images", r.images ? "included in scheduled backups" : "not included in scheduled backups");
  const p = r.lastPrune;
  if (p) {
    const failed = p.failed.length ? `, ${p.failed.length} could not be removed` : "";
    add("last prune", `${at(p.finished)} (${p.trigger}): removed ${p.removed}, kept ${p.kept}, ${formatBytes(p.bytesFreed)} freed${failed}${p.interrupted ? ", interrupted" : ""}`);
  } else add("last prune", "none yet");
  const v = r.verify;
  const vParts: string[] = [];
  if (v.expression) vParts.push(`schedule "${v.expression}"${v.deep ? " (deep)" : ""}${v.next ? `, next ${at(v.next)}` : ""}`);
  if (v.last) {
    const bad = v.last.failed.length;
    vParts.push(`last ${at(v.last.finished)}: ${v.last.ok} of ${v.last.checked} version(s) ok${bad ? `, ${bad} FAILED` : ""}${v.last.interrupted ? ", interrupted" : ""}`);
  }
  add("verify", vParts.length ? vParts.join("; ") : "not scheduled");
  const verifyIndex = lines.length;
  const dr = r.drills;
  const dParts: string[] = [];
  if (dr.expression) dParts.push(`schedule "${dr.expression}"${dr.next ? `, next ${at(dr.next)}` : ""}`);
  if (dr.last) dParts.push(`last ${at(dr.last.finished)}: ${dr.last.passed} of ${dr.last.drilled} passed${dr.last.interrupted ? ", interrupted" : ""}`);
  const failing = dr.items.filter((i) => !i.ok);
  if (dr.items.length) dParts.push(`${dr.items.length - failing.length} of ${dr.items.length} item(s) passed their last drill`);
  add("drills", dParts.length ? dParts.join("; ") : "none yet (incus-backup drill)");
  const drillsIndex = lines.length;
  if (r.notify) add("notify", `${r.notify.target} on ${r.notify.when}`);
  if (r.daemon) {
    const d = r.daemon;
    if (d.stopped) add("service", `stopped at ${at(d.stopped)} (pid ${d.pid} on ${d.host})`);
    else if (d.alive === false) add("service", `NOT RUNNING: pid ${d.pid} on ${d.host}, started ${at(d.started)}, is gone`);
    else add("service", `pid ${d.pid} on ${d.host} since ${at(d.started)}`);
  }
  add("health", r.problems.length === 0 ? "ok" : `${r.problems.length} problem(s), exit ${healthExitCode(r.problems)}`);
  const problemsIndex = lines.length;
  const width = Math.max(...lines.map(([l]) => l.length));
  const text = lines.map(([l, val]) => `${l.padEnd(width)}  ${val}`);
  const indent = " ".repeat(width + 4);
  // Each block goes under its line, the lowest first so that the indexes above still hold.
  text.splice(problemsIndex, 0, ...r.problems.map((p) => `${indent}${p.code}  ${p.message}`));
  text.splice(drillsIndex, 0, ...failing.map((f) => `${indent}FAILED  ${f.label} ${f.version} at ${at(f.finished)}: ${f.reason ?? "?"}`));
  text.splice(verifyIndex, 0, ...(v.last?.failed ?? []).map((f) => `${indent}FAILED  ${f.label} ${f.version}: ${f.problems.join("; ")}`));
  text.splice(lastRunIndex, 0, ...itemLines.map((l) => indent + l));
  return text.join("\n");
}

