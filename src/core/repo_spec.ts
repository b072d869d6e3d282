// Which repository the user means: `--repo restic:LOCATION`, `--repo dir:PATH`, a bare `--repo PATH`,
// `--dir PATH`, or the INCUS_BACKUP_REPO and INCUS_BACKUP_DIR variables.

import { UsageError } from "../errors";

export type RepoSpec = { backend: "dir"; path: string } | { backend: "restic"; location: string };

/** restic's own location prefixes: given bare, they are almost surely meant for restic, not as a directory. */
const RESTIC_SCHEMES = /^(sftp|rest|s3|b2|azure|gs|swift|rclone):/;

/** Parses one repository string. */
export function parseRepoSpec(text: string, from = "--repo"): RepoSpec {
  if (text === "") throw new UsageError(`${from} is empty`);
  if (text.startsWith("restic:")) {
    const location = text.slice("restic:".length);
    if (location === "") throw new UsageError(`${from}=restic: needs a restic repository after the colon (a path, sftp:…, rest:…, s3:…)`);
    return { backend: "restic", location };
  }
  if (text.startsWith("dir:")) {
    const path = text.slice("dir:".length);
    if (path === "") throw new UsageError(`${from}=dir: needs a directory after the colon`);
    return { backend: "dir", path };
  }
  if (RESTIC_SCHEMES.test(text)) {
    throw new UsageError(`${from}=${text}: for a restic repository write restic:${text} (a bare value is a directory)`);
  }
  return { backend: "dir", path: text };
}

/** The repository from --repo, --dir, $INCUS_BACKUP_REPO or $INCUS_BACKUP_DIR, in that order. */
export function repoSpecFrom(args: { repo?: string | undefined; dir?: string | undefined }, env: Readonly<Record<string, string | undefined>>): RepoSpec {
  if (args.repo !== undefined && args.dir !== undefined) throw new UsageError("give --repo or --dir, not both");
  if (args.repo !== undefined) return parseRepoSpec(args.repo);
  if (args.dir !== undefined) {
    if (args.dir === "") throw new UsageError("--dir is empty");
    return { backend: "dir", path: args.dir };
  }
  const repo = env.INCUS_BACKUP_REPO;
  if (repo !== undefined && repo !== "") return parseRepoSpec(repo, "INCUS_BACKUP_REPO");
  const dir = env.INCUS_BACKUP_DIR;
  if (dir !== undefined && dir !== "") return { backend: "dir", path: dir };
  throw new UsageError("no repository: pass --repo (restic:LOCATION or a directory) or --dir DIR, or set INCUS_BACKUP_REPO or INCUS_BACKUP_DIR");
}

/** Text for people with the credentials of any URL in it left out (rest:https://user:secret@host/ → rest:https://host/). */
export function withoutCredentials(text: string): string {
  return text.replace(/((?:rest:)?[a-z][a-z0-9+.-]*:\/\/)[^/@\s]*@/gi, "$1");
}

/** The spec as the user would write it again, for people: credentials in a URL are left out. */
export function repoSpecText(spec: RepoSpec): string {
  return spec.backend === "restic" ? `restic:${withoutCredentials(spec.location)}` : spec.path;
}
