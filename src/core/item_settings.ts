// What a backup does with each item: per-item Incus config keys (user.incus-backup.*), the
// service-wide defaults (INCUS_BACKUP_EXCLUDE, _MODE, ...) and the command line, resolved into one
// decision per item: skipped (and why), or backed up in which mode, with or without snapshots.

import { UsageError } from "../errors";
import { COMPRESSION_NAMES } from "./compression";
import { DRILL_PROJECT } from "./drill";
import type { ItemKey } from "./selection";

/** The config keys an admin sets on an instance (`incus config set web user.incus-backup.mode=stop`) or a custom volume. */
export const ITEM_KEYS = {
  exclude: "user.incus-backup.exclude",
  mode: "user.incus-backup.mode",
  snapshots: "user.incus-backup.snapshots",
} as const;

export const MODES = ["live", "stop"] as const;
/** live: backed up while it runs (the default); stop: stopped for the making of its backup, then started again. */
export type Mode = (typeof MODES)[number];

/** What applies to every item of a run unless the item's own keys say otherwise. */
export interface BackupDefaults {
  mode: Mode;
  snapshots: boolean;
  /** Name patterns (globs) left out: NAME or PROJECT/NAME for instances; NAME, POOL/NAME or PROJECT/POOL/NAME for volumes. */
  exclude: string[];
  /** Projects (globs) whose instances and volumes are left out. */
  excludeProjects: string[];
  /** Ephemeral instances are backed up too (by default they are skipped). */
  ephemeral: boolean;
}

export const DEFAULT_BACKUP_DEFAULTS: BackupDefaults = { mode: "live", snapshots: false, exclude: [], excludeProjects: [], ephemeral: false };

/** The command line's choices for this run: they win over the items' keys and the defaults. */
export interface BackupOverrides {
  mode?: Mode;
  snapshots?: boolean;
}

/** The facts about an item that decide how it is backed up. */
export interface ItemFacts extends ItemKey {
  /** The instance's or volume's own config (its user.* keys), not the expanded one. */
  config?: Readonly<Record<string, string>>;
  /** The expanded config: a key set in a profile applies to the instances that use it. */
  expandedConfig?: Readonly<Record<string, string>>;
  ephemeral?: boolean;
}

export interface ItemDecision {
  /** Why the item is left out of this run; undefined: it is backed up. */
  skip?: string;
  /** Instances only. */
  mode?: Mode;
  snapshots: boolean;
  /** Where each choice came from, for the plan: "key", "default" or "command line". */
  modeFrom?: Source;
  snapshotsFrom: Source;
  /** A key with a value the tool does not understand: it is ignored, and the plan says so. */
  warnings: string[];
}

export type Source = "key" | "default" | "command line" | "named";

/**
 * Decides one item. Rules, most specific first:
 * - an item named with --name is always backed up (its exclusion is noted, not applied);
 * - `user.incus-backup.exclude=true` leaves it out; `=false` keeps it in even where a service-wide
 *   pattern, project or the ephemeral rule would leave it out;
 * - a service-wide pattern or project leaves it out;
 * - an ephemeral instance is left out unless ephemeral instances are asked for;
 * - mode and snapshots: the command line's, else the item's key, else the default.
 * A key with a value that is not understood is ignored with a warning: backing up is the safe side.
 */
