// A directory on this machine as the target of a file restore (restore --path --to DIR).

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { chmod, copyFile, lchown, link, lstat, lutimes, mkdir, readlink, rename, symlink, unlink, utimes } from "node:fs/promises";
import { join } from "node:path";
import { IntegrityError } from "../errors";
import type { Existing, FileTarget, RestoreEntry } from "../engine/file_restore";
import type { Reporter } from "../engine/reporter";
import type { Staging } from "./staging";

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
    private readonly staging: Staging,
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
    const tmp = join(this.staging.dir, `w-${Math.random().toString(36).slice(2)}`);
    await copyFile(data, tmp);
    await this.owner(tmp, e);
    await chmod(tmp, e.mode);
    await utimes(tmp, e.mtime, e.mtime);
    await rename(tmp, f);
  }

  async symlink(e: RestoreEntry): Promise<void> {
    const f = await this.full(e.path);
    await symlink(e.link ?? "", f);
    await this.owner(f, e);
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
      await this.owner(f, e);
      await chmod(f, e.mode);
      await utimes(f, e.mtime, e.mtime);
    }
  }

  private async owner(f: string, e: RestoreEntry): Promise<void> {
    if (process.getuid?.() !== 0) return;
    try {
      await lchown(f, e.uid, e.gid);
    } catch (err) {
      if (!this.chownWarned) this.reporter.warn(`cannot set owners in ${this.root} (${(err as Error).message}); files keep this tool's user`);
      this.chownWarned = true;
    }
  }
}
