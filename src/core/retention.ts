// Retention: which versions of an item a keep-policy keeps, as one pure function (restic's `forget` rules).

import { UsageError } from "../errors";
import { itemId, type ItemKey } from "./selection";
import { versionDate, type Version } from "./version";

/** The rules, in the order their reasons are listed. */
export const RULES = ["last", "hourly", "daily", "weekly", "monthly", "yearly"] as const;
export type Rule = (typeof RULES)[number];

/** How many versions (or periods) each rule keeps; 0 switches a rule off. */
export type RetentionPolicy = Record<Rule, number>;

export const EMPTY_POLICY: RetentionPolicy = { last: 0, hourly: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0 };

/** Why a version is kept: the rule, and for the period rules the period it stands for ("2025-W13"). */
export interface KeepReason {
  rule: Rule | "newest";
  bucket?: string;
}

export interface RetentionDecision<T> {
  entry: T;
  time: Date;
  keep: boolean;
  /** Every rule that keeps it; empty when it is removed. */
  reasons: KeepReason[];
}

export function isEmptyPolicy(p: RetentionPolicy): boolean {
  return RULES.every((r) => p[r] === 0);
}

/** "last 2, daily 7, weekly 4" (the rules that are on). */
export function formatPolicy(p: RetentionPolicy): string {
  const on = RULES.filter((r) => p[r] > 0).map((r) => `${r} ${p[r]}`);
  return on.length > 0 ? on.join(", ") : "none";
}

export function formatReason(r: KeepReason): string {
  return r.bucket === undefined ? r.rule : `${r.rule} ${r.bucket}`;
}

/**
 * Decides, for the versions of ONE item, which to keep. Same rules as restic's `forget`:
 * - last N: the N newest versions;
 * - hourly/daily/weekly/monthly/yearly N: the newest version of each of the N most recent
 *   periods that have a version (periods without one do not count);
 * - a version kept by several rules lists them all; every version no rule keeps is removed.
 * Periods are calendar periods in the time zone `tz` (an IANA name): days start at local
 * midnight, weeks are ISO weeks (Monday first, the ISO week-year), and the repeated hour at
 * the end of summer time is one hour period, as in restic and Proxmox.
 * The newest version is always kept (any non-empty policy keeps it anyway; this is the guarantee
 * that survives future rules). An empty policy is refused: it would remove everything.
 * Returns the decisions newest first.
 */
export function applyPolicy<T>(
  entries: readonly T[],
  timeOf: (entry: T) => Date,
  policy: RetentionPolicy,
  tz: string,
): RetentionDecision<T>[] {
  for (const r of RULES) {
    const n = policy[r];
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`keep-${r} must be a whole number of 0 or more`);
  }
  if (isEmptyPolicy(policy)) throw new UsageError("the retention policy is empty: it would remove every version");
  const calendar = localCalendar(tz);
  const decisions = entries
    .map((entry) => ({ entry, time: timeOf(entry), keep: false, reasons: [] as KeepReason[] }))
    .sort((a, b) => b.time.getTime() - a.time.getTime());
  const periodRules = RULES.filter((r): r is Exclude<Rule, "last"> => r !== "last" && policy[r] > 0);
  const left: Record<string, number> = { ...policy };
  const lastBucket: Record<string, string | undefined> = {};
  decisions.forEach((d, i) => {
    if (i < policy.last) d.reasons.push({ rule: "last" });
    const local = calendar(d.time);
    for (const r of periodRules) {
      if (left[r]! <= 0) continue;
      const bucket = bucketOf(r, local);
      // Newest first, so the first version seen in a period is that period's newest.
      if (bucket !== lastBucket[r]) {
        lastBucket[r] = bucket;
        left[r]!--;
        d.reasons.push({ rule: r, bucket });
      }
    }
    if (i === 0 && d.reasons.length === 0) d.reasons.push({ rule: "newest" });
    d.keep = d.reasons.length > 0;
  });
  return decisions;
}

/** One item's versions and what the policy does with each, newest first. */
export interface ItemRetention<T> {
  key: ItemKey;
  decisions: RetentionDecision<T>[];
}

