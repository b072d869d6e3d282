// Restore drills (pure parts): the scratch project, what a drill copy keeps of an instance's
// devices and config so it never meets production, placeholders its import needs, and which items
// a bounded drill run takes.

import { UsageError } from "../errors";
import { itemId, type ItemKey } from "./selection";

/** Where drill copies live; created on first use, left out of backups. */
export const DRILL_PROJECT = "incus-backup-drill";
/** An instance's check command, run in its drill copy once it runs: exit 0 passes. */
export const DRILL_CHECK_KEY = "user.incus-backup.drill-check";
/** The names drill copies get: never a name an admin would use, and the only ones recovery deletes. */
export const DRILL_COPY_NAME = /^ibk-drill-[0-9a-f]{8}$/;

type Devices = Record<string, Record<string, string>>;

export interface DrillCopy {
  /** The copy's own devices: its root disk only. */
  devices: Devices;
  config: Record<string, string>;
  /** What was taken away, for the report: "eth0 (nic on incusbr0)". */
  dropped: string[];
}

/**
 * What a drill copy keeps: its root disk, and its config without the MACs and host-side names of
 * its NICs, never started at boot, with the drill's resource limits. Every other device (NICs,
 * proxies, disks from host paths or volumes, GPUs, USB, unix devices) is dropped: a copy must not
 * share a MAC, an address, a port or a volume with its running original.
 */
export function drillCopy(inst: { config?: Record<string, string>; devices?: Devices }, limits: Record<string, string>): DrillCopy {
  const devices: Devices = {};
  const dropped: string[] = [];
  for (const [name, d] of Object.entries(inst.devices ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
    if (d.type === "disk" && d.path === "/") devices[name] = { ...d };
    else dropped.push(describeDevice(name, d));
  }
  const config: Record<string, string> = {};
  for (const [k, v] of Object.entries(inst.config ?? {})) {
    if (/^volatile\.[^.]+\.(hwaddr|host_name|name)$/.test(k)) continue;
    config[k] = v;
  }
  config["boot.autostart"] = "false";
  Object.assign(config, limits);
  return { devices, config, dropped };
}

export function describeDevice(name: string, d: Record<string, string>): string {
  switch (d.type) {
    case "nic":
      return `${name} (nic${d.network ? ` on ${d.network}` : d.parent ? ` on ${d.parent}` : ""})`;
    case "disk":
      return `${name} (disk ${d.pool ? `volume ${d.pool}/${d.source ?? "?"}` : `host path ${d.source ?? "?"}`})`;
    case "proxy":
      return `${name} (proxy ${d.listen ?? ""})`.replace(" )", ")");
    default:
      return `${name} (${d.type ?? "device"})`;
  }
}

/**
 * The custom volumes an instance's own disk devices name: its import into the scratch project
 * checks they exist there, so empty stand-ins are made for the import and removed before the copy
 * starts (its copy has none of those devices).
 */
export function placeholdersFor(devices: Devices | undefined): Array<{ pool: string; name: string }> {
  const out: Array<{ pool: string; name: string }> = [];
  for (const d of Object.values(devices ?? {})) {
    if (d.type !== "disk" || d.path === "/" || !d.pool || !d.source) continue;
    // "source" of a custom volume is its name (a snapshot, VOLUME/SNAP, is not made for a stand-in).
    if (d.source.includes("/") || out.some((p) => p.pool === d.pool && p.name === d.source)) continue;
    out.push({ pool: d.pool, name: d.source });
  }
  return out;
}

/**
 * Which items a drill run without names takes: at most `max`, the ones never drilled first, then
 * the longest ago (by `last`, the finish time of each item's last drill). Over runs, every item
 * is drilled in turn.
 */
export function rotation<T extends ItemKey>(items: readonly T[], last: ReadonlyMap<string, string>, max: number): T[] {
  const when = (i: T) => last.get(itemId(i)) ?? "";
  return [...items].sort((a, b) => when(a).localeCompare(when(b)) || itemId(a).localeCompare(itemId(b))).slice(0, max);
}

/** INCUS_BACKUP_DRILL_LIMITS / --limit: limits.* keys for the copies ("limits.cpu=1 limits.memory=1GiB"). */
export function parseLimits(entries: readonly string[], name: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of entries) {
    const m = /^(limits\.[a-z0-9._-]+)=(.+)$/.exec(e.trim());
    if (!m) throw new UsageError(`${name}: ${JSON.stringify(e)} is not a limit: use limits.KEY=VALUE, such as limits.cpu=1`);
    out[m[1]!] = m[2]!;
  }
  return out;
}

/** A drill copy's default limits: one CPU, so a drill never crowds out what runs in production. */
export const DEFAULT_DRILL_LIMITS: Record<string, string> = { "limits.cpu": "1" };
