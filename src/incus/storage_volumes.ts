// Custom storage volumes and their backups, named after Incus's Go client.

import type { Writable } from "node:stream";
import { seg, signalOf, type IncusClient } from "./client";
import type { Signal } from "./instances";
import type { Operation, WaitOptions } from "./operations";
import { downloadTo, postForStream, uploadStream, type TransferOptions, type UploadSource } from "./transfer";

export interface StorageVolume {
  name: string;
  type: string;
  pool: string;
  project: string;
  description: string;
  config: Record<string, string>;
  content_type: "filesystem" | "block" | "iso" | string;
  used_by?: string[];
  location?: string;
  created_at?: string;
}

export interface StorageVolumeBackupsPost {
  name?: string;
  expires_at?: string;
  volume_only?: boolean;
  optimized_storage?: boolean;
  compression_algorithm?: string;
}

const custom = (pool: string) => `/1.0/storage-pools/${seg(pool)}/volumes/custom`;
const vol = (pool: string, name: string) => `${custom(pool)}/${seg(name)}`;

/**
 * In a cluster, `target` names the member whose volume is meant: two members may each have a
 * volume of one name on a local pool, and Incus refuses to guess (`incus ... --target M`).
 */
export type OnMember = { target?: string | undefined };
const where = (project: string, target: string | undefined) => ({ project, ...(target === undefined ? {} : { target }) });

/** Custom volumes of a pool, in one project or in all of them when `project` is undefined. */
export async function getStoragePoolVolumes(c: IncusClient, pool: string, project?: string, opts: Signal = {}): Promise<StorageVolume[]> {
  const query = project === undefined ? { recursion: 1, "all-projects": true } : { recursion: 1, project };
  const list = await c.list<StorageVolume>(custom(pool), `List custom volumes of pool ${pool}`, { query, ...opts });
  return list.map((v) => ({ ...v, pool, project: v.project || project || "default" }));
}

export async function getStoragePoolVolume(c: IncusClient, project: string, pool: string, name: string, opts: Signal = {}): Promise<StorageVolume> {
  const v = await c.get<StorageVolume>(vol(pool, name), `Get volume ${pool}/${name}`, { query: { project }, ...opts });
  return { ...v, pool, project: v.project || project };
}

export async function deleteStoragePoolVolume(c: IncusClient, project: string, pool: string, name: string, opts: Signal = {}) {
  await c.sync("DELETE", vol(pool, name), `Delete volume ${pool}/${name}`, { query: { project }, ...opts });
}

/**
 * Copies a custom volume onto another one of the same pool and project. With `refresh`, the
 * target keeps its name, config and attachments and ends up with exactly the source's contents.
 */
export async function copyStoragePoolVolume(
  c: IncusClient,
  project: string,
  pool: string,
  source: string,
  target: string,
  args: { refresh?: boolean; volumeOnly?: boolean; contentType?: string; member?: string },
  opts: WaitOptions = {},
): Promise<void> {
  const op = await c.operation("POST", custom(pool), `Copy volume ${pool}/${source} to ${target}`, {
    query: { project, ...(args.member === undefined ? {} : { target: args.member }) },
    body: {
      name: target,
      type: "custom",
      ...(args.contentType === undefined ? {} : { content_type: args.contentType }),
      source: { type: "copy", name: source, pool, volume_only: args.volumeOnly ?? true, refresh: args.refresh ?? false },
    },
    ...signalOf(opts),
  });
  await op.wait(opts);
}

export function createStorageVolumeBackup(
  c: IncusClient,
  project: string,
  pool: string,
  name: string,
  backup: StorageVolumeBackupsPost,
  opts: Signal & OnMember = {},
): Promise<Operation> {
  const { target, ...rest } = opts;
  return c.operation("POST", `${vol(pool, name)}/backups`, `Create backup of volume ${pool}/${name}`, {
    query: where(project, target),
    body: backup,
    ...rest,
  });
}

export function getStorageVolumeBackupFile(
  c: IncusClient,
  project: string,
  pool: string,
  name: string,
  backupName: string,
  sink: Writable,
  opts: TransferOptions & OnMember = {},
) {
  const { target, ...rest } = opts;
  return downloadTo(c, `${vol(pool, name)}/backups/${seg(backupName)}/export`, `Download backup of volume ${pool}/${name}`, sink, {
    ...rest,
    query: where(project, target),
  });
}

/** Streams a new volume backup straight into `sink` (API extension `direct_backup`). */
export function createStorageVolumeBackupStream(
  c: IncusClient,
  project: string,
  pool: string,
  name: string,
  backup: Omit<StorageVolumeBackupsPost, "name" | "expires_at">,
  sink: Writable,
  opts: TransferOptions & OnMember = {},
) {
  const { target, ...rest } = opts;
  return postForStream(c, `${vol(pool, name)}/backups`, `Stream a backup of volume ${pool}/${name}`, backup, sink, {
    ...rest,
    query: where(project, target),
  });
}

export async function deleteStorageVolumeBackup(c: IncusClient, project: string, pool: string, name: string, backupName: string, opts: Signal & OnMember = {}) {
  const { target, ...rest } = opts;
  const op = await c.operation("DELETE", `${vol(pool, name)}/backups/${seg(backupName)}`, `Delete backup of volume ${pool}/${name}`, {
    query: where(project, target),
    ...rest,
  });
  await op.wait(rest);
}

/** Uploads a volume backup tarball to create a new custom volume (fails if the name is taken). */
export function createStoragePoolVolumeFromBackup(
  c: IncusClient,
  args: { project: string; pool: string; source: UploadSource; name?: string; target?: string },
  opts: TransferOptions = {},
): Promise<Operation> {
  const headers: Record<string, string> = {};
  if (args.name) headers["x-incus-name"] = args.name;
  // In a cluster, `target` is the member whose (local) pool gets it: the server forwards the upload there.
  return uploadStream(c, custom(args.pool), `Import volume ${args.pool}/${args.name ?? "from backup"}`, args.source, {
    ...opts,
    query: { project: args.project, ...(args.target === undefined ? {} : { target: args.target }) },
    headers,
  });
}