/**
 * Applies the policy to each item separately (per kind, project, pool and name). A version's
 * time is its name: the start of the run that made it, so all items of one run share a period.
 */
export function planRetention<T extends { key: ItemKey; version: Version }>(
  versions: readonly T[],
  policy: RetentionPolicy,
  tz: string,
): ItemRetention<T>[] {
  const groups = new Map<string, T[]>();
  for (const v of versions) {
    const id = itemId(v.key);
    const g = groups.get(id);
    if (g) g.push(v);
    else groups.set(id, [v]);
  }
  return [...groups.keys()].sort().map((id) => {
    const group = groups.get(id)!;
    return { key: group[0]!.key, decisions: applyPolicy(group, versionTime, policy, tz) };
  });
}

function versionTime(v: { version: Version }): Date {
  const d = versionDate(v.version);
  if (!d) throw new Error(`not a version name: ${v.version}`);
  return d;
}

/** A moment's wall-clock date and hour in a time zone. */
export interface LocalTime {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Throws a UsageError unless `tz` is a time zone name this runtime knows. */
export function checkTimeZone(tz: string): string {
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    throw new UsageError(`unknown time zone ${JSON.stringify(tz)}: use an IANA name such as Europe/Berlin or UTC`);
  }
}

/** Wall-clock time in `tz`, through Intl (no time zone database of our own). */
export function localCalendar(tz: string): (d: Date) => LocalTime {
  let f = formatters.get(tz);
  if (!f) {
    checkTimeZone(tz);
    f = new Intl.DateTimeFormat("en-US", {
      timeZone: tz,
      hourCycle: "h23",
      year: "numeric",
      month: "numeric",
      day: "numeric",
      hour: "numeric",
      minute: "numeric",
      second: "numeric",
    });
    formatters.set(tz, f);
  }
  const fmt = f;
  return (d) => {
    const parts: Record<string, number> = {};
    for (const p of fmt.formatToParts(d)) if (p.type !== "literal") parts[p.type] = Number(p.value);
    return {
      year: parts.year!,
      month: parts.month!,
      day: parts.day!,
      hour: parts.hour! % 24,
      minute: parts.minute!,
      second: parts.second!,
    };
  };
}

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/** The ISO 8601 week-year and week of a calendar date. */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const date = Date.UTC(year, month - 1, day);
  const weekday = (new Date(date).getUTCDay() + 6) % 7; // Monday 0 .. Sunday 6
  // The week belongs to the year of its Thursday.
  const thursday = new Date(date + (3 - weekday) * 86_400_000);
  const isoYear = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(isoYear, 0, 1)) / (7 * 86_400_000));
  return { year: isoYear, week };
}

/** The period a local time falls in, for a period rule: "2025-03-30 02", "2025-03-30", "2025-W13", "2025-03", "2025". */
export function bucketOf(rule: Exclude<Rule, "last">, t: LocalTime): string {
  switch (rule) {
    case "hourly":
      return `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)} ${pad(t.hour)}h`;
    case "daily":
      return `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)}`;
    case "weekly": {
      const w = isoWeek(t.year, t.month, t.day);
      return `${pad(w.year, 4)}-W${pad(w.week)}`;
    }
    case "monthly":
      return `${pad(t.year, 4)}-${pad(t.month)}`;
    case "yearly":
      return pad(t.year, 4);
  }
}

/** "2025-03-30 03:30:00 +02:00" in `tz`: how dry-run and status show times to people. */
export function formatLocal(d: Date, tz: string): string {
  const t = localCalendar(tz)(d);
  const wall = Date.UTC(t.year, t.month - 1, t.day, t.hour, t.minute, t.second);
  const offset = Math.round((wall - Math.floor(d.getTime() / 1000) * 1000) / 60_000);
  const sign = offset < 0 ? "-" : "+";
  const abs = Math.abs(offset);
  return `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)} ${pad(t.hour)}:${pad(t.minute)}:${pad(t.second)} ${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}
