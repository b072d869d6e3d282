// How versions live in a restic repository: every file of a version is one `backup --stdin`
// snapshot, and the version becomes visible only with its manifest snapshot, saved last, whose tags
// carry the manifest itself (so `list` is one `restic snapshots` call, not one call per version).

import { deflateRawSync, inflateRawSync } from "node:zlib";
import { manifestProblem, type Manifest } from "../../core/manifest";
import { KINDS, keyMember, type ItemKey, type Kind } from "../../core/selection";
import type { Version } from "../../core/version";
import { isServerOwner, type ServerOwner } from "../store";

/** Every snapshot this tool makes has this tag; anything else in the repository is left alone. */
export const TOOL_TAG = "incus-backup";
export const DATA_TAG = "incus-backup-data";
export const MANIFEST_TAG = "incus-backup-manifest";
/** A small snapshot naming the server whose backups the repository holds; the newest one counts. */
export const OWNER_TAG = "incus-backup-owner";
const OWNER_PREFIX = "owner=";
const ITEM_PREFIX = "item=";
const VERSION_PREFIX = "version=";
const FILE_PREFIX = "file=";
const MANIFEST_PREFIX = "m=";
const INSTALL_PREFIX = "install=";
/** A command-line argument may be at most 128 KiB (MAX_ARG_STRLEN); the manifest tag stays well below. */
export const MAX_MANIFEST_TAG = 100 * 1024;

/** A snapshot as `restic snapshots --json` lists it (the fields used here, on 0.14 and newer). */
export interface ResticSnapshot {
  id: string;
  short_id?: string;
  time: string;
  hostname?: string;
  tags?: string[] | null;
  paths?: string[];
}

/** Tags are split at commas by restic; names are URI-encoded, which leaves none. */
function tagSafe(text: string): string {
  return encodeURIComponent(text);
}

/**
 * An item as a tag value: kind/project/pool/name, each part URI-encoded (readable in `restic
 * snapshots`), and /member for a volume keyed by its cluster member (selection.ts, ItemKey).
 */
export function itemTag(key: ItemKey): string {
  const member = keyMember(key);
  return [key.kind, key.project, key.kind === "volume" ? (key.pool ?? "") : "", key.name, ...(member === undefined ? [] : [member])].map(tagSafe).join("/");
}

/** An item key back from its tag (itemTag); undefined if it is not one. Tags written before volumes were keyed by member have four parts. */
export function keyOfTag(tag: string | undefined): ItemKey | undefined {
  const parts = tag?.split("/");
  if (parts === undefined || (parts.length !== 4 && parts.length !== 5)) return undefined;
  let decoded: string[];
  try {
    decoded = parts.map((p) => decodeURIComponent(p));
  } catch {
    return undefined;
  }
  const [kind, project, pool, name, member] = decoded as [string, string, string, string, string | undefined];
  if (!KINDS.includes(kind as Kind)) return undefined;
  if (member !== undefined && (kind !== "volume" || member === "")) return undefined;
  return { kind: kind as Kind, project, name, ...(pool === "" ? {} : { pool }), ...(member === undefined ? {} : { member }) };
}

/**
 * A data snapshot's tags. `install`: the writer's install id (src/local/identity.ts), so that an
 * unfinished write is told apart from another host's in-flight one even when both hosts have the
 * same name (every deployed container is called `backup`).
 */
export function dataTags(key: ItemKey, version: Version, file: string, install?: string): string[] {
  const tags = [TOOL_TAG, DATA_TAG, `${ITEM_PREFIX}${itemTag(key)}`, `${VERSION_PREFIX}${version}`, `${FILE_PREFIX}${tagSafe(file)}`];
  if (install !== undefined) tags.push(`${INSTALL_PREFIX}${install}`);
  return tags;
}

/** The install id a data snapshot was written by, if it says. */
export function snapshotInstall(s: ResticSnapshot): string | undefined {
  return tagValue(s, INSTALL_PREFIX);
}

/** The manifest snapshot's tags, or undefined when the manifest is too large to be a tag. */
export function manifestTags(manifest: Manifest): string[] | undefined {
  const packed = deflateRawSync(Buffer.from(JSON.stringify(manifest))).toString("base64url");
  if (packed.length > MAX_MANIFEST_TAG) return undefined;
  return [TOOL_TAG, MANIFEST_TAG, `${ITEM_PREFIX}${itemTag(manifest)}`, `${VERSION_PREFIX}${manifest.version}`, `${MANIFEST_PREFIX}${packed}`];
}

export function tagValue(s: ResticSnapshot, prefix: string): string | undefined {
  const t = (s.tags ?? []).find((x) => x.startsWith(prefix));
  return t === undefined ? undefined : t.slice(prefix.length);
}

export function isManifestSnapshot(s: ResticSnapshot): boolean {
  return (s.tags ?? []).includes(MANIFEST_TAG);
}

export function isDataSnapshot(s: ResticSnapshot): boolean {
  return (s.tags ?? []).includes(DATA_TAG);
}

export function snapshotVersion(s: ResticSnapshot): string | undefined {
  return tagValue(s, VERSION_PREFIX);
}

export function snapshotItem(s: ResticSnapshot): string | undefined {
  return tagValue(s, ITEM_PREFIX);
}

/** The manifest a manifest snapshot carries, checked; or the problem with it. */
export function manifestOf(s: ResticSnapshot): Manifest | string {
  const packed = tagValue(s, MANIFEST_PREFIX);
  if (packed === undefined) return "the manifest snapshot has no manifest tag";
  let m: unknown;
  try {
    m = JSON.parse(inflateRawSync(Buffer.from(packed, "base64url")).toString("utf8"));
  } catch {
    return "the manifest tag cannot be decoded";
  }
  const problem = manifestProblem(m);
  if (problem) return `manifest: ${problem}`;
  const manifest = m as Manifest;
  // A cluster's volume saved before volumes were keyed by member has the four-part tag; its manifest names the member.
  const tag = snapshotItem(s);
  const legacy = manifest.kind === "volume" && tag === itemTag({ ...manifest, member: undefined });
  if (snapshotVersion(s) !== manifest.version || (tag !== itemTag(manifest) && !legacy)) return "the manifest describes another item or version than its tags";
  for (const f of manifest.files) if (typeof f.ref !== "string" || !/^[0-9a-f]{8,64}$/.test(f.ref)) return `file ${f.name} has no snapshot id`;
  return manifest;
}

/** Whether a (full) snapshot id is the one a reference names (0.14 reports 8-character ids). */
export function refMatches(ref: string, s: ResticSnapshot): boolean {
  return s.id.startsWith(ref);
}

/** An owner snapshot's tags: the record itself, base64url JSON (no commas, which split tags). */
export function ownerTags(owner: ServerOwner): string[] {
  return [TOOL_TAG, OWNER_TAG, `${OWNER_PREFIX}${Buffer.from(JSON.stringify(owner)).toString("base64url")}`];
}

/** The owner an owner snapshot records, or undefined for anything else or a damaged one. */
export function ownerOf(s: ResticSnapshot): ServerOwner | undefined {
  if (!(s.tags ?? []).includes(OWNER_TAG)) return undefined;
  const packed = tagValue(s, OWNER_PREFIX);
  if (packed === undefined) return undefined;
  try {
    const o: unknown = JSON.parse(Buffer.from(packed, "base64url").toString("utf8"));
    return isServerOwner(o) ? o : undefined;
  } catch {
    return undefined;
  }
}
