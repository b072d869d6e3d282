// Instances (containers and VMs alike) and their backups, named after Incus's Go client.

import type { Writable } from "node:stream";
import { seg, signalOf, type IncusClient } from "./client";
import type { Operation, WaitOptions } from "./operations";
import { downloadTo, postForStream, uploadStream, type TransferOptions, type UploadSource } from "./transfer";

export interface Instance {
  name: string;
  project: string;
  type: "container" | "virtual-machine" | string;
  status: string;
  status_code: number;
  description: string;
  architecture: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  expanded_config?: Record<string, string>;
  expanded_devices?: Record<string, Record<string, string>>;
  ephemeral: boolean;
  stateful: boolean;
  profiles: string[];
  created_at: string;
  last_used_at?: string;
  location?: string;
}

export interface InstanceBackupsPost {
  name?: string;
  /** RFC 3339; the server deletes the backup by itself at that time. */
  expires_at?: string;
  instance_only?: boolean;
  optimized_storage?: boolean;
  compression_algorithm?: string;
}

export interface InstanceStatePut {
  action: "start" | "stop" | "restart" | "freeze" | "unfreeze";
  /** Seconds; for a stop, how long the clean shutdown may take. */
  timeout?: number;
  force?: boolean;
  stateful?: boolean;
}

export type Signal = { signal?: AbortSignal };

const base = (name: string) => `/1.0/instances/${seg(name)}`;

/** Instances of one project, or of all projects when `project` is undefined. */
export async function getInstances(c: IncusClient, project?: string, opts: Signal = {}): Promise<Instance[]> {
  const query = project === undefined ? { recursion: 1, "all-projects": true } : { recursion: 1, project };
  const list = await c.list<Instance>("/1.0/instances", "List instances", { query, ...opts });
  // Older servers leave project out of single-project listings.
  return list.map((i) => ({ ...i, project: i.project || project || "default" }));
}

export async function getInstance(c: IncusClient, project: string, name: string, opts: Signal = {}): Promise<Instance> {
  const i = await c.get<Instance>(base(name), `Get instance ${name}`, { query: { project }, ...opts });
  return { ...i, project: i.project || project };
}

/** The writable part of an instance (what PUT takes). */
export interface InstancePut {
  architecture: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  ephemeral: boolean;
  profiles: string[];
  stateful: boolean;
  description: string;
}

/** Replaces an instance's writable fields (its own config and devices, not its profiles'). */
export async function updateInstance(c: IncusClient, project: string, name: string, put: InstancePut, opts: Signal = {}): Promise<void> {
  await c.sync("PUT", base(name), `Update instance ${name}`, { query: { project }, body: put, ...opts });
}

/** Changes some config keys of an instance; an empty value removes a key. */
export async function patchInstanceConfig(c: IncusClient, project: string, name: string, config: Record<string, string>, opts: Signal = {}): Promise<void> {
  await c.sync("PATCH", base(name), `Update instance ${name}`, { query: { project }, body: { config }, ...opts });
}

/** The names of an instance's snapshots. */
export async function getInstanceSnapshotNames(c: IncusClient, project: string, name: string, opts: Signal = {}): Promise<string[]> {
  const urls = await c.list<string>(`${base(name)}/snapshots`, `List snapshots of instance ${name}`, { query: { project }, ...opts });
  return urls.map((u) => decodeURIComponent(u.split("?")[0]!.split("/").pop() ?? "")).filter(Boolean);
}

/** The writable fields of an instance as it is, to change some of them with updateInstance. */
export function instancePut(i: Instance): InstancePut {
  return {
    architecture: i.architecture,
    config: { ...i.config },
    devices: structuredClone(i.devices ?? {}),
    ephemeral: i.ephemeral,
    profiles: [...i.profiles],
    stateful: i.stateful,
    description: i.description,
  };
}

