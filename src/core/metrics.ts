// The metrics file: per item and per run facts from the run records and the listing, in Prometheus's text format.

import { KINDS, itemId, itemLabel, keyMember, type ItemKey, type Kind } from "./selection";
import type { RunFacts } from "./health";

/**
 * The item a run record's entry is about; records of older versions name it by its label only.
 * A volume's member is part of it (a cluster's local volumes of one name on two members are two items).
 */
export type RecordedKey = Pick<ItemKey, "kind" | "project" | "pool" | "name" | "member">;

export interface RecordedRun extends RunFacts {
  version: string;
  /** `member`: where the item was; in records from before volumes were keyed by member, a volume's key lacks it. */
  items?: Array<{ label: string; ok: boolean; bytes?: number; seconds?: number; key?: RecordedKey; member?: string }>;
}

/** One complete version, as the listing gives it. */
export interface ListedVersion {
  key: ItemKey;
  version: string;
  /** When the backup of this version started (its manifest's `created`). */
  created: string;
  size: number;
}

export interface MetricsFacts {
  /** Whether the repository could be read; when not, nothing else is known. */
  readable: boolean;
  /** Run records, oldest first. */
  runs: readonly RecordedRun[];
  versions: readonly ListedVersion[];
  /** The newest run: the newest record, or the service's summary (see core/health.ts newestRun). */
  lastRun: RunFacts | null;
  lastPrune: { finished: string; removed: number } | null;
  /** Each item's last restore drill (engine/drill.ts's record), if any were run. */
  drills?: ReadonlyArray<{ key: RecordedKey; ok: boolean; finished: string; seconds: number }>;
}

const RUN_STATUSES = ["ok", "partial", "failed", "interrupted", "running"] as const;

/** One metric family: HELP, TYPE, and its samples. */
interface Family {
  name: string;
  help: string;
  type: "gauge" | "counter";
  samples: Array<{ labels: Record<string, string>; value: number }>;
}

/** Per item, what an alert needs: how old its newest version is, how long it took, how big, and how often it failed since. */
interface ItemFacts {
  key: RecordedKey;
  lastSuccess?: ListedVersion;
  seconds?: number;
  failures: number;
}

/** The metrics file's text (Prometheus text exposition format 0.0.4), for node_exporter's textfile collector. */
export function renderMetrics(f: MetricsFacts): string {
  const families: Family[] = [];
  const family = (name: string, type: Family["type"], help: string): Family => {
    const fam: Family = { name: `incus_backup_${name}`, help, type, samples: [] };
    families.push(fam);
    return fam;
  };
  const readable = family("repository_readable", "gauge", "1 if the last run could read the repository (the one the service is set up with), 0 if not; then nothing else is known");
  readable.samples.push({ labels: {}, value: f.readable ? 1 : 0 });
  if (f.readable) {
    const size = family("repository_size_bytes", "gauge", "Total bytes of all complete versions in the repository");
    size.samples.push({ labels: {}, value: f.versions.reduce((n, v) => n + v.size, 0) });
    const count = family("repository_versions", "gauge", "Complete versions in the repository");
    count.samples.push({ labels: {}, value: f.versions.length });
    runFamilies(f, family);
    itemFamilies(itemFacts(f), family);
    drillFamilies(f.drills ?? [], family);
  }
  return families
    .filter((fam) => fam.samples.length > 0)
    .map((fam) => [`# HELP ${fam.name} ${escapeHelp(fam.help)}`, `# TYPE ${fam.name} ${fam.type}`, ...fam.samples.map((s) => `${fam.name}${labelText(s.labels)} ${numberText(s.value)}`)].join("\n"))
    .join("\n")
    .concat("\n");
}

function runFamilies(f: MetricsFacts, family: (name: string, type: Family["type"], help: string) => Family): void {
  const run = f.lastRun;
  if (run) {
    const status = family("last_run_status", "gauge", "1 for the last backup run's status (ok, partial, failed, interrupted, running), 0 for the others");
    for (const s of RUN_STATUSES) status.samples.push({ labels: { status: s }, value: run.status === s ? 1 : 0 });
    family("last_run_start_timestamp_seconds", "gauge", "When the last backup run started, in seconds since the epoch").samples.push({ labels: {}, value: seconds(run.started) });
    if (run.finished) {
      family("last_run_end_timestamp_seconds", "gauge", "When the last backup run finished, in seconds since the epoch").samples.push({ labels: {}, value: seconds(run.finished) });
    }
    const record = f.runs.at(-1);
    if (record?.items && run.version === record.version) {
      const items = family("last_run_items", "gauge", "Items of the last backup run by result (ok, failed)");
      const ok = record.items.filter((i) => i.ok).length;
      items.samples.push({ labels: { result: "ok" }, value: ok }, { labels: { result: "failed" }, value: record.items.length - ok });
    }
  }
  if (f.lastPrune) {
    family("last_prune_end_timestamp_seconds", "gauge", "When the last prune finished, in seconds since the epoch").samples.push({ labels: {}, value: seconds(f.lastPrune.finished) });
    family("last_prune_removed_versions", "gauge", "Versions the last prune removed").samples.push({ labels: {}, value: f.lastPrune.removed });
  }
}

