// Where a file restore writes into Incus: a running instance, through Incus's file API (an
// instance's own files, or a volume's through an instance it is attached to). A directory of this
// machine (--to) is src/local/directory_target.ts.

import { posix } from "node:path";
import { NotFoundError, UsageError } from "../errors";
import type { Manifest } from "../core/manifest";
import { IncusNotFoundError } from "../incus/errors";
import { getInstance, getInstances } from "../incus/instances";
import { getStoragePoolVolumes } from "../incus/storage_volumes";
import { volumeLanding } from "../core/plan";
import { clusterInfo } from "./cluster";
import { instancesUsingVolume } from "./discover";
import type { IncusClient } from "../incus/client";
import { createInstanceFile, deleteInstanceFile, getInstanceFile, getInstanceFileInfo, instanceFileSha256 } from "../incus/instance_files";
import type { Existing, FileTarget, RestoreEntry, Stage } from "./file_restore";

/**
 * A running instance, through Incus's file API: a path lands at prefix + path inside it (the prefix
 * is where a volume is mounted, or "" for the instance's own files). Incus cannot set a file's time,
 * change an existing directory, or make a hard link: restored files get the current time, existing
 * directories stay as they are, and a hard link becomes a copy. A replaced file or symlink is
 * removed first, so that the owner and mode of the backup apply.
 */
export class InstanceTarget implements FileTarget {
  readonly label: string;

  constructor(
    private readonly client: IncusClient,
    private readonly project: string,
    private readonly name: string,
    private readonly prefix: string,
    label: string,
    private readonly stage: Stage,
    private readonly signal?: AbortSignal,
  ) {
    this.label = label;
  }

  private at(path: string): string {
    return this.prefix === "" ? path : path === "/" ? this.prefix : posix.join(this.prefix, path);
  }

  where(path: string): string {
    return `${this.project}/${this.name}:${this.at(path)}`;
  }

  async stat(path: string): Promise<Existing | undefined> {
    const info = await getInstanceFileInfo(this.client, this.project, this.name, this.at(path), this.signal);
    if (!info) return undefined;
    const type = info.type === "directory" ? "dir" : info.type === "file" ? "file" : info.type === "symlink" ? "symlink" : "other";
    const out: Existing = { type, mode: info.mode & 0o7777, uid: info.uid, gid: info.gid };
    if (type === "symlink") {
      const parts: Buffer[] = [];
      for await (const c of await getInstanceFile(this.client, this.project, this.name, this.at(path), this.signal)) parts.push(c as Buffer);
      out.link = Buffer.concat(parts).toString();
    }
    return out;
  }

  async sameData(path: string, sha256: string): Promise<boolean> {
    return (await instanceFileSha256(this.client, this.project, this.name, this.at(path), this.signal)) === sha256;
  }

  async remove(path: string): Promise<void> {
    await deleteInstanceFile(this.client, this.project, this.name, this.at(path), this.signal);
  }

  async mkdir(e: RestoreEntry): Promise<void> {
    await createInstanceFile(this.client, this.project, this.name, this.at(e.path), { type: "directory", uid: e.uid, gid: e.gid, mode: e.mode }, this.signal);
  }

  async writeFile(e: RestoreEntry, data: string): Promise<void> {
    await createInstanceFile(this.client, this.project, this.name, this.at(e.path), { type: "file", uid: e.uid, gid: e.gid, mode: e.mode, content: this.stage.open(data) }, this.signal);
  }

  async symlink(e: RestoreEntry): Promise<void> {
    await createInstanceFile(this.client, this.project, this.name, this.at(e.path), { type: "symlink", uid: e.uid, gid: e.gid, mode: 0o777, content: e.link ?? "" }, this.signal);
  }

  async hardlink(): Promise<boolean> {
    return false;
  }

  async finish(): Promise<void> {}
}

const TO_HINT = "or restore into a directory with --to DIR and copy from there";

