// Issue 4 fixtures: test images built from busybox, the server objects a database backup covers read
// back for comparison, and removing a server's bridges before the lab loses track of them.
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { incusOk, startExtraServer, stopExtraServer, type Tracker } from "../../lab/lab";

type Obj = Record<string, unknown>;
type Config = Record<string, string>;

/** A list from `incus query` (an empty one may come back as null). */
async function list<T = Obj>(socket: string, path: string): Promise<T[]> {
  return (await query<T[] | null>(socket, path)) ?? [];
}

/** `incus query` on a lab daemon, parsed. */
export async function query<T = unknown>(socket: string, path: string, method = "GET", body?: unknown): Promise<T> {
  const args = ["query", "-X", method, path];
  if (body !== undefined) args.push("-d", JSON.stringify(body));
  const out = await incusOk(args, { socket });
  return (out.trim() === "" ? undefined : JSON.parse(out)) as T;
}

function sh(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(" ")}: exit ${code}: ${err}`))));
  });
}

export interface TestImages {
  /** Metadata tarball and rootfs tarball of a split image. */
  split: { meta: string; rootfs: string };
  /** One tarball with metadata.yaml and rootfs/. */
  unified: string;
}

/**
 * Builds a split and a unified image from the lab's busybox image, each with its own description
 * (so its own fingerprint, whatever else is on the server). Split: a new metadata tarball beside
 * busybox's rootfs tarball (a rootfs tarball is accepted where mksquashfs is missing). Unified:
 * metadata.yaml and rootfs/ in one tarball.
 */
export async function buildTestImages(tag: string, track: Tracker): Promise<TestImages> {
  const dir = await mkdtemp(join(tmpdir(), "ibk-images-"));
  track.defer(() => rm(dir, { recursive: true, force: true }));
  // `image export` writes the metadata tarball to the given path and the rootfs beside it (.root).
  await incusOk(["image", "export", "busybox", join(dir, "busybox")]);
  await mkdir(join(dir, "m"));
  await sh("tar", ["-xzf", join(dir, "busybox"), "-C", join(dir, "m")]);
  const yaml = await readFile(join(dir, "m", "metadata.yaml"), "utf8");
  const withDescription = (d: string) => yaml.replace(/description: .*/, `description: ${d}`);

  await mkdir(join(dir, "split"));
  await writeFile(join(dir, "split", "metadata.yaml"), withDescription(`incus-backup split test image ${tag}`));
  const meta = join(dir, "split-meta.tar.gz");
  await sh("tar", ["-czf", meta, "-C", join(dir, "split"), "metadata.yaml"]);

  await mkdir(join(dir, "unified", "rootfs"), { recursive: true });
  await writeFile(join(dir, "unified", "metadata.yaml"), withDescription(`incus-backup unified test image ${tag}`));
  await sh("tar", ["-xzf", join(dir, "busybox.root"), "-C", join(dir, "unified", "rootfs"), "--numeric-owner"]);
  const unified = join(dir, "unified.tar.gz");
  await sh("tar", ["-czf", unified, "--numeric-owner", "-C", join(dir, "unified"), "metadata.yaml", "rootfs"]);
  return { split: { meta, rootfs: join(dir, "busybox.root") }, unified };
}

/** Imports an image file set and returns its fingerprint. */
export async function importImage(files: string[], opts: { socket: string; project?: string; aliases?: string[]; public?: boolean }): Promise<string> {
  const args = ["image", "import", ...files, ...(opts.aliases ?? []).flatMap((a) => ["--alias", a]), ...(opts.public ? ["--public"] : [])];
  const out = await incusOk(args, { socket: opts.socket, ...(opts.project ? { project: opts.project } : {}) });
  const m = /fingerprint: ([0-9a-f]{64})/.exec(out);
  if (!m) throw new Error(`no fingerprint in: ${out}`);
  return m[1]!;
}

function without(o: Obj, ...fields: string[]): Obj {
  const copy = { ...o };
  for (const f of fields) delete copy[f];
  return copy;
}

function config(o: Obj, ...drop: string[]): Config {
  return Object.fromEntries(Object.entries((o.config ?? {}) as Config).filter(([k]) => !k.startsWith("volatile.") && !drop.includes(k)));
}

/** Whether a project has its own objects of a feature (the default project always has). */
function owns(project: Obj, feature: string): boolean {
  return project.name === "default" || (project.config as Config | undefined)?.[feature] === "true";
}

/**
 * Every object the database backup covers, keyed "kind project/parent/name", minus what the
 * server generates (used_by, status, locations, volatile.*) and a pool's `source` (a new server
 * gives its pool a directory of its own). Networks are the managed ones.
 */
export async function configObjects(socket: string): Promise<Record<string, Obj>> {
  const out: Record<string, Obj> = {};
  const projects = await list<Obj>(socket, "/1.0/projects?recursion=1");
  for (const p of projects) out[`project ${p.name}`] = { ...without(p, "used_by"), config: config(p) };
  for (const p of await list<Obj>(socket, "/1.0/storage-pools?recursion=1")) {
    out[`storage-pool ${p.name}`] = { ...without(p, "used_by", "status", "locations"), config: config(p, "source") };
  }
  for (const p of projects) {
    const q = `project=${encodeURIComponent(String(p.name))}`;
    if (owns(p, "features.networks")) {
      for (const acl of await list<Obj>(socket, `/1.0/network-acls?recursion=1&${q}`)) {
        out[`network-acl ${p.name}/${acl.name}`] = without(acl, "used_by");
      }
      for (const n of await list<Obj>(socket, `/1.0/networks?recursion=1&${q}`)) {
        if (n.managed !== true) continue;
        out[`network ${p.name}/${n.name}`] = { ...without(n, "used_by", "status", "locations"), config: config(n) };
        for (const f of await list<Obj>(socket, `/1.0/networks/${n.name}/forwards?recursion=1&${q}`)) {
          out[`network-forward ${p.name}/${n.name}/${f.listen_address}`] = without(f, "location");
        }
      }
    }
    if (owns(p, "features.networks.zones")) {
      for (const z of await list<Obj>(socket, `/1.0/network-zones?recursion=1&${q}`)) {
        out[`network-zone ${p.name}/${z.name}`] = without(z, "used_by");
        for (const r of await list<Obj>(socket, `/1.0/network-zones/${z.name}/records?recursion=1&${q}`)) {
          out[`network-zone-record ${p.name}/${z.name}/${r.name}`] = r;
        }
      }
    }
    if (owns(p, "features.profiles")) {
      for (const pr of await list<Obj>(socket, `/1.0/profiles?recursion=1&${q}`)) out[`profile ${p.name}/${pr.name}`] = without(pr, "used_by");
    }
  }
  return out;
}

/**
 * Images of all projects keyed "project/fingerprint", without what the server sets on upload
 * (upload and use times, the uploaded file's name); aliases sorted.
 */
export async function imageObjects(socket: string): Promise<Record<string, Obj>> {
  const out: Record<string, Obj> = {};
  for (const i of await list<Obj>(socket, "/1.0/images?recursion=1&all-projects=true")) {
    const aliases = [...((i.aliases ?? []) as Array<{ name: string }>)].sort((a, b) => a.name.localeCompare(b.name));
    out[`${i.project}/${i.fingerprint}`] = { ...without(i, "uploaded_at", "last_used_at", "filename", "update_source"), aliases };
  }
  return out;
}

/** Custom volumes of all projects and pools keyed "project/pool/name", without server-set fields. */
export async function volumeObjects(socket: string): Promise<Record<string, Obj>> {
  const out: Record<string, Obj> = {};
  for (const pool of await list<string>(socket, "/1.0/storage-pools")) {
    const name = pool.split("/").pop()!;
    for (const v of await list<Obj>(socket, `/1.0/storage-pools/${name}/volumes/custom?recursion=1&all-projects=true`)) {
      out[`${v.project}/${name}/${v.name}`] = { ...without(v, "used_by", "location", "created_at"), config: config(v) };
    }
  }
  return out;
}

/** Sets an object's writable fields (PUT) from what GET returned, changed by `edit`. */
export async function editObject(socket: string, path: string, edit: (o: Obj) => void): Promise<void> {
  const o = await query<Obj>(socket, path);
  edit(o);
  await query(socket, path, "PUT", o);
}

/**
 * Deletes a server's instances, its profiles' NICs and its managed networks. The lab's extra
 * servers share the lab container's network namespace: a bridge left behind when its server is
 * removed stays in the lab, and a second server cannot create a network of the same name.
 */
export async function removeNetworks(socket: string): Promise<void> {
  for (const i of await list<Obj>(socket, "/1.0/instances?recursion=1&all-projects=true")) {
    await incusOk(["delete", "--force", String(i.name)], { socket, project: String(i.project) });
  }
  const projects = await list<Obj>(socket, "/1.0/projects?recursion=1");
  for (const p of projects) {
    if (!owns(p, "features.profiles")) continue;
    for (const pr of await list<Obj>(socket, `/1.0/profiles?recursion=1&project=${p.name}`)) {
      const devices = pr.devices as Record<string, Config>;
      const kept = Object.fromEntries(Object.entries(devices).filter(([, d]) => d.type !== "nic"));
      if (Object.keys(kept).length === Object.keys(devices).length) continue;
      await query(socket, `/1.0/profiles/${pr.name}?project=${p.name}`, "PUT", { config: pr.config, description: pr.description, devices: kept });
    }
  }
  for (const p of projects) {
    if (!owns(p, "features.networks")) continue;
    for (const n of await list<Obj>(socket, `/1.0/networks?recursion=1&project=${p.name}`)) {
      if (n.managed === true) await incusOk(["network", "delete", String(n.name)], { socket, project: String(p.name) });
    }
  }
}

/**
 * An extra incusd in the lab (`bare`: no pool, no root disk, like a fresh install), removed with
 * `track.cleanup()` after its networks. Returns its socket and a function that removes it now.
 */
export async function extraServer(track: Tracker, opts: { bare?: boolean } = {}): Promise<{ socket: string; remove: () => Promise<void> }> {
  const name = `c4${Math.random().toString(36).slice(2, 10)}`;
  let socket: string | undefined;
  let removed = false;
  const remove = async () => {
    if (removed) return;
    removed = true;
    try {
      if (socket !== undefined) await removeNetworks(socket);
    } finally {
      await stopExtraServer(name);
    }
  };
  track.defer(remove);
  socket = await startExtraServer(name, { bare: opts.bare ?? false });
  return { socket, remove };
}
