// Test fixtures around the tool: a private Incus server, temporary repositories, and what "unchanged" means.
import { createHash, randomBytes } from "node:crypto";
import { lstat, mkdtemp, open, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DirectoryStore } from "../../../src/repository/directory";
import { apiGet, incusOk, labSocket, startExtraServer, stopExtraServer, type Tracker } from "../../lab/lab";

/**
 * An extra, empty incusd in the lab with the busybox image, for commands that act on everything
 * (`backup --all`, `restore --all`): on the shared lab they would pick up whatever else is there.
 * It is set up like the lab's main daemon, as a real host: a managed bridge on eth0 of the default
 * profile (every instance has a NIC), and a btrfs pool beside the default dir pool.
 * It is removed with everything in it by `track.cleanup()`. `version`: in that lab (default: the primary).
 */
export async function isolatedServer(track: Tracker, opts: { version?: string } = {}): Promise<string> {
  const name = `t${randomBytes(5).toString("hex")}`;
  track.defer(() => stopExtraServer(name, opts));
  const socket = await startExtraServer(name, { ...opts, real: true });
  const dir = await mkdtemp(join(tmpdir(), "ibk-image-"));
  try {
    await incusOk(["image", "export", "busybox", join(dir, "busybox")], opts.version ? { socket: labSocket(opts.version) } : {});
    await incusOk(["image", "import", join(dir, "busybox"), join(dir, "busybox.root"), "--alias", "busybox"], { socket });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return socket;
}

/** A new empty directory, removed by `track.cleanup()`. */
export async function tempDir(track: Tracker, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  track.defer(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A new repository, made as `incus-backup init` makes one (in-process: tests of `init` itself run
 * the tool), removed by `track.cleanup()`. Returns its path.
 */
export async function repoDir(track: Tracker): Promise<string> {
  const dir = await tempDir(track, "ibk-repo-");
  await (await DirectoryStore.open(dir, { create: true })).repo.ensureId();
  return dir;
}

export interface FileState {
  path: string;
  mode: number;
  type: "file" | "dir" | "other";
  size: number;
  mtimeMs: number;
  sha256?: string;
}

/** Every entry under `dir` (not `dir` itself) with its mode, size, time and content hash. */
export async function treeState(dir: string): Promise<FileState[]> {
  const out: FileState[] = [];
  async function walk(rel: string) {
    for (const name of (await readdir(join(dir, rel))).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(dir, path));
      const type = st.isDirectory() ? "dir" : st.isFile() ? "file" : "other";
      const entry: FileState = { path, mode: st.mode & 0o7777, type, size: st.size, mtimeMs: st.mtimeMs };
      if (type === "file") entry.sha256 = createHash("sha256").update(await readFile(join(dir, path))).digest("hex");
      out.push(entry);
      if (type === "dir") await walk(path);
    }
  }
  await walk("");
  return out;
}

/** Entries of a repository whose mode is not 0600 (files) or 0700 (directories), as "0644 path". */
export async function wrongModes(dir: string): Promise<string[]> {
  return (await treeState(dir))
    .filter((e) => e.mode !== (e.type === "dir" ? 0o700 : 0o600))
    .map((e) => `${e.mode.toString(8).padStart(4, "0")} ${e.path}`);
}

interface InstanceRecord {
  name: string;
  status: string;
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  profiles: string[];
  expanded_config: Record<string, string>;
  expanded_devices: Record<string, Record<string, string>>;
  [key: string]: unknown;
}

/** Fields the server sets by itself and that no restore can or should reproduce. */
const SERVER_FIELDS = ["created_at", "last_used_at", "status", "status_code", "location"];

function withoutVolatile(config: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(config).filter(([k]) => !k.startsWith("volatile.")));
}

/** What a restore must bring back of an instance: `GET /1.0/instances/NAME` minus volatile.* and server-set fields. */
export async function instanceShape(name: string, where: { socket?: string; project?: string } = {}): Promise<Record<string, unknown>> {
  const path = `/1.0/instances/${name}${where.project ? `?project=${where.project}` : ""}`;
  const inst = (await apiGet(path, { socket: where.socket })) as InstanceRecord;
  const shape: Record<string, unknown> = { ...inst };
  for (const f of SERVER_FIELDS) delete shape[f];
  shape.config = withoutVolatile(inst.config);
  shape.expanded_config = withoutVolatile(inst.expanded_config);
  return shape;
}

/** Running / Stopped, as Incus reports it. */
export async function instanceStatus(name: string, where: { socket?: string; project?: string } = {}): Promise<string> {
  const path = `/1.0/instances/${name}${where.project ? `?project=${where.project}` : ""}`;
  return ((await apiGet(path, { socket: where.socket })) as InstanceRecord).status;
}

/** Names of all instances on a server, in all projects. */
export async function allInstanceNames(socket?: string): Promise<string[]> {
  const list = (await apiGet("/1.0/instances?recursion=1&all-projects=true", { socket })) as InstanceRecord[];
  return list.map((i) => i.name);
}

/** Names of all custom volumes on a server, in all projects and pools. */
export async function allVolumeNames(socket?: string): Promise<string[]> {
  const pools = (await apiGet("/1.0/storage-pools", { socket })) as string[];
  const names: string[] = [];
  for (const p of pools) {
    const pool = p.split("/").pop()!;
    const vols = (await apiGet(`/1.0/storage-pools/${pool}/volumes/custom?recursion=1&all-projects=true`, { socket })) as Array<{ name: string }>;
    names.push(...vols.map((v) => v.name));
  }
  return names;
}

/** A byte in the middle of a file, inverted: the size stays, the sha256 does not. */
export async function flipByte(path: string): Promise<void> {
  const fh = await open(path, "r+");
  try {
    const { size } = await fh.stat();
    const at = Math.floor(size / 2);
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] = b[0]! ^ 0xff;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

/** Exactly one line on stderr, starting with "error: ", and no stack trace anywhere. */
export function expectOneLineError(r: { stdout: string; stderr: string }): string {
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  if (lines.length !== 1 || !lines[0]!.startsWith("error: ") || /\n\s+at /.test(r.stderr + r.stdout)) {
    throw new Error(`expected one "error: ..." line on stderr, got:\nstderr: ${r.stderr}\nstdout: ${r.stdout}`);
  }
  return lines[0]!;
}
