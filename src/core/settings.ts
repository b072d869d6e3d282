// The scheduled service's settings, read from INCUS_BACKUP_* variables (the container's environment.* keys).

import { UsageError } from "../errors";
import { DEFAULT_DRILL_LIMITS, parseLimits } from "./drill";
import { DEFAULT_BACKUP_DEFAULTS, parseCompression, parseMode, parsePatternList, type BackupDefaults } from "./item_settings";
import { EMPTY_POLICY, RULES, type RetentionPolicy } from "./retention";
import { parseSchedule, type Schedule } from "./schedule";

export const DEFAULT_SCHEDULE = "0 3 * * *";
/** The policy when no INCUS_BACKUP_KEEP_* variable is set at all. */
export const DEFAULT_POLICY: RetentionPolicy = { ...EMPTY_POLICY, daily: 7, weekly: 4, monthly: 6 };

export type NotifyWhen = "failure" | "always";

export interface Settings {
  schedule: Schedule;
  policy: RetentionPolicy;
  /** Whether the policy came from INCUS_BACKUP_KEEP_* or is the default. */
  policySource: "settings" | "default";
  /** Scheduled runs include images. */
  images: boolean;
  /** Items backed up at the same time; undefined: the backup command's default (one per CPU, at most 4). */
  parallel: number | undefined;
  notify: { url: string; when: NotifyWhen } | undefined;
  /** One run at start-up when a scheduled time passed while the daemon was not running. */
  catchUp: boolean;
  /** readData: restic repositories, restic check reads this share of the data (n/m: part n first, the next part each time). */
  verify: { schedule: Schedule; deep: boolean; readData?: string } | undefined;
  /** The backup container itself ("project/name"): scheduled runs leave it out. */
  self: { project: string; name: string } | undefined;
  /** Streamed backups where the server has them; INCUS_BACKUP_DIRECT=0 turns them off, as for `backup`. */
  direct: boolean;
  /** zstd through the server's pzstd where it has it; INCUS_BACKUP_PZSTD=0 turns it off, as for `backup`. */
  pzstd: boolean;
  /**
   * The id of the repository the service was set up with (deploy/install.sh sets it from `init`):
   * a directory with another repository, or none, is refused. Unset: any repository is taken.
   */
  repositoryId: string | undefined;
  /** What every scheduled backup does with each item unless its own user.incus-backup.* keys say otherwise. */
  backup: BackupDefaults;
  /** INCUS_BACKUP_COMPRESSION; undefined: the repository's default. */
  compression: string | undefined;
  /** Scheduled restore drills (INCUS_BACKUP_DRILL_SCHEDULE); undefined: none. */
  drill: ({ schedule: Schedule } & DrillSettings) | undefined;
}

/** What a drill run takes (also `drill` by hand, where they are set): at most `max` instances, their copies' limits, the timeout. */
export interface DrillSettings {
  max: number | undefined;
  limits: Record<string, string>;
  timeout: number;
}

export const DEFAULT_DRILL_MAX = 3;
export const DEFAULT_DRILL_TIMEOUT = 120;

type Env = Readonly<Record<string, string | undefined>>;

/** The variable names, for messages and for deploy/install.sh, which sets them. */
export const ENV = {
  schedule: "INCUS_BACKUP_SCHEDULE",
  tz: "INCUS_BACKUP_TZ",
  images: "INCUS_BACKUP_IMAGES",
  parallel: "INCUS_BACKUP_PARALLEL",
  notifyUrl: "INCUS_BACKUP_NOTIFY_URL",
  notify: "INCUS_BACKUP_NOTIFY",
  catchUp: "INCUS_BACKUP_CATCHUP",
  verifySchedule: "INCUS_BACKUP_VERIFY_SCHEDULE",
  verifyDeep: "INCUS_BACKUP_VERIFY_DEEP",
  verifyReadData: "INCUS_BACKUP_VERIFY_READ_DATA",
  self: "INCUS_BACKUP_SELF",
  repositoryId: "INCUS_BACKUP_REPOSITORY_ID",
  exclude: "INCUS_BACKUP_EXCLUDE",
  excludeProjects: "INCUS_BACKUP_EXCLUDE_PROJECTS",
  mode: "INCUS_BACKUP_MODE",
  snapshots: "INCUS_BACKUP_SNAPSHOTS",
  ephemeral: "INCUS_BACKUP_EPHEMERAL",
  compression: "INCUS_BACKUP_COMPRESSION",
  drillSchedule: "INCUS_BACKUP_DRILL_SCHEDULE",
  drillMax: "INCUS_BACKUP_DRILL_MAX",
  drillLimits: "INCUS_BACKUP_DRILL_LIMITS",
  drillTimeout: "INCUS_BACKUP_DRILL_TIMEOUT",
  keep: (rule: string) => `INCUS_BACKUP_KEEP_${rule.toUpperCase()}`,
} as const;

