// Which of the discovered items a backup run takes, and how: each item's decision (src/core/item_settings.ts).

import { decideItem, DEFAULT_BACKUP_DEFAULTS, type BackupDefaults, type BackupOverrides, type ItemDecision, type ItemFacts } from "../core/item_settings";
import { itemId, nameMatches, type ItemKey, type Selection } from "../core/selection";
import type { LiveItem } from "./backup";

export interface SkippedItem {
  item: ItemKey;
  reason: string;
}

export interface BackupPlan<T extends LiveItem = LiveItem> {
  /** What is backed up, in the order found. */
  items: T[];
  skipped: SkippedItem[];
  /** By itemId: mode, snapshots, and where each came from. */
  decisions: Map<string, ItemDecision>;
}

/** The facts of a live item its decision depends on: its own and expanded config, whether it is ephemeral. */
export function factsOf(item: LiveItem): ItemFacts {
  if (item.kind === "instance") {
    const i = item.instance;
    return { ...keyOf(item), config: i.config ?? {}, ...(i.expanded_config ? { expandedConfig: i.expanded_config } : {}), ephemeral: i.ephemeral === true };
  }
  if (item.kind === "volume") return { ...keyOf(item), config: item.volume.config ?? {} };
  return keyOf(item);
}

function keyOf(item: ItemKey): ItemKey {
  return { kind: item.kind, project: item.project, name: item.name, ...(item.pool === undefined ? {} : { pool: item.pool }) };
}

export function planBackup<T extends LiveItem>(items: readonly T[], sel: Selection, defaults: BackupDefaults = DEFAULT_BACKUP_DEFAULTS, overrides: BackupOverrides = {}): BackupPlan<T> {
  const plan: BackupPlan<T> = { items: [], skipped: [], decisions: new Map() };
  for (const item of items) {
    const named = sel.names.some((n) => nameMatches(n, item));
    const d = decideItem(factsOf(item), named, defaults, overrides);
    if (d.skip !== undefined) {
      plan.skipped.push({ item: keyOf(item), reason: d.skip });
      continue;
    }
    plan.items.push(item);
    plan.decisions.set(itemId(item), d);
  }
  return plan;
}
