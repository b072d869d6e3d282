// What a command works on: item kinds, --name filters and --project, and matching items against them.

import { UsageError } from "../errors";
import { checkComponent, checkInstanceName, parseVolumeRef, quote } from "./names";

export const KINDS = ["database", "image", "volume", "instance"] as const;
/** The kinds of things the tool backs up, in restore order (what others depend on comes first). */
export type Kind = (typeof KINDS)[number];

/** One backed-up thing, identified the same way in Incus and in the repository. */
export interface ItemKey {
  kind: Kind;
  /** "" for the database (it covers the whole server). */
  project: string;
  /** The storage pool of a volume. */
  pool?: string;
  /** Instance or volume name; the fingerprint of an image; "server" for the database. */
  name: string;
  /** Image aliases, which --name also matches. */
  aliases?: string[];
  /**
   * The cluster member. Part of a volume's identity where it is set: a local pool (dir, btrfs, lvm,
   * zfs) has one set of volumes per member, so two members may each have a volume of one name.
   * Undefined outside a cluster and for remote pools. An instance is unique in its cluster and
   * moves between members: its manifest records the member it was on, which --member filters by,
   * but its identity (itemId, label, where it is stored) never includes it.
   */
  member?: string;
}

export interface Selection {
  kinds: Kind[];
  /** Raw --name values; empty means every item of the selected kinds. */
  names: string[];
  project?: string;
  /** --member: only instances and volumes backed up on this cluster member. */
  member?: string;
}

export interface SelectorFlags {
  all?: boolean;
  instances?: boolean;
  volumes?: boolean;
  images?: boolean;
  database?: boolean;
  names?: string[];
  project?: string | undefined;
  member?: string | undefined;
}

/**
 * Turns the selector flags into a Selection. `allKinds` is what --all means for the command (images
 * are optional in backups, so `backup --all` leaves them out unless --images is given too).
 * `defaultAll` makes "no selector" mean --all (list, verify) instead of an error (backup, restore).
 */
export function selectionFrom(flags: SelectorFlags, allKinds: readonly Kind[], defaultAll: boolean): Selection {
  const kinds = new Set<Kind>();
  if (flags.instances) kinds.add("instance");
  if (flags.volumes) kinds.add("volume");
  if (flags.images) kinds.add("image");
  if (flags.database) kinds.add("database");
  if (flags.all || (defaultAll && kinds.size === 0)) for (const k of allKinds) kinds.add(k);
  if (kinds.size === 0) {
    throw new UsageError("say what to work on: --all, --instances, --volumes, --images or --database");
  }
  const names = flags.names ?? [];
  for (const n of names) validateNameFilter(n, kinds);
  const project = flags.project === undefined ? undefined : checkComponent(flags.project, "project name");
  const member = flags.member === undefined ? undefined : checkComponent(flags.member, "--member");
  return { kinds: KINDS.filter((k) => kinds.has(k)), names, ...(project === undefined ? {} : { project }), ...(member === undefined ? {} : { member }) };
}

/** Rejects --name values that cannot name anything of the selected kinds (and any unsafe text). */
function validateNameFilter(name: string, kinds: Set<Kind>): void {
  if (name.length === 0) throw new UsageError("--name must not be empty");
  if (name.includes("/")) {
    if (!kinds.has("volume") && !kinds.has("image")) {
      throw new UsageError(`invalid name ${quote(name)}: only volumes (POOL/NAME) and image aliases contain "/"`);
    }
    if (!kinds.has("image")) parseVolumeRef(name);
    return;
  }
  if (kinds.size === 1 && kinds.has("instance")) {
    checkInstanceName(name);
    return;
  }
  checkComponent(name, "name");
}

/** Whether a --name value designates this item. */
export function nameMatches(filter: string, item: ItemKey): boolean {
  switch (item.kind) {
    case "instance":
      return filter === item.name;
    case "volume": {
      const slash = filter.indexOf("/");
      if (slash < 0) return filter === item.name;
      return filter.slice(0, slash) === item.pool && filter.slice(slash + 1) === item.name;
    }
    case "image":
      return (filter.length >= 12 && item.name.startsWith(filter)) || (item.aliases ?? []).includes(filter);
    case "database":
      return false;
  }
}

/**
 * Whether an item (a version's manifest, a live item) was on --member's member. The database and
 * images belong to no member: --member leaves them in, as --project leaves the database in.
 */
export function memberMatches(sel: Pick<Selection, "member">, item: ItemKey): boolean {
  if (sel.member === undefined || item.kind === "database" || item.kind === "image") return true;
  return item.member === sel.member;
}

/**
 * Whether the selection takes an item. With --member, an instance's versions are taken one by one
 * (each manifest says where it was): pass each version's manifest, never a key without its member.
 */
export function matches(sel: Selection, item: ItemKey): boolean {
  if (!sel.kinds.includes(item.kind)) return false;
  if (sel.project !== undefined && item.kind !== "database" && item.project !== sel.project) return false;
  if (!memberMatches(sel, item)) return false;
  if (sel.names.length === 0 || item.kind === "database") return true;
  return sel.names.some((n) => nameMatches(n, item));
}

/** The --name values that matched none of `items`. */
export function unmatchedNames(sel: Selection, items: readonly ItemKey[]): string[] {
  return sel.names.filter((n) => !items.some((i) => sel.kinds.includes(i.kind) && nameMatches(n, i) && matches(sel, i)));
}

/** The member that is part of an item's identity: a volume's, where it has one; never an instance's. */
export function keyMember(item: ItemKey): string | undefined {
  return item.kind === "volume" ? item.member : undefined;
}

/** An item's identity alone (a manifest or a live item carries more): kind, project, pool, name, and a volume's member. */
export function keyOf(item: ItemKey): ItemKey {
  const member = keyMember(item);
  return {
    kind: item.kind,
    project: item.project,
    ...(item.pool === undefined ? {} : { pool: item.pool }),
    name: item.name,
    ...(member === undefined ? {} : { member }),
  };
}

/** A short human label: "instance default/web", "volume default/pool1/data", "volume default/local/data on node2". */
export function itemLabel(item: ItemKey): string {
  switch (item.kind) {
    case "database":
      return "database";
    case "volume":
      return `volume ${item.project}/${item.pool}/${item.name}${item.member === undefined ? "" : ` on ${item.member}`}`;
    case "image":
      return `image ${item.project}/${item.aliases?.[0] ?? item.name.slice(0, 12)}`;
    default:
      return `instance ${item.project}/${item.name}`;
  }
}

/** A stable identity string for maps and sorting (a volume's member included, an instance's never). */
export function itemId(item: ItemKey): string {
  const parts = [item.kind, item.project, item.pool ?? "", item.name];
  const member = keyMember(item);
  if (member !== undefined) parts.push(member);
  return parts.join("\u0000");
}
