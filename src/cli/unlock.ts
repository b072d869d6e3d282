// `incus-backup unlock`: remove the repository lock by hand, when its holder is known to be gone.

import { command, flag } from "cmd-ts";
import { ExitCode, LockedError } from "../errors";
import { envInstallId } from "../local/identity";
import { describeLock, staleReason } from "../repository/lock";
import { dirArg, openRepository } from "./common";
import { err, type CliContext } from "./context";

export function unlockCommand(ctx: CliContext) {
  return command({
    name: "unlock",
    description:
      "Remove the repository lock of a run that is gone. A lock that looks alive (refreshed lately, and not a run of this install that has ended) stays unless --force; stale locks are taken over anyway.",
    args: {
      ...dirArg,
      force: flag({ long: "force", description: "remove the lock even if its run looks alive (only when you know it is gone, e.g. its host is off)" }),
    },
    handler: async (a): Promise<number> => {
      const store = await openRepository(ctx, a);
      const holder = await store.lockHolder();
      if (holder && !a.force) {
        const now = ctx.now();
        const stale = staleReason(holder, now, { install: await envInstallId(ctx.env, { create: false }) });
        if (!stale) {
          const ago = Math.max(0, Math.round((now.getTime() - Date.parse(holder.refreshed)) / 1000));
          throw new LockedError(`the repository is ${describeLock(holder)}, refreshed ${ago} s ago: that run looks alive, so the lock stays`, {
            hint: "wait for that run to end, or stop it; if it is gone for sure (its host is off, say), run `incus-backup unlock --force`",
          });
        }
      }
      const info = await store.forceUnlock({ force: a.force });
      err(ctx, info ? `removed the lock: it was ${describeLock(info)}` : "the repository was not locked");
      return ExitCode.OK;
    },
  });
}
