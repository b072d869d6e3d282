// The manifest of one backup version: what it is, where it came from, and its files' checksums.

import { isVersion, type Version } from "./version";
import { KINDS, type ItemKey, type Kind } from "./selection";
import { safePathComponent } from "./names";

export const MANIFEST_FORMAT = 1;
export const MANIFEST_FILE = "manifest.json";
/** sha256sum-compatible list of every file of the version, the manifest included. */
export const SUMS_FILE = "SHA256SUMS";

export interface FileEntry {
  /** File name inside the version directory. */
  name: string;
  size: number;
  sha256: string;
  /** Where the backend keeps the bytes, when the name is not enough (restic: the file's snapshot id). */
  ref?: string;
}

export interface Manifest extends ItemKey {
  format: typeof MANIFEST_FORMAT;
  version: Version;
  /** ISO 8601 time the backup of this item started. */
  created: string;
  tool: { name: "incus-backup"; version: string };
  server: { name?: string; version?: string };
  /** Options that shaped the backup (compression, snapshots, stop mode, ...). */
  options: Record<string, unknown>;
  /** The object as Incus described it at backup time (instance, volume, image, ...). */
  object?: unknown;
  /** Instance status at backup time ("Running", "Stopped", ...). */
  status?: string;
  /** The cluster member the instance or volume was on (absent on a server that is not clustered). */
  member?: string;
  files: FileEntry[];
}

/** The member an Incus object (instance, volume) is on; undefined outside a cluster ("none", ""). */
export function memberOf(object: unknown): string | undefined {
  const loc = (object as { location?: unknown } | null)?.location;
  return typeof loc === "string" && loc !== "" && loc !== "none" ? loc : undefined;
}

/** Checks the shape of a parsed manifest; returns the problem, or undefined if it is sound. */
export function manifestProblem(m: unknown): string | undefined {
  if (typeof m !== "object" || m === null || Array.isArray(m)) return "not a JSON object";
  const o = m as Record<string, unknown>;
  if (o.format !== MANIFEST_FORMAT) return `unsupported manifest format ${JSON.stringify(o.format)}`;
  if (!KINDS.includes(o.kind as Kind)) return `unknown kind ${JSON.stringify(o.kind)}`;
  if (typeof o.project !== "string") return "project is not a string";
  if (typeof o.name !== "string" || safePathComponent(o.name)) return "name is missing or unsafe";
  if (o.pool !== undefined && (typeof o.pool !== "string" || safePathComponent(o.pool))) return "pool is unsafe";
  if (o.member !== undefined && (typeof o.member !== "string" || safePathComponent(o.member))) return "member is unsafe";
  if (typeof o.version !== "string" || !isVersion(o.version)) return "version is missing or malformed";
  if (typeof o.created !== "string" || Number.isNaN(Date.parse(o.created))) return "created is not a date";
  if (!Array.isArray(o.files)) return "files is not a list";
  for (const f of o.files as unknown[]) {
    const e = f as Partial<FileEntry> | null;
    if (!e || typeof e.name !== "string" || safePathComponent(e.name) || e.name === MANIFEST_FILE || e.name === SUMS_FILE) {
      return "a file entry has a bad name";
    }
    if (typeof e.size !== "number" || !Number.isSafeInteger(e.size) || e.size < 0) return `file ${e.name}: bad size`;
    if (typeof e.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(e.sha256)) return `file ${e.name}: bad sha256`;
    if (e.ref !== undefined && (typeof e.ref !== "string" || !/^[0-9a-f]{8,64}$/.test(e.ref))) return `file ${e.name}: bad ref`;
  }
  return undefined;
}
