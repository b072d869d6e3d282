// `incus-backup unlock`: remove the repository lock by hand, when its holder is known to be gone.

import { command } from "cmd-ts";
import { ExitCode } from "../errors";
import { describeLock } from "../repository/lock";
import { dirArg, openRepository } from "./common";
import { err, type CliContext } from "./context";

export function unlockCommand(ctx: CliContext) {
  return command({
    name: "unlock",
    description: "Remove the repository lock. Only for a lock whose run is known to be gone (stale locks are taken over anyway).",
    args: { ...dirArg },
    handler: async (a): Promise<number> => {
      const store = await openRepository(ctx, a);
      const info = await store.forceUnlock();
      err(ctx, info ? `removed the lock: it was ${describeLock(info)}` : "the repository was not locked");
      return ExitCode.OK;
    },
  });
}
