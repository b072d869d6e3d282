// Opening a store from what the user gave (see core/repo_spec.ts): a directory, or a restic repository.

import { join, resolve } from "node:path";
import type { RepoSpec } from "../core/repo_spec";
import { DEFAULT_STATE_DIR } from "../local/identity";
import { DirectoryStore } from "./directory";
import { RESTIC_CHILDREN_FILE } from "./restic/locks";
import { parseConnectTimeout } from "./restic/run";
import { ResticStore } from "./restic/store";
import type { Store } from "./store";

/**
 * Opens the store `spec` names. A directory must exist; with `create`, an empty one is made a
 * repository, and a non-empty one that is not a repository is refused either way. A restic
 * repository is opened lazily: the first call that needs it runs restic.
 */
export async function openStore(where: RepoSpec | string, options: { create: boolean; env?: NodeJS.ProcessEnv }): Promise<Store> {
  const spec: RepoSpec = typeof where === "string" ? { backend: "dir", path: where } : where;
  const env = options.env ?? process.env;
  const stateDir = env.INCUS_BACKUP_STATE_DIR || DEFAULT_STATE_DIR;
  if (spec.backend === "dir") return (await DirectoryStore.open(resolve(spec.path), { create: options.create, stateDir, env })).repo;
  const location = /^[a-z0-9]+:/i.test(spec.location) ? spec.location : resolve(spec.location);
  return new ResticStore(
    {
      repository: location,
      binary: env.INCUS_BACKUP_RESTIC || "restic",
      env,
      connectTimeoutMs: parseConnectTimeout(env.INCUS_BACKUP_RESTIC_CONNECT_TIMEOUT),
      children: join(stateDir, RESTIC_CHILDREN_FILE),
    },
    stateDir,
  );
}
