// `incus-backup verify`: check backups against their manifests, and optionally read them to the end.

import { command, flag, option, optional, string } from "cmd-ts";
import { ExitCode, UsageError } from "../errors";
import { parseReadData } from "../core/settings";
import { KINDS, itemLabel } from "../core/selection";
import { verifyRun } from "../engine/verify";
import { checkVersionArg, dirArg, openRepository, selectionOf, selectorArgs } from "./common";
import { out, type CliContext } from "./context";
import { formatBytes } from "./format";
import { reporterFor } from "./progress";

export function verifyCommand(ctx: CliContext) {
  return command({
    name: "verify",
    description: "Check every backup file's size and sha256 against its manifest; --deep also reads each archive to the end.",
    examples: [
      { description: "Everything", command: "incus-backup verify --dir=/mnt/nas/sysbackup/incus" },
      { description: "The versions of one day, thoroughly", command: "incus-backup verify --version 20250914 --deep" },
    ],
    args: {
      ...selectorArgs("read"),
      ...dirArg,
      version: option({ long: "version", type: optional(string), description: "only versions starting with this (YYYYMMDD-HHMMSS or a prefix)" }),
      deep: flag({ long: "deep", description: "also decompress and read each archive, and check backup/index.yaml names the item" }),
      readData: option({
        long: "read-data",
        type: optional(string),
        description: "restic repositories: restic check also reads this share of all data: all, a percentage (10%) or a part (1/5)",
      }),
      json: flag({ long: "json", description: "print the results as JSON" }),
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(a, KINDS, true);
      const version = checkVersionArg(a.version);
      const readData = checkReadData(a.readData);
      const store = await openRepository(ctx, a);
      if (readData !== undefined && !store.checkStructure) throw new UsageError("--read-data is for restic repositories (a directory's files are all read by verify)");
      const results = await verifyRun(
        store,
        { selection, ...(version === undefined ? {} : { version }), deep: a.deep, ...(readData === undefined ? {} : { readData }), reporter: reporterFor(ctx, "verify") },
        ctx.signal,
      );
      const failed = results.filter((r) => !r.ok);
      if (a.json) {
        out(ctx, JSON.stringify(results.map((r) => ({ type: r.item.kind, project: r.item.project, ...(r.item.pool ? { pool: r.item.pool } : {}), name: r.item.name, version: r.version, ok: r.ok, problems: r.problems, size: r.bytes, path: r.location })), null, 2));
      } else {
        for (const f of failed) out(ctx, `FAILED ${itemLabel(f.item)} ${f.version}: ${f.problems.join("; ")}`);
        const bytes = results.reduce((n, r) => n + r.bytes, 0);
        out(ctx, `verify: ${results.length - failed.length} of ${results.length} version(s) ok${a.deep ? " (deep)" : ""}, ${formatBytes(bytes)} checked${failed.length ? `, ${failed.length} FAILED` : ""}`);
      }
      if (ctx.signal.aborted) return ExitCode.Interrupted;
      if (failed.length === 0) return ExitCode.OK;
      // Damage found anywhere wins; backups that only could not be read here are this machine's problem.
      return failed.every((f) => f.uncheckable) ? ExitCode.Repository : ExitCode.Integrity;
    },
  });
}

/** --read-data: all, a percentage from 0.1% to 100%, or n/m (restic's --read-data-subset forms). */
export function checkReadData(v: string | undefined): string | undefined {
  return parseReadData(v, "--read-data");
}
