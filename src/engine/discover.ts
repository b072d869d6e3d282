// What exists in Incus right now, as item keys the selection and the planner understand.

import type { IncusClient } from "../incus/client";
import { getInstances, type Instance } from "../incus/instances";
import { getStoragePools } from "../incus/storage_pools";
import { getStoragePoolVolumes, type StorageVolume } from "../incus/storage_volumes";
import type { ItemKey } from "../core/selection";
import { memberOf } from "../core/manifest";

export interface LiveInstance extends ItemKey {
  kind: "instance";
  instance: Instance;
}

export interface LiveVolume extends ItemKey {
  kind: "volume";
  pool: string;
  volume: StorageVolume;
}

/** Instances of one project (or all), as items; in a cluster, with the member each is on (for --member, not part of its identity). */
export async function liveInstances(c: IncusClient, project: string | undefined, signal?: AbortSignal): Promise<LiveInstance[]> {
  const list = await getInstances(c, project, signal === undefined ? {} : { signal });
  return list.map((i) => {
    const member = memberOf(i);
    return { kind: "instance", project: i.project, name: i.name, ...(member === undefined ? {} : { member }), instance: i };
  });
}

/** Custom volumes of every pool in one project (or all), as items: a cluster's local ones once per member that has one. */
export async function liveVolumes(c: IncusClient, project: string | undefined, signal?: AbortSignal): Promise<LiveVolume[]> {
  const opts = signal === undefined ? {} : { signal };
  const out: LiveVolume[] = [];
  for (const pool of await getStoragePools(c, opts)) {
    for (const v of await getStoragePoolVolumes(c, pool.name, project, opts)) {
      // Some servers list a volume's snapshots among the volumes, as "volume/snapshot": they are backed up with their volume.
      if (v.type !== "custom" || v.name.includes("/")) continue;
      // A volume of a local pool in a cluster is its member's: the member is part of its key.
      const member = memberOf(v);
      out.push({ kind: "volume", project: v.project, pool: pool.name, name: v.name, ...(member === undefined ? {} : { member }), volume: v });
    }
  }
  return out;
}

/** The pool holding an instance's root disk, if it can be told from its devices. */
export function rootPool(i: Instance): string | undefined {
  const devices = i.expanded_devices ?? i.devices;
  for (const d of Object.values(devices ?? {})) {
    if (d.type === "disk" && d.path === "/" && d.pool) return d.pool;
  }
  return undefined;
}

/**
 * Instances that have a custom volume attached (directly or through a profile): they must be
 * stopped while the volume's contents are replaced. Uses the volume's `used_by` (authoritative, and
 * covers projects that share the default project's volumes) plus a scan of the instances' devices.
 */
export function instancesUsingVolume(instances: readonly Instance[], volume: StorageVolume, pool: string): Instance[] {
  const direct = new Set<string>();
  const profiles = new Set<string>();
  for (const ref of volume.used_by ?? []) {
    const u = new URL(ref, "http://incus");
    const project = u.searchParams.get("project") ?? "default";
    const m = /^\/1\.0\/(instances|profiles)\/([^/]+)$/.exec(u.pathname);
    if (!m) continue;
    (m[1] === "instances" ? direct : profiles).add(`${project}/${decodeURIComponent(m[2]!)}`);
  }
  // In a cluster, a volume of a local pool is one member's: instances elsewhere that name a volume
  // of that name use their own member's.
  const member = memberOf(volume);
  return instances.filter((i) => {
    if (direct.has(`${i.project}/${i.name}`)) return true;
    if (member !== undefined && memberOf(i) !== undefined && memberOf(i) !== member) return false;
    if (i.profiles.some((p) => profiles.has(`${i.project}/${p}`))) return true;
    if (i.project !== volume.project) return false;
    const devices = i.expanded_devices ?? i.devices ?? {};
    return Object.values(devices).some((d) => d.type === "disk" && d.pool === pool && d.source === volume.name);
  });
}

/**
 * Whether a volume is used by the given instance and nothing else (its used_by names only it):
 * the backup container's own state volume, which holds secrets such as the restic password.
 */
export function usedOnlyBy(volume: StorageVolume, who: { project: string; name: string }): boolean {
  const refs = volume.used_by ?? [];
  return (
    refs.length > 0 &&
    refs.every((ref) => {
      const u = new URL(ref, "http://incus");
      return u.pathname === `/1.0/instances/${encodeURIComponent(who.name)}` && (u.searchParams.get("project") ?? "default") === who.project;
    })
  );
}
