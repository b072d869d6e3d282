// What every writer of the repository does first, while it holds the lock.

import type { IncusClient } from "../incus/client";
import type { Store } from "../repository/store";
import type { Reporter } from "./reporter";
import { recoverJournals } from "./restore";

/**
 * Removes versions a killed run left unfinished, and finishes or undoes restores that died
 * half-way. Returns what it did, for the log.
 */
export async function tidyRepository(deps: { client: IncusClient; store: Store; reporter: Reporter; now: () => Date }): Promise<string[]> {
  const said: string[] = [];
  const leftovers = await deps.store.cleanupTemp();
  if (leftovers.length > 0) said.push(`removed ${leftovers.length} unfinished backup file(s) left by an earlier run`);
  said.push(...(await recoverJournals(deps)));
  return said;
}
