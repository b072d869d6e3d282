// Taking the repository's lock the way a command needs it: at once (people are told who holds
// it) or waiting for it (the service: a manual run holds it for a while at most).

import { InterruptedError, LockedError, RepositoryError } from "../errors";
import type { HeldLock, Store } from "../repository/store";
import type { Reporter } from "./reporter";

export interface LockWait {
  sleep(ms: number, signal: AbortSignal): Promise<void>;
}

/**
 * Takes the lock. Without `wait`, a held lock fails at once with LockedError naming the holder;
 * with it, the holder is named once and the lock tried again every 5 s until the signal fires.
 * Stale locks are taken over by the store, with a message. A place that is not a repository is
 * refused first (every command that takes the lock writes, and only `init` makes a repository).
 */
export async function takeLock(store: Store, command: string, reporter: Pick<Reporter, "info">, signal: AbortSignal, wait?: LockWait): Promise<HeldLock> {
  await checkRepository(store);
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

/**
 * Refuses a place that is not a repository (`incus-backup init` makes one: an empty directory
 * here is more often a NAS that is not mounted than a new repository), or that is another
 * repository than the one expected.
 */
export async function checkRepository(store: Store, expectedId?: string): Promise<void> {
  if (!(await store.isInitialized())) {
    if (store.notRepositoryError) throw store.notRepositoryError();
    throw new RepositoryError(`${store.location} is not an incus-backup repository (is the NAS mounted?); nothing was written`, {
      hint: `make a new one with \`incus-backup init --dir ${store.location}\``,
    });
  }
  if (expectedId === undefined) return;
  const id = await store.repositoryId();
  if (id !== expectedId) {
    throw new RepositoryError(
      `${store.location} holds ${id === undefined ? "a repository without an id" : `repository ${id}`}, not repository ${expectedId} that this service was set up with; nothing was written`,
      { hint: "mount the right NAS directory there, or run deploy/install.sh again to set the service up with this repository" },
    );
  }
}
