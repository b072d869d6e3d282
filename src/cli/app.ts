// The command tree: one subcommand per file, each a thin layer over one engine function.

import { subcommands } from "cmd-ts";
import { VERSION } from "../version";
import { backupCommand } from "./backup";
import type { CliContext } from "./context";
import { daemonCommand } from "./daemon";
import { filesCommand } from "./files";
import { initCommand } from "./init";
import { listCommand } from "./list";
import { pruneCommand } from "./prune";
import { restoreCommand } from "./restore";
import { statusCommand } from "./status";
import { unlockCommand } from "./unlock";
import { verifyCommand } from "./verify";
import { drillCommand } from "./drill";

export function buildApp(ctx: CliContext) {
  return subcommands({
    name: "incus-backup",
    version: VERSION,
    description:
      "Back up and restore an Incus server into a directory (a NAS mount). Exit codes: 0 ok, 1 failure, 2 usage, " +
      "3 partial, 4 Incus unreachable, 5 not found, 6 not confirmed, 7 locked, 8 repository, 9 integrity, 130 interrupted (status also 10-13, see its help).",
    cmds: {
      init: initCommand(ctx),
      backup: backupCommand(ctx),
      restore: restoreCommand(ctx),
      list: listCommand(ctx),
      files: filesCommand(ctx),
      verify: verifyCommand(ctx),
      drill: drillCommand(ctx),
      prune: pruneCommand(ctx),
      daemon: daemonCommand(ctx),
      status: statusCommand(ctx),
      unlock: unlockCommand(ctx),
    },
  });
}