/** Changes an instance's state and waits for it. */
export async function updateInstanceState(
  c: IncusClient,
  project: string,
  name: string,
  state: InstanceStatePut,
  opts: WaitOptions = {},
): Promise<void> {
  const op = await c.operation("PUT", `${base(name)}/state`, `${capitalize(state.action)} instance ${name}`, {
    query: { project },
    body: state,
    ...signalOf(opts),
  });
  await op.wait(opts);
}

/** Renames a (stopped) instance. */
export async function renameInstance(c: IncusClient, project: string, name: string, newName: string, opts: WaitOptions = {}) {
  const op = await c.operation("POST", base(name), `Rename instance ${name} to ${newName}`, {
    query: { project },
    body: { name: newName },
    ...signalOf(opts),
  });
  await op.wait(opts);
}

/** Moves a stopped instance to another member of the cluster (its storage is copied there). */
export async function moveInstanceToMember(c: IncusClient, project: string, name: string, member: string, opts: WaitOptions = {}) {
  const op = await c.operation("POST", base(name), `Move instance ${name} to member ${member}`, {
    query: { project, target: member },
    body: { name, migration: true, live: false },
    ...signalOf(opts),
  });
  await op.wait(opts);
}

export async function deleteInstance(c: IncusClient, project: string, name: string, opts: WaitOptions = {}) {
  const op = await c.operation("DELETE", base(name), `Delete instance ${name}`, { query: { project }, ...signalOf(opts) });
  await op.wait(opts);
}

/** Starts the server-side creation of a backup; wait on the returned operation. */
export function createInstanceBackup(
  c: IncusClient,
  project: string,
  name: string,
  backup: InstanceBackupsPost,
  opts: Signal = {},
): Promise<Operation> {
  return c.operation("POST", `${base(name)}/backups`, `Create backup of instance ${name}`, {
    query: { project },
    body: backup,
    ...opts,
  });
}

/** Streams a finished server-side backup into `sink`. */
export function getInstanceBackupFile(
  c: IncusClient,
  project: string,
  name: string,
  backupName: string,
  sink: Writable,
  opts: TransferOptions = {},
) {
  return downloadTo(c, `${base(name)}/backups/${seg(backupName)}/export`, `Download backup of instance ${name}`, sink, {
    ...opts,
    query: { project },
  });
}

/**
 * Asks the server to stream a new backup straight into `sink` (API extension `direct_backup`):
 * no copy is written on the server first. The body takes no name or expiry.
 */
export function createInstanceBackupStream(
  c: IncusClient,
  project: string,
  name: string,
  backup: Omit<InstanceBackupsPost, "name" | "expires_at">,
  sink: Writable,
  opts: TransferOptions = {},
) {
  return postForStream(c, `${base(name)}/backups`, `Stream a backup of instance ${name}`, backup, sink, { ...opts, query: { project } });
}

export async function deleteInstanceBackup(c: IncusClient, project: string, name: string, backupName: string, opts: Signal = {}) {
  const op = await c.operation("DELETE", `${base(name)}/backups/${seg(backupName)}`, `Delete backup of instance ${name}`, {
    query: { project },
    ...opts,
  });
  await op.wait(opts);
}

export interface InstanceBackupArgs {
  project: string;
  /** The backup tarball. */
  source: UploadSource;
  /** Create the instance under this name instead of the one in the backup. */
  name?: string;
  /** Put the root volume on this pool instead of the one in the backup. */
  pool?: string;
}

/**
 * Uploads a backup tarball to create a new instance from it. The server answers with an operation
 * that fails if the name is taken; the new instance is stopped.
 */
export function createInstanceFromBackup(c: IncusClient, args: InstanceBackupArgs, opts: TransferOptions = {}): Promise<Operation> {
  const headers: Record<string, string> = {};
  if (args.name) headers["x-incus-name"] = args.name;
  if (args.pool) headers["x-incus-pool"] = args.pool;
  return uploadStream(c, "/1.0/instances", `Import instance ${args.name ?? "from backup"}`, args.source, {
    ...opts,
    query: { project: args.project },
    headers,
  });
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
