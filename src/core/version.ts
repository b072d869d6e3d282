// Version names (YYYYMMDD-HHMMSS, UTC): making them, parsing them, and picking one by prefix.

/** A version name, e.g. "20250914-030002". One backup run gives all its items the same version. */
export type Version = string;

const VERSION_RE = /^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})$/;
/**
 * Any prefix of a version: "2025", "20250914", "20250914-03", "20250914-030002". The dash only
 * after all eight date digits, so "2025-09" is refused rather than matching nothing.
 */
const PREFIX_RE = /^(\d{1,7}|\d{8}(-\d{0,6})?)$/;

/** The version name for a moment, in UTC. */
export function versionAt(date: Date): Version {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return (
    `${p(date.getUTCFullYear(), 4)}${p(date.getUTCMonth() + 1)}${p(date.getUTCDate())}-` +
    `${p(date.getUTCHours())}${p(date.getUTCMinutes())}${p(date.getUTCSeconds())}`
  );
}

export function isVersion(s: string): boolean {
  const m = VERSION_RE.exec(s);
  if (!m) return false;
  const d = versionDate(s);
  return d !== undefined && versionAt(d) === s;
}

/** The moment a version name stands for, or undefined if it is not a real date and time. */
export function versionDate(v: Version): Date | undefined {
  const m = VERSION_RE.exec(v);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s] = m.map(Number) as [number, number, number, number, number, number, number];
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  return versionAt(date) === v ? date : undefined;
}

/** Whether a user-supplied --version value has the shape of a version or of a prefix of one. */
export function isVersionPrefix(s: string): boolean {
  return s.length > 0 && PREFIX_RE.test(s);
}

/**
 * The latest version starting with `prefix` (a full version or any prefix of one), or undefined.
 * `versions` may be in any order.
 */
export function pickVersion(versions: readonly Version[], prefix: string | undefined): Version | undefined {
  let best: Version | undefined;
  for (const v of versions) {
    if (prefix !== undefined && !v.startsWith(prefix)) continue;
    if (best === undefined || v > best) best = v;
  }
  return best;
}

/** The next version after `v` (one second later): used when two runs would share a name. */
export function nextVersion(v: Version): Version {
  const d = versionDate(v);
  if (!d) throw new Error(`not a version: ${v}`);
  return versionAt(new Date(d.getTime() + 1000));
}