/** The instance a backup of it restores files into: it must exist and run. */
export async function instanceTargetFor(client: IncusClient, m: Manifest, stage: Stage, signal?: AbortSignal): Promise<InstanceTarget> {
  const label = `${m.project}/${m.name}`;
  const i = await getInstance(client, m.project, m.name, signal ? { signal } : {}).catch((err: unknown) => {
    if (err instanceof IncusNotFoundError) {
      throw new NotFoundError(`instance ${label} is not on the server, so there is nothing to restore files into; nothing was changed`, {
        hint: `restore the whole instance (incus-backup restore --instance --name ${m.name}), ${TO_HINT}`,
      });
    }
    throw err;
  });
  if (i.status !== "Running") {
    throw new UsageError(`instance ${label} is ${i.status.toLowerCase()}: files are restored into a running instance; nothing was changed`, {
      hint: `start it (incus start ${m.name}), ${TO_HINT}`,
    });
  }
  return new InstanceTarget(client, m.project, m.name, "", `the running instance ${label}`, stage, signal);
}

/** A volume's files go through a running instance that has it attached (the whole volume, at a path). */
export async function volumeTargetFor(client: IncusClient, m: Manifest, stage: Stage, signal?: AbortSignal): Promise<InstanceTarget> {
  const pool = m.pool ?? "";
  const label = `${pool}/${m.name}`;
  const opts = signal ? { signal } : {};
  const notThere = () =>
    new NotFoundError(`volume ${label} is not on the server, so there is nothing to restore files into; nothing was changed`, {
      hint: `restore the whole volume (incus-backup restore --volume --name ${label}), ${TO_HINT}`,
    });
  // In a cluster, several members may have a volume of this name (a local pool): the one a
  // restore of the whole volume would replace (its member's, if the cluster has it).
  const all = await getStoragePoolVolumes(client, pool, m.project, opts).catch((err: unknown) => {
    throw err instanceof IncusNotFoundError ? notThere() : err;
  });
  const named = all.filter((v) => v.name === m.name && v.type === "custom");
  const cluster = m.member === undefined ? { clustered: false, members: [] } : await clusterInfo(client, signal);
  const landing = volumeLanding(named, `${m.project}/${label}`, m, cluster);
  const volume = landing.existing;
  if (volume === undefined) {
    if (named.length === 0 || landing.placement.member === undefined) throw notThere();
    throw new NotFoundError(`member ${landing.placement.member} has no volume ${label} (${named.length > 1 ? "members" : "member"} ${named.map((v) => v.location ?? "?").sort().join(" and ")} ${named.length > 1 ? "have" : "has"} one of that name, another volume), so there is nothing to restore files into; nothing was changed`, {
      hint: `restore the whole volume (incus-backup restore --volume --name ${label} --member ${m.member!}), ${TO_HINT}`,
    });
  }
  const users = instancesUsingVolume(await getInstances(client, undefined, opts), volume, pool);
  const mounts = users.flatMap((i) =>
    Object.values(i.expanded_devices ?? i.devices ?? {})
      .filter((d) => d.type === "disk" && d.pool === pool && d.source === m.name && typeof d.path === "string" && d.path.startsWith("/"))
      .map((d) => ({ i, path: d.path! })),
  );
  const running = mounts.find((x) => x.i.status === "Running");
  if (!running) {
    const where = mounts.map((x) => `${x.i.project}/${x.i.name} (${x.i.status.toLowerCase()})`);
    throw new UsageError(
      `volume ${label} is not mounted in a running instance${where.length ? ` (attached to ${where.join(", ")})` : ""}: its files are restored through one; nothing was changed`,
      { hint: `attach it to a running instance (incus config device add INSTANCE ${m.name} disk pool=${pool} source=${m.name} path=/mnt/${m.name}), ${TO_HINT}` },
    );
  }
  const at = `${running.i.project}/${running.i.name}`;
  return new InstanceTarget(client, running.i.project, running.i.name, running.path, `volume ${label}, mounted at ${running.path} in the running instance ${at}`, stage, signal);
}
