// Where a file restore writes: a directory on this machine (--to), or a running instance through
// Incus's file API (an instance's own files, or a volume's through an instance it is attached to).

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, copyFile, lchown, link, lstat, lutimes, mkdir, readlink, rename, symlink, unlink, utimes } from "node:fs/promises";
import { join, posix } from "node:path";
import { IntegrityError, NotFoundError, UsageError } from "../errors";
import type { Manifest } from "../core/manifest";
import { IncusNotFoundError } from "../incus/errors";
import { getInstance, getInstances } from "../incus/instances";
import { getStoragePoolVolume } from "../incus/storage_volumes";
import { instancesUsingVolume } from "./discover";
import type { IncusClient } from "../incus/client";
import { createInstanceFile, deleteInstanceFile, getInstanceFile, getInstanceFileInfo, instanceFileSha256 } from "../incus/instance_files";
import type { Existing, FileTarget, RestoreEntry } from "./file_restore";
import type { Reporter } from "./reporter";

/**
 * A directory on this machine: a path of the item lands at DIR/path. Nothing is ever written
 * through a symlink: every directory on the way is checked with lstat, files are renamed into place
 * (replacing a symlink, never following it), and owners are set only when running as root.
 */
export class DirectoryTarget implements FileTarget {
  readonly label: string;
  private readonly dirs: RestoreEntry[] = [];
  private readonly checked = new Set<string>();
  private chownWarned = false;

  constructor(
    private readonly root: string,
    private readonly stageDir: string,
    private readonly reporter: Reporter,
  ) {
    this.label = `directory ${root}`;
  }

  where(path: string): string {
    return join(this.root, path);
  }

  /** The full path, after checking that no directory between the root and it is a symlink. */
  private async full(path: string): Promise<string> {
    const parts = path.split("/").filter(Boolean);
    let at = this.root;
    for (const p of parts.slice(0, -1)) {
      at = join(at, p);
      if (this.checked.has(at)) continue;
      const st = await lstat(at).catch(() => undefined);
      if (st === undefined) break;
      if (st.isSymbolicLink()) throw new IntegrityError(`${at} is a symlink: refusing to write through it; nothing under it was written`);
      if (!st.isDirectory()) throw new IntegrityError(`${at} is not a directory`);
      this.checked.add(at);
    }
    return join(this.root, ...parts);
  }

  async stat(path: string): Promise<Existing | undefined> {
    const f = await this.full(path);
    const st = await lstat(f).catch(() => undefined);
    if (!st) return undefined;
    const type = st.isDirectory() ? "dir" : st.isFile() ? "file" : st.isSymbolicLink() ? "symlink" : "other";
    return { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, ...(type === "symlink" ? { link: await readlink(f) } : {}) };
  }

  async sameData(path: string, sha256: string): Promise<boolean> {
    const h = createHash("sha256");
    for await (const c of createReadStream(await this.full(path))) h.update(c as Buffer);
    return h.digest("hex") === sha256;
  }

  async remove(path: string): Promise<void> {
    await unlink(await this.full(path));
  }

  async mkdir(e: RestoreEntry): Promise<void> {
    await mkdir(await this.full(e.path), { mode: 0o700 });
    this.dirs.push(e);
  }

  async writeFile(e: RestoreEntry, data: string): Promise<void> {
    const f = await this.full(e.path);
    // Staged in the same file system: a rename puts it in place whole. A file staged for a hard
    // link's target is copied, as it may serve again.
    const tmp = join(this.stageDir, `w-${Math.random().toString(36).slice(2)}`);
    await copyFile(data, tmp);
    await this.owner(tmp, e, false);
    await chmod(tmp, e.mode);
    await utimes(tmp, e.mtime, e.mtime);
    await rename(tmp, f);
  }

  async symlink(e: RestoreEntry): Promise<void> {
    const f = await this.full(e.path);
    await symlink(e.link ?? "", f);
    await this.owner(f, e, true);
    await lutimes(f, e.mtime, e.mtime).catch(() => undefined);
  }

  async hardlink(e: RestoreEntry, to: string): Promise<boolean> {
    await link(await this.full(to), await this.full(e.path));
    return true;
  }

  async finish(): Promise<void> {
    // Deepest first, so a read-only directory does not stop its children's times being set.
    for (const e of [...this.dirs].reverse()) {
      const f = await this.full(e.path);
      await this.owner(f, e, false);
      await chmod(f, e.mode);
      await utimes(f, e.mtime, e.mtime);
    }
  }

  private async owner(f: string, e: RestoreEntry, isLink: boolean): Promise<void> {
    if (process.getuid?.() !== 0) return;
    try {
      await lchown(f, e.uid, e.gid);
    } catch (err) {
      if (!this.chownWarned) this.reporter.warn(`cannot set owners in ${this.root} (${(err as Error).message}); files keep this tool's user`);
      this.chownWarned = true;
      void isLink;
    }
  }
}

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
    await createInstanceFile(this.client, this.project, this.name, this.at(e.path), { type: "file", uid: e.uid, gid: e.gid, mode: e.mode, content: createReadStream(data) }, this.signal);
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
export async function instanceTargetFor(client: IncusClient, m: Manifest, signal?: AbortSignal): Promise<InstanceTarget> {
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
  return new InstanceTarget(client, m.project, m.name, "", `the running instance ${label}`, signal);
}

/** A volume's files go through a running instance that has it attached (the whole volume, at a path). */
export async function volumeTargetFor(client: IncusClient, m: Manifest, signal?: AbortSignal): Promise<InstanceTarget> {
  const pool = m.pool ?? "";
  const label = `${pool}/${m.name}`;
  const opts = signal ? { signal } : {};
  const volume = await getStoragePoolVolume(client, m.project, pool, m.name, opts).catch((err: unknown) => {
    if (err instanceof IncusNotFoundError) {
      throw new NotFoundError(`volume ${label} is not on the server, so there is nothing to restore files into; nothing was changed`, {
        hint: `restore the whole volume (incus-backup restore --volume --name ${label}), ${TO_HINT}`,
      });
    }
    throw err;
  });
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
  return new InstanceTarget(client, running.i.project, running.i.name, running.path, `volume ${label}, mounted at ${running.path} in the running instance ${at}`, signal);
}
