// The command tree: one subcommand per file, each a thin layer over one engine function.

import { command, subcommands } from "cmd-ts";
import { AppError, ExitCode } from "../errors";
import { VERSION } from "../version";
import { backupCommand } from "./backup";
import type { CliContext } from "./context";
import { listCommand } from "./list";
import { restoreCommand } from "./restore";
import { unlockCommand } from "./unlock";
import { verifyCommand } from "./verify";

/** Commands whose issue has not landed yet: present in the tree so the interface is stable. */
function notYet(name: string, description: string) {
  return command({
    name,
    description,
    args: {},
    handler: async (): Promise<number> => {
      throw new AppError(`"${name}" is not available in this version yet`, ExitCode.Failure);
    },
  });
}

export function buildApp(ctx: CliContext) {
  return subcommands({
    name: "incus-backup",
    version: VERSION,
    description:
      "Back up and restore an Incus server into a directory (a NAS mount). Exit codes: 0 ok, 1 failure, 2 usage, " +
      "3 partial, 4 Incus unreachable, 5 not found, 6 not confirmed, 7 locked, 8 repository, 9 integrity, 130 interrupted.",
    cmds: {
      backup: backupCommand(ctx),
      restore: restoreCommand(ctx),
      list: listCommand(ctx),
      verify: verifyCommand(ctx),
      prune: notYet("prune", "Remove old versions according to a retention policy"),
      daemon: notYet("daemon", "Run scheduled backups (the container's main process)"),
      status: notYet("status", "Show the last run, the next one and the repository size"),
      unlock: unlockCommand(ctx),
    },
  });
}