export function decideItem(item: ItemFacts, named: boolean, defaults: BackupDefaults, overrides: BackupOverrides = {}): ItemDecision {
  const warnings: string[] = [];
  const config = { ...(item.expandedConfig ?? {}), ...(item.config ?? {}) };
  const key = (k: string) => config[k]?.trim();
  const boolKey = (k: string): boolean | undefined => {
    const v = key(k);
    if (v === undefined || v === "") return undefined;
    const b = parseBoolText(v);
    if (b === undefined) warnings.push(`${k}=${JSON.stringify(v)} is not true or false; ignored`);
    return b;
  };

  const snapshotsKey = item.kind === "instance" || item.kind === "volume" ? boolKey(ITEM_KEYS.snapshots) : undefined;
  let snapshots = defaults.snapshots;
  let snapshotsFrom: Source = "default";
  if (overrides.snapshots !== undefined) [snapshots, snapshotsFrom] = [overrides.snapshots, "command line"];
  else if (snapshotsKey !== undefined) [snapshots, snapshotsFrom] = [snapshotsKey, "key"];
  const decision: ItemDecision = { snapshots, snapshotsFrom, warnings };

  if (item.kind === "instance") {
    const m = key(ITEM_KEYS.mode);
    let modeKey: Mode | undefined;
    if (m !== undefined && m !== "") {
      if ((MODES as readonly string[]).includes(m.toLowerCase())) modeKey = m.toLowerCase() as Mode;
      else warnings.push(`${ITEM_KEYS.mode}=${JSON.stringify(m)} is not stop or live; ignored`);
    }
    if (overrides.mode !== undefined) [decision.mode, decision.modeFrom] = [overrides.mode, "command line"];
    else if (modeKey !== undefined) [decision.mode, decision.modeFrom] = [modeKey, "key"];
    else [decision.mode, decision.modeFrom] = [defaults.mode, "default"];
  }

  if (item.kind !== "instance" && item.kind !== "volume") return decision;
  // Drill copies live only while a drill runs: never backed up, named or not; nor the empty
  // stand-ins a cluster restore makes for a moment (one a killed restore left).
  if (item.project === DRILL_PROJECT) return { ...decision, skip: "a restore drill's scratch copy" };
  if (item.kind === "volume" && config["user.incus-backup.stand-in"] === "true") return { ...decision, skip: "an empty stand-in a cluster restore made (delete it if no restore runs)" };
  const excludeKey = boolKey(ITEM_KEYS.exclude);
  const reason = skipReason(item, excludeKey, defaults);
  if (reason === undefined) return decision;
  if (named) {
    warnings.push(`${reason}, but it was named with --name: backed up`);
    return decision;
  }
  return { ...decision, skip: reason };
}

function skipReason(item: ItemFacts, excludeKey: boolean | undefined, d: BackupDefaults): string | undefined {
  if (excludeKey === true) return `${ITEM_KEYS.exclude}=true`;
  if (excludeKey === false) return undefined;
  const project = d.excludeProjects.find((p) => globMatch(p, item.project));
  if (project !== undefined) return `project ${item.project} is excluded (${JSON.stringify(project)})`;
  const pattern = d.exclude.find((p) => itemNames(item).some((n) => globMatch(p, n)));
  if (pattern !== undefined) return `excluded by ${JSON.stringify(pattern)}`;
  if (item.kind === "instance" && item.ephemeral && !d.ephemeral) return "ephemeral";
  return undefined;
}

/** The names a pattern is matched against: the short name, and the forms with pool and project. */
function itemNames(item: ItemKey): string[] {
  if (item.kind === "volume") return [item.name, `${item.pool}/${item.name}`, `${item.project}/${item.pool}/${item.name}`];
  return [item.name, `${item.project}/${item.name}`];
}

/** Shell-style globs: `*` is any run of characters but "/", `?` one such character; the rest is literal. */
export function globMatch(pattern: string, text: string): boolean {
  let re = "^";
  for (const ch of pattern) {
    if (ch === "*") re += "[^/]*";
    else if (ch === "?") re += "[^/]";
    else re += ch.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`${re}$`, "u").test(text);
}

export function parseBoolText(t: string): boolean | undefined {
  const v = t.toLowerCase();
  if (["1", "true", "yes", "on"].includes(v)) return true;
  if (["0", "false", "no", "off"].includes(v)) return false;
  return undefined;
}

/** A list setting: patterns separated by commas or white space; each is checked for characters Incus names cannot have. */
export function parsePatternList(text: string | undefined, name: string, what: "items" | "projects" = "items"): string[] {
  if (text === undefined) return [];
  const out = text.split(/[\s,]+/).filter((p) => p !== "");
  const maxParts = what === "projects" ? 1 : 3;
  for (const p of out) {
    const parts = p.split("/");
    if (parts.length > maxParts || parts.some((part) => part === "" || part === "." || part === "..")) {
      const forms = what === "projects" ? "a project name, with * and ?" : "NAME, PROJECT/NAME, POOL/NAME or PROJECT/POOL/NAME, with * and ?";
      throw new UsageError(`${name}: ${JSON.stringify(p)} is not a pattern: use ${forms}`);
    }
  }
  return out;
}

export function parseMode(text: string, name: string): Mode {
  const m = text.trim().toLowerCase();
  if (!(MODES as readonly string[]).includes(m)) throw new UsageError(`${name}=${JSON.stringify(text)}: use stop or live`);
  return m as Mode;
}

export function parseCompression(text: string, name: string): string {
  const c = text.trim().toLowerCase();
  if (!COMPRESSION_NAMES.includes(c)) throw new UsageError(`${name}=${JSON.stringify(text)}: use one of ${COMPRESSION_NAMES.join(", ")}`);
  return c;
}
