// Taking the repository's lock the way a command needs it: at once (people are told who holds
// it) or waiting for it (the service: a manual run holds it for a while at most).

import { InterruptedError, LockedError } from "../errors";
import type { HeldLock, Store } from "../repository/store";
import type { Reporter } from "./reporter";

export interface LockWait {
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

/**
 * Takes the lock. Without `wait`, a held lock fails at once with LockedError naming the holder;
 * with it, the holder is named once and the lock tried again every 5 s until the signal fires.
 * Stale locks are taken over by the store, with a message.
 */
export async function takeLock(store: Store, command: string, reporter: Pick<Reporter, "info">, signal: AbortSignal, wait?: LockWait): Promise<HeldLock> {
  let told = false;
  for (;;) {
    if (signal.aborted) throw new InterruptedError();
    try {
      return await store.lock(command, { onMessage: (t) => reporter.info(t) });
    } catch (err) {
      if (!(err instanceof LockedError) || !wait) throw err;
      if (!told) reporter.info(`waiting: ${err.message}`);
      told = true;
      await wait.sleep(5_000, signal);
    }
  }
}
