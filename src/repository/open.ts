// Opening a store from what the user gave: for now a directory (--dir, INCUS_BACKUP_DIR).

import { resolve } from "node:path";
import { DirectoryStore } from "./directory";
import type { Store } from "./store";

/**
 * Opens the store at `location`. The place must exist; with `create`, an empty one is made a
 * repository, and a non-empty one that is not a repository is refused either way.
 */
export async function openStore(location: string, options: { create: boolean }): Promise<Store> {
  return (await DirectoryStore.open(resolve(location), options)).repo;
}
