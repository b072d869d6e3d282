// Where each kind of backup lives inside the repository directory (documented in the README).

import { join } from "node:path";
import { safePathComponent } from "../core/names";
import { AppError, ExitCode } from "../errors";
import { keyMember, type ItemKey, type Kind } from "../core/selection";
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
 * A volume's versions of one cluster member live in a directory of their own under the volume's:
 * `@` and the member. A version is named by digits, so the two never meet.
 */
export const MEMBER_PREFIX = "@";

/**
 * Directory levels under the kind directory before the version level:
 *   instances/PROJECT/NAME/VERSION
 *   volumes/PROJECT/POOL/NAME/VERSION           (outside a cluster, or on a remote pool)
 *   volumes/PROJECT/POOL/NAME/@MEMBER/VERSION   (a cluster's local pool: one volume of a name per member)
 *   images/PROJECT/FINGERPRINT/VERSION
 *   database/VERSION
 * A cluster's volumes backed up before they were keyed by member are in the first volume form;
 * their manifests name the member (directory.ts lists them with it).
 */
export function itemPath(root: string, item: ItemKey): string {
  switch (item.kind) {
    case "instance":
      return join(root, KIND_DIRS.instance, item.project, item.name);
    case "volume": {
      const dir = join(root, KIND_DIRS.volume, item.project, item.pool ?? "", item.name);
      const member = keyMember(item);
      if (member === undefined) return dir;
      const problem = safePathComponent(member);
      if (problem) throw new AppError(`cluster member name ${JSON.stringify(member)} cannot be a directory name: it ${problem}`, ExitCode.Failure);
      return join(dir, `${MEMBER_PREFIX}${member}`);
    }
    case "image":
      return join(root, KIND_DIRS.image, item.project, item.name);
    case "database":
      return join(root, KIND_DIRS.database);
  }
}

/** The member a directory under a volume's is for (`@MEMBER`), or undefined for any other name. */
export function memberOfDir(name: string): string | undefined {
  if (!name.startsWith(MEMBER_PREFIX)) return undefined;
  const member = name.slice(MEMBER_PREFIX.length);
  return safePathComponent(member) === undefined ? member : undefined;
}

export function versionPath(root: string, item: ItemKey, version: Version): string {
  return join(itemPath(root, item), version);
}

/** How many name levels each kind has between its kind directory and its versions. */
export const KEY_DEPTH: Record<Kind, number> = { instance: 2, volume: 3, image: 2, database: 0 };

/** Rebuilds an item key from the path components under the kind directory (a volume's member is a level below: memberOfDir). */
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
