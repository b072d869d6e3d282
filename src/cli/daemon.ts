// `incus-backup daemon`: the container's main process; backs up, prunes and verifies on the configured schedules.

import { command } from "cmd-ts";
import { hostname } from "node:os";
import { envInstallId, selfIdentity } from "../local/identity";
import { ExitCode, UsageError } from "../errors";
import type { ItemKey } from "../core/selection";
import { formatLocal } from "../core/retention";
import { settingsFromEnv, systemTimeZone } from "../core/settings";
import { runDaemon, serviceDeps, type ServiceContext } from "../engine/daemon";
import type { ItemOutcome, Reporter } from "../engine/reporter";
import { VERSION } from "../version";
import { connect, dirArg, repoSpec, socketArg } from "./common";
import { repoSpecText } from "../core/repo_spec";
import { openStore } from "../repository/open";
import type { Store } from "../repository/store";
import type { CliContext } from "./context";
import { outcomeLine } from "./progress";
import { publishMetrics } from "../engine/metrics";
import { metricsWriter } from "../local/metrics_file";

export function daemonCommand(ctx: CliContext) {
  return command({
    name: "daemon",
    description:
      "Run the scheduled service in the foreground (the incus-backup container's main process): back up and prune on INCUS_BACKUP_SCHEDULE, " +
      "verify on INCUS_BACKUP_VERIFY_SCHEDULE, catch up once after downtime, notify INCUS_BACKUP_NOTIFY_URL. Logs one timestamped line per event on stdout. " +
      "Settings: INCUS_BACKUP_SCHEDULE, INCUS_BACKUP_TZ, INCUS_BACKUP_KEEP_{LAST,HOURLY,DAILY,WEEKLY,MONTHLY,YEARLY}, INCUS_BACKUP_IMAGES, INCUS_BACKUP_PARALLEL, " +
      "INCUS_BACKUP_NOTIFY_URL, INCUS_BACKUP_NOTIFY (failure|always), INCUS_BACKUP_CATCHUP, INCUS_BACKUP_VERIFY_SCHEDULE, INCUS_BACKUP_VERIFY_DEEP, " +
      "INCUS_BACKUP_METRICS_FILE (a Prometheus text file for node_exporter's textfile collector, rewritten after each backup and prune), " +
      "INCUS_BACKUP_VERIFY_READ_DATA (restic: the share of the data restic check reads, all, N% or n/m; a part n/m moves on to the next part each time), INCUS_BACKUP_SELF, " +
      "INCUS_BACKUP_REPO (restic:LOCATION or a directory; else INCUS_BACKUP_DIR), INCUS_BACKUP_REPOSITORY_ID (the id `incus-backup init` printed: a directory holding another repository, or none, is refused; deploy/install.sh sets it).",
    args: { ...dirArg, ...socketArg },
    handler: async (a): Promise<number> => {
      const system = systemTimeZone(ctx.env);
      let tz = system;
      const log = (line: string) => ctx.stdout.write(`${formatLocal(ctx.now(), tz)} ${line}\n`);
      let service: ServiceContext;
      try {
        const settings = settingsFromEnv(ctx.env, system);
        tz = settings.schedule.tz;
        const spec = repoSpec(ctx, a);
        const reporter = logReporter(log, "backup", false);
        const write = metricsWriter(ctx.env);
        service = {
          location: repoSpecText(spec),
          // Never made a repository here: `incus-backup init` (deploy/install.sh runs it) does.
          openStore: () => openStore(spec, { create: false, env: ctx.env }),
          connect: () => connect(ctx, a.socket),
          now: ctx.now,
          sleep,
          log,
          reporter,
          ...(write ? { publishMetrics: (store: Store | undefined) => publishMetrics(store, write, reporter) } : {}),
          verifyReporter: logReporter(log, "verify", true),
          settings,
          toolVersion: VERSION,
        };
      } catch (err) {
        if (!(err instanceof UsageError)) throw err;
        // Exiting would stop the container and hide the reason; stay up, say why, do nothing.
        log(`error: ${err.message}; nothing is scheduled until the settings are fixed (incus config set NAME environment.VARIABLE=..., then restart)`);
        while (!ctx.signal.aborted) await sleep(2 ** 31 - 1, ctx.signal);
        return ExitCode.Usage;
      }
      const id = service.settings.repositoryId;
      log(`incus-backup ${VERSION} daemon, repository ${service.location}${id ? ` (id ${id})` : " (any repository there: INCUS_BACKUP_REPOSITORY_ID is not set)"}`);
      const r = await runDaemon(serviceDeps(service, { host: hostname(), pid: process.pid, ...selfIdentity(await envInstallId(ctx.env)) }), service.settings, ctx.signal);
      return r.interrupted ? ExitCode.Interrupted : ExitCode.OK;
    },
  });
}

/** Resolves after `ms` (in steps setTimeout can take), or as soon as `signal` fires. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    let timer: NodeJS.Timeout;
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    timer = setTimeout(done, Math.min(ms, 2 ** 31 - 1));
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Item events as log lines: one per finished item (only failures when `failuresOnly`). */
function logReporter(log: (line: string) => void, verb: string, failuresOnly: boolean): Reporter {
  return {
    itemStart() {},
    itemStep() {},
    itemBytes() {},
    itemDone(item: ItemKey, o: ItemOutcome) {
      if (!failuresOnly || !o.ok) log(outcomeLine(verb, item, o));
    },
    info: (text) => log(text),
    warn: (text) => log(`warning: ${text}`),
  };
}