function value(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === "" ? undefined : v;
}

export function parseBool(text: string | undefined, name: string, fallback: boolean): boolean {
  if (text === undefined) return fallback;
  const t = text.toLowerCase();
  if (["1", "true", "yes", "on"].includes(t)) return true;
  if (["0", "false", "no", "off"].includes(t)) return false;
  throw new UsageError(`${name}=${JSON.stringify(text)}: use true or false`);
}

export function parseCount(text: string, name: string, max = 1_000_000): number {
  if (!/^\d+$/.test(text) || Number(text) > max) throw new UsageError(`${name}=${JSON.stringify(text)}: use a whole number from 0 to ${max}`);
  return Number(text);
}

/**
 * The retention policy from INCUS_BACKUP_KEEP_{LAST,HOURLY,DAILY,WEEKLY,MONTHLY,YEARLY}: the rules
 * set are used and the others are off; with none set, undefined.
 */
export function policyFromEnv(env: Env): RetentionPolicy | undefined {
  let any = false;
  const p: RetentionPolicy = { ...EMPTY_POLICY };
  for (const r of RULES) {
    const name = ENV.keep(r);
    const v = value(env, name);
    if (v === undefined) continue;
    any = true;
    p[r] = parseCount(v, name);
  }
  return any ? p : undefined;
}

/**
 * The time zone the process runs in: $TZ when it names a zone, else the runtime's default
 * (/etc/localtime), else UTC. Read from the given environment so tests can set it.
 */
export function systemTimeZone(env: Env): string {
  const tz = value(env, "TZ")?.replace(/^:/, "");
  if (tz !== undefined) {
    try {
      return new Intl.DateTimeFormat("en-US", { timeZone: tz }).resolvedOptions().timeZone;
    } catch {
      // a TZ that is a path or POSIX rule: fall through to the runtime's idea of it
    }
  }
  return Intl.DateTimeFormat().resolvedOptions().timeZone ?? "UTC";
}

/** The time zone: INCUS_BACKUP_TZ, else the container's own (TZ, /etc/localtime), passed in. */
export function timeZoneFromEnv(env: Env, systemTz: string): string {
  return value(env, ENV.tz) ?? systemTz;
}

/** Reads and checks every setting; the first bad one is a UsageError naming the variable. */
export function settingsFromEnv(env: Env, systemTz: string): Settings {
  const tz = timeZoneFromEnv(env, systemTz);
  const schedule = parseSchedule(value(env, ENV.schedule) ?? DEFAULT_SCHEDULE, tz, ENV.schedule);
  const fromEnv = policyFromEnv(env);
  const policy = fromEnv ?? DEFAULT_POLICY;
  if (RULES.every((r) => policy[r] === 0)) {
    throw new UsageError(`every INCUS_BACKUP_KEEP_* is 0: that policy would remove every version; keep at least one`);
  }
  const parallelText = value(env, ENV.parallel);
  const parallel = parallelText === undefined ? undefined : parseCount(parallelText, ENV.parallel, 64);
  if (parallel === 0) throw new UsageError(`${ENV.parallel}=0: use a whole number from 1 to 64`);
  const url = value(env, ENV.notifyUrl);
  let notify: Settings["notify"];
  if (url !== undefined) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new UsageError(`${ENV.notifyUrl} is not a URL`);
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") throw new UsageError(`${ENV.notifyUrl} must be an http or https URL`);
    const when = (value(env, ENV.notify) ?? "failure").toLowerCase();
    if (when !== "failure" && when !== "always") throw new UsageError(`${ENV.notify}=${JSON.stringify(when)}: use failure or always`);
    notify = { url, when };
  }
  const verifyText = value(env, ENV.verifySchedule);
  const readData = parseReadData(value(env, ENV.verifyReadData), ENV.verifyReadData);
  const verify =
    verifyText === undefined
      ? undefined
      : { schedule: parseSchedule(verifyText, tz, ENV.verifySchedule), deep: parseBool(value(env, ENV.verifyDeep), ENV.verifyDeep, false), ...(readData === undefined ? {} : { readData }) };
  const selfText = value(env, ENV.self);
  let self: Settings["self"];
  if (selfText !== undefined) {
    const m = /^(?:([^/]+)\/)?([^/]+)$/.exec(selfText);
    if (!m) throw new UsageError(`${ENV.self}=${JSON.stringify(selfText)}: use NAME or PROJECT/NAME`);
    self = { project: m[1] ?? "default", name: m[2]! };
  }
  const repositoryId = value(env, ENV.repositoryId);
  if (repositoryId !== undefined && !/^[0-9a-f]{8,64}$/.test(repositoryId)) {
    throw new UsageError(`${ENV.repositoryId}=${JSON.stringify(repositoryId)}: not a repository id (\`incus-backup init --json\` prints it)`);
  }
  return {
    schedule,
    policy,
    policySource: fromEnv ? "settings" : "default",
    images: parseBool(value(env, ENV.images), ENV.images, false),
    parallel,
    notify,
    catchUp: parseBool(value(env, ENV.catchUp), ENV.catchUp, true),
    verify,
    self,
    direct: env.INCUS_BACKUP_DIRECT?.trim() !== "0",
    pzstd: env.INCUS_BACKUP_PZSTD?.trim() !== "0",
    repositoryId,
    ...backupDefaultsFromEnv(env),
    drill: (() => {
      const d = drillSettingsFromEnv(env);
      const text = value(env, ENV.drillSchedule);
      return text === undefined ? undefined : { schedule: parseSchedule(text, tz, ENV.drillSchedule), ...d, max: d.max ?? DEFAULT_DRILL_MAX };
    })(),
  };
}

