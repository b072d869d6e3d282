// Where each kind of backup lives inside the repository directory (documented in the README).

import { join } from "node:path";
import type { ItemKey, Kind } from "../core/selection";
import type { Version } from "../core/version";

/** The marker file that makes a directory an incus-backup repository. */
export const FORMAT_FILE = "incus-backup.json";
export const REPOSITORY_FORMAT = 1;
/** Versions being written; never listed, emptied by the next writer. */
export const TMP_DIR = ".tmp";
export const LOCK_FILE = "lock.json";

/** The lock, a run's candidate for it (`.lock.json-ID`), a refresh's temp file, a stale lock moved aside. */
export function isLockFileName(name: string): boolean {
  return name === LOCK_FILE || name.startsWith(`.${LOCK_FILE}-`) || name.startsWith(`${LOCK_FILE}.tmp-`);
}
/** Restore journals, so a restore that died half-way is finished or undone by the next run. */
export const JOURNAL_DIR = "journal";
/** One record per backup run (its items and results), for `status`. */
export const RUNS_DIR = "runs";
/** The scheduled service's records (daemon.json, prune.json, verify.json), for `status` and catch-up. */
export const STATE_DIR = "state";

export const KIND_DIRS: Record<Kind, string> = {
  instance: "instances",
  volume: "volumes",
  image: "images",
  database: "database",
};

/**
 * Directory levels under the kind directory before the version level:
 *   instances/PROJECT/NAME/VERSION
 *   volumes/PROJECT/POOL/NAME/VERSION
 *   images/PROJECT/FINGERPRINT/VERSION
 *   database/VERSION
 */
export function itemPath(root: string, item: ItemKey): string {
  switch (item.kind) {
    case "instance":
      return join(root, KIND_DIRS.instance, item.project, item.name);
    case "volume":
      return join(root, KIND_DIRS.volume, item.project, item.pool ?? "", item.name);
    case "image":
      return join(root, KIND_DIRS.image, item.project, item.name);
    case "database":
      return join(root, KIND_DIRS.database);
  }
}

export function versionPath(root: string, item: ItemKey, version: Version): string {
  return join(itemPath(root, item), version);
}

/** How many name levels each kind has between its kind directory and its versions. */
export const KEY_DEPTH: Record<Kind, number> = { instance: 2, volume: 3, image: 2, database: 0 };

/** Rebuilds an item key from the path components under the kind directory. */
export function keyFromParts(kind: Kind, parts: string[]): ItemKey {
  switch (kind) {
    case "instance":
      return { kind, project: parts[0]!, name: parts[1]! };
    case "volume":
      return { kind, project: parts[0]!, pool: parts[1]!, name: parts[2]! };
    case "image":
      return { kind, project: parts[0]!, name: parts[1]! };
    case "database":
      return { kind, project: "", name: "server" };
  }
}