function itemFamilies(items: ItemFacts[], family: (name: string, type: Family["type"], help: string) => Family): void {
  const time = family("item_last_success_timestamp_seconds", "gauge", "When the backup of the item's newest complete version started, in seconds since the epoch");
  const took = family("item_last_success_duration_seconds", "gauge", "How long the backup of the item's newest version took, when its run record is still there");
  const size = family("item_last_success_bytes", "gauge", "Bytes of the item's newest version as stored");
  const failures = family("item_consecutive_failures", "gauge", "Recorded runs that failed the item since the last one that backed it up (runs without the item do not count)");
  for (const i of items) {
    const labels = itemLabels(i.key);
    if (i.lastSuccess) {
      time.samples.push({ labels, value: seconds(i.lastSuccess.created) });
      size.samples.push({ labels, value: i.lastSuccess.size });
      if (i.seconds !== undefined) took.samples.push({ labels, value: i.seconds });
    }
    failures.samples.push({ labels, value: i.failures });
  }
}

function drillFamilies(drills: NonNullable<MetricsFacts["drills"]>, family: (name: string, type: Family["type"], help: string) => Family): void {
  const ok = family("item_last_drill_success", "gauge", "1 if the item's last restore drill passed (restored, started, checked), 0 if it failed");
  const time = family("item_last_drill_timestamp_seconds", "gauge", "When the item's last restore drill finished, in seconds since the epoch");
  const took = family("item_last_drill_duration_seconds", "gauge", "How long the item's last restore drill took");
  for (const d of [...drills].sort((a, b) => metricId(a.key).localeCompare(metricId(b.key)))) {
    const labels = itemLabels(d.key);
    ok.samples.push({ labels, value: d.ok ? 1 : 0 });
    time.samples.push({ labels, value: seconds(d.finished) });
    took.samples.push({ labels, value: d.seconds });
  }
}

/**
 * Every item that has a version or a run record entry: its newest version, the duration its run
 * recorded for it, and the failures since the last run that backed it up. An entry is matched to
 * an item by the key it records, else (records of older versions) by the item's label.
 */
function itemFacts(f: MetricsFacts): ItemFacts[] {
  const byId = new Map<string, ItemFacts>();
  const byLabel = new Map<string, ItemFacts>();
  const add = (key: RecordedKey): ItemFacts => {
    const id = metricId(key);
    let facts = byId.get(id);
    if (!facts) {
      const member = keyMember(key);
      facts = { key: { kind: key.kind, project: key.project, ...(key.kind === "volume" ? { pool: key.pool ?? "" } : {}), name: key.name, ...(member === undefined ? {} : { member }) }, failures: 0 };
      byId.set(id, facts);
    }
    return facts;
  };
  for (const v of f.versions) {
    const facts = add(v.key);
    if (!facts.lastSuccess || v.version > facts.lastSuccess.version) facts.lastSuccess = v;
    byLabel.set(itemLabel(v.key), facts);
  }
  const entryFacts = (e: NonNullable<RecordedRun["items"]>[number]) => {
    if (!e.key || !soundKey(e.key)) return byLabel.get(e.label);
    // An older record's entry for a cluster's volume names the member beside the key.
    const member = e.key.kind === "volume" && e.key.member === undefined && typeof e.member === "string" ? e.member : undefined;
    return add(member === undefined ? e.key : { ...e.key, member });
  };
  const counted = new Set<ItemFacts>();
  // Newest run first: count failures back to the run that backed the item up.
  for (const run of [...f.runs].reverse()) {
    for (const e of run.items ?? []) {
      const facts = entryFacts(e);
      if (!facts) continue;
      if (facts.lastSuccess?.version === run.version && e.ok && e.seconds !== undefined) facts.seconds = e.seconds;
      if (counted.has(facts)) continue;
      if (e.ok) counted.add(facts);
      else facts.failures++;
    }
  }
  return [...byId.values()].sort((a, b) => metricId(a.key).localeCompare(metricId(b.key)));
}

/**
 * An item's identity here: an instance's manifest records its root disk's pool, its run record
 * entry does not; only a volume's pool (and member) tells items apart.
 */
function metricId(k: RecordedKey): string {
  const member = keyMember(k);
  return itemId({ kind: k.kind, project: k.project, ...(k.kind === "volume" && k.pool !== undefined ? { pool: k.pool } : {}), name: k.name, ...(member === undefined ? {} : { member }) });
}

function soundKey(k: RecordedKey): boolean {
  return (
    KINDS.includes(k.kind as Kind) &&
    typeof k.project === "string" &&
    typeof k.name === "string" &&
    (k.pool === undefined || typeof k.pool === "string") &&
    (k.member === undefined || typeof k.member === "string")
  );
}

/** A volume of a cluster's local pool has a `member` label: same-named volumes on two members are two series. */
function itemLabels(k: RecordedKey): Record<string, string> {
  const member = keyMember(k);
  return { kind: k.kind, project: k.project, ...(k.pool === undefined ? {} : { pool: k.pool }), name: k.name, ...(member === undefined ? {} : { member }) };
}

function seconds(iso: string): number {
  return Date.parse(iso) / 1000;
}

function labelText(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return pairs.length === 0 ? "" : `{${pairs.join(",")}}`;
}

/** Label values escape backslash, double quote and line feed (the text format's rules). */
export function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** HELP text escapes backslash and line feed only. */
function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function numberText(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}