/** INCUS_BACKUP_DRILL_MAX, _LIMITS and _TIMEOUT. */
export function drillSettingsFromEnv(env: Env): DrillSettings {
  const max = value(env, ENV.drillMax);
  const timeout = value(env, ENV.drillTimeout);
  const limits = value(env, ENV.drillLimits);
  const m = max === undefined ? undefined : parseCount(max, ENV.drillMax, 10_000);
  if (m === 0) throw new UsageError(`${ENV.drillMax}=0: use a whole number from 1`);
  return {
    max: m,
    limits: limits === undefined ? { ...DEFAULT_DRILL_LIMITS } : parseLimits(limits.split(/\s+/).filter(Boolean), ENV.drillLimits),
    timeout: timeout === undefined ? DEFAULT_DRILL_TIMEOUT : Math.max(1, parseCount(timeout, ENV.drillTimeout, 86_400)),
  };
}

/**
 * The backup settings of INCUS_BACKUP_EXCLUDE, _EXCLUDE_PROJECTS, _MODE, _SNAPSHOTS, _EPHEMERAL and
 * _COMPRESSION: the service's, and a `backup` run by hand where they are set (in the container).
 */
export function backupDefaultsFromEnv(env: Env): { backup: BackupDefaults; compression: string | undefined } {
  const mode = value(env, ENV.mode);
  const compression = value(env, ENV.compression);
  return {
    backup: {
      mode: mode === undefined ? DEFAULT_BACKUP_DEFAULTS.mode : parseMode(mode, ENV.mode),
      snapshots: parseBool(value(env, ENV.snapshots), ENV.snapshots, DEFAULT_BACKUP_DEFAULTS.snapshots),
      exclude: parsePatternList(value(env, ENV.exclude), ENV.exclude),
      excludeProjects: parsePatternList(value(env, ENV.excludeProjects), ENV.excludeProjects, "projects"),
      ephemeral: parseBool(value(env, ENV.ephemeral), ENV.ephemeral, DEFAULT_BACKUP_DEFAULTS.ephemeral),
    },
    compression: compression === undefined ? undefined : parseCompression(compression, ENV.compression),
  };
}

/**
 * A URL as it may appear in logs and status: scheme and host only. Webhook URLs often carry their
 * secret in the path or query (and sometimes user:password@), so nothing of those is shown.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    const rest = u.pathname !== "/" || u.search !== "" || u.username !== "" ? "/…" : "/";
    return `${u.protocol}//${u.host}${rest}`;
  } catch {
    return "(invalid URL)";
  }
}

/** A share of a restic repository's data to read: all, a percentage (0 < N <= 100) or a part n/m (1 <= n <= m). */
export function parseReadData(v: string | undefined, name: string): string | undefined {
  if (v === undefined) return undefined;
  if (v === "all") return v;
  const pct = /^(\d+(?:\.\d+)?)%$/.exec(v);
  if (pct && Number(pct[1]) > 0 && Number(pct[1]) <= 100) return v;
  const part = /^(\d+)\/(\d+)$/.exec(v);
  if (part && Number(part[1]) >= 1 && Number(part[1]) <= Number(part[2])) return v;
  throw new UsageError(`${name}=${JSON.stringify(v)}: use all, a percentage such as 10%, or a part such as 1/5`);
}

/**
 * The share a scheduled verify reads: a part n/m rotates, so that m verifies read all the data
 * (the part after the one the last verify read, from n at first); anything else is as given.
 */
export function nextReadData(setting: string, last: string | undefined): string {
  const part = /^(\d+)\/(\d+)$/.exec(setting);
  if (!part) return setting;
  const m = Number(part[2]);
  const prev = last === undefined ? undefined : /^(\d+)\/(\d+)$/.exec(last);
  if (!prev || Number(prev[2]) !== m) return setting;
  return `${(Number(prev[1]) % m) + 1}/${m}`;
}
