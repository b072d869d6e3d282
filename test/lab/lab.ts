// Helpers for integration tests against the lab: the incus CLI, fixtures with known contents, cleanup.
// Test-only code may shell out to the incus CLI; the product itself talks to the REST API.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { request as httpRequest } from "node:http";
import { dirname, join } from "node:path";
import { inject } from "vitest";

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface RunOptions {
  /** Written to stdin, which is otherwise empty (several incus commands read YAML from a pipe). */
  input?: string | Buffer;
  /** Resolve with the non-zero exit code instead of rejecting. */
  allowFail?: boolean;
  /** Kill the command after this long; default 120 s, so a hung stop fails the test instead. */
  timeoutMs?: number;
}

export interface IncusOptions extends RunOptions {
  /** Daemon to talk to; default: the primary lab. */
  socket?: string;
  /** Adds --project. */
  project?: string;
}

/** Incus line of the primary lab ("6.0" or "7.0"). */
export function labVersion(): string {
  return inject("labVersion");
}

/** Inner socket of the lab of `version` (default: the primary lab). */
export function labSocket(version?: string): string {
  if (version === undefined) return inject("labSocket");
  const socket = inject("labSockets")[version];
  if (!socket) {
    throw new Error(`no ${version} lab in this run; bring it up with INCUS_BACKUP_LABS="${version}"`);
  }
  return socket;
}

/** Lines (versions) of all labs of this run. */
export function labVersions(): string[] {
  return Object.keys(inject("labSockets"));
}

/**
 * What every lab's main daemon has beside the `default` dir pool, as a host after
 * `incus admin init --auto` has it (test/lab/lab.sh creates them): a second storage pool of the
 * btrfs driver, and a managed bridge (10.77.0.1/24, fd42:77::1/64, DHCP by dnsmasq) that the
 * default profile puts on every instance as `eth0`, so each instance has a
 * `volatile.eth0.hwaddr`. Extra servers (`startExtraServer`) have them only when asked (`real`).
 */
export const LAB_BTRFS_POOL = "btrfs";
export const LAB_BRIDGE = "incusbr0";

/** Every `volatile.*.hwaddr` value (NIC MAC address) of every instance in every project of a daemon. */
export async function instanceMacs(socket?: string): Promise<string[]> {
  const instances = await apiGet<{ config?: Record<string, string> }[]>("/1.0/instances?recursion=1&all-projects=true", { socket });
  return instances.flatMap((i) =>
    Object.entries(i.config ?? {})
      .filter(([k]) => /^volatile\..+\.hwaddr$/.test(k))
      .map(([, v]) => v),
  );
}

/**
 * Environment for a child process (the incus CLI, or the built incus-backup) that must reach
 * exactly the lab's daemon: the caller's INCUS_DIR / remote / project must not redirect it.
 */
export function labEnv(socket: string = labSocket()): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    INCUS_SOCKET: socket,
    INCUS_CONF: inject("labIncusConf"),
    // The tool's local state (its install id, a restic repository's runs and journal) goes with
    // the lab, not into the machine's /var/lib. Tests that need their own set it over this.
    INCUS_BACKUP_STATE_DIR: join(dirname(inject("labStateFile")), "tool-state"),
  };
  delete env.INCUS_DIR;
  delete env.INCUS_REMOTE;
  delete env.INCUS_PROJECT;
  return env;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, opts: RunOptions): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const result = {
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
        code: code ?? 128,
      };
      const what = `${cmd} ${args.join(" ")}`;
      if (timedOut) reject(new Error(`${what}: no answer after ${timeoutMs} ms`));
      else if (result.code !== 0 && !opts.allowFail) {
        reject(new Error(`${what}: exit ${code ?? signal}: ${result.stderr.trim() || result.stdout.trim()}`));
      } else resolve(result);
    });
    // The command may exit without reading its input.
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

/** Runs the incus CLI against a lab daemon. Rejects on a non-zero exit unless `allowFail`. */
export function incus(args: string[], opts: IncusOptions = {}): Promise<RunResult> {
  const full = opts.project ? ["--project", opts.project, ...args] : args;
  return run("incus", full, labEnv(opts.socket ?? labSocket()), opts);
}

/**
 * GET of an Incus API path on a lab daemon, from this process: what `incus query PATH` prints,
 * parsed, without an incus CLI process (and the GET /1.0 it makes first) for each call. The test
 * helpers read the servers' state some 1,500 times a run; as CLI calls they cost about 30 CPU-s
 * (2026-12-07). Plain node:http, not src/incus: the tests observe Incus apart from the code they
 * test. Rejects with the server's error, as incusOk does.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- as JSON.parse, which these calls replace
export function apiGet<T = any>(path: string, opts: { socket?: string; timeoutMs?: number } = {}): Promise<T> {
  const socketPath = opts.socket ?? labSocket();
  const timeout = opts.timeoutMs ?? 120_000;
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path, method: "GET", headers: { Host: "incus" }, timeout }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("error", reject);
      res.on("end", () => {
        let body: { type?: string; error?: string; metadata?: unknown };
        try {
          body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as typeof body;
        } catch {
          reject(new Error(`GET ${path} on ${socketPath}: HTTP ${res.statusCode}, not JSON`));
          return;
        }
        if (body.type === "error" || (res.statusCode ?? 500) >= 400) reject(new Error(`GET ${path} on ${socketPath}: ${body.error ?? `HTTP ${res.statusCode}`}`));
        else resolve(body.metadata as T);
      });
    });
    req.on("timeout", () => req.destroy(new Error(`GET ${path} on ${socketPath}: no answer after ${timeout} ms`)));
    req.on("error", reject);
    req.end();
  });
}

/** Runs the incus CLI and returns its stdout; the error carries stderr. */
export async function incusOk(args: string[], opts: Omit<IncusOptions, "allowFail"> = {}): Promise<string> {
  return (await incus(args, { ...opts, allowFail: false })).stdout;
}

const END_OF_OUTPUT = "IBK-END-OF-OUTPUT";

/**
 * What a command that only reads prints in an instance (`incus exec INSTANCE -- ARGV...`). Under
 * load, `incus exec` has now and then ended with exit 0 and none of the output its command wrote
 * (seen in full runs on 6.0, right after a restore started the instance). The command here prints
 * a marker last, so a lost output is told apart from an empty one, and is read again (at most 3
 * times; the command must have no effects). A non-zero exit rejects, as incusOk does.
 */
export function execRead(instance: string, argv: string[], opts: Omit<IncusOptions, "allowFail"> = {}): Promise<string> {
  return readSure((script, o) => incus(["exec", instance, "--", "sh", "-c", script, "sh", ...argv], { ...opts, ...o }), '"$@"', `incus exec ${instance} -- ${argv.join(" ")}`);
}

/**
 * Runs a shell command in an instance and returns its exit code and output, for a command whose
 * output a test checks and that may have effects (so it must not run twice, as execRead's may).
 * `incus exec` now and then loses a quick command's output under load (see execRead; seen in CI on
 * install.sh's one-line refusal). So the command writes its stdout and stderr to files in the
 * instance, its exit code comes back as the exec's own (Incus reports it in the operation, which
 * was never lost), and the files are read back with execRead's end marker, then removed.
 */
export async function execCaptured(
  exec: (script: string, opts: RunOptions) => Promise<RunResult>,
  cmd: string,
  opts: RunOptions = {},
): Promise<RunResult> {
  const files = `/tmp/ibk-captured-${randomBytes(6).toString("hex")}`;
  // The newline ends a comment the command may end with.
  const ran = await exec(`( ${cmd}\n) >${files}.out 2>${files}.err`, { ...opts, allowFail: true });
  const sep = `\n${END_OF_OUTPUT}-STDERR\n`;
  const both = await readSure(exec, `cat ${files}.out; printf '\\n%s\\n' ${END_OF_OUTPUT}-STDERR; cat ${files}.err`, cmd);
  await exec(`rm -f ${files}.out ${files}.err`, {});
  const at = both.lastIndexOf(sep);
  if (at < 0) throw new Error(`${cmd}: the captured output has no separator: ${JSON.stringify(both.slice(-200))}`);
  const result = { code: ran.code, stdout: both.slice(0, at), stderr: both.slice(at + sep.length) };
  if (result.code !== 0 && !opts.allowFail) throw new Error(`${cmd}: exit ${result.code}: ${result.stderr.trim() || result.stdout.trim()}`);
  return result;
}

/** A read with no effects, through `exec`, with an end marker: read again (at most 3 times) when it was lost. */
async function readSure(exec: (script: string, opts: RunOptions) => Promise<RunResult>, cmd: string, what: string): Promise<string> {
  const tail = `\n${END_OF_OUTPUT}\n`;
  for (let attempt = 1; ; attempt++) {
    const r = await exec(`${cmd}; rc=$?; printf '\\n%s\\n' ${END_OF_OUTPUT}; exit $rc`, {});
    if (r.stdout.endsWith(tail)) return r.stdout.slice(0, -tail.length);
    if (attempt === 3) throw new Error(`${what}: the output was lost ${attempt} times (exit 0 without the end marker): ${JSON.stringify(r.stdout.slice(-200))}`);
    console.warn(`${what}: exit 0 but the output was cut short (${r.stdout.length} bytes); reading again`);
  }
}

/** labShell for a command that only reads, with execRead's end marker: read again when its output was lost. A non-zero exit rejects. */
export function labRead(cmd: string, opts: { version?: string; timeoutMs?: number } = {}): Promise<string> {
  return readSure((script, o) => labShell(script, { ...o, ...opts }), cmd, `lab: ${cmd}`);
}

/** labShell for a command whose output a test checks (see execCaptured). */
export function labShellCaptured(cmd: string, opts: RunOptions & { version?: string } = {}): Promise<RunResult> {
  return execCaptured((script, o) => labShell(script, { ...o, version: opts.version }), cmd, opts);
}

/** Runs a shell command in the lab container itself (through the outer daemon), as root. */
export function labShell(cmd: string, opts: RunOptions & { version?: string } = {}): Promise<RunResult> {
  const version = opts.version ?? labVersion();
  const container = inject("labContainers")[version];
  if (!container) throw new Error(`no ${version} lab in this run`);
  return run("incus", ["exec", container, "--", "sh", "-c", cmd], labEnv(inject("labOuterSocket")), opts);
}

function labScript(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const env = { ...process.env, INCUS_BACKUP_LAB_STATE: inject("labStateFile") };
  return run("bash", [inject("labScript"), ...args], env, { timeoutMs: 180_000, ...opts });
}

/**
 * Starts an additional, empty incusd inside a lab (own INCUS_DIR, own network namespace, so it can
 * create networks of the same names and subnets as the lab's main daemon, as a second machine
 * could; `default` dir pool, root disk in the default profile, no network, no btrfs pool; `bare`:
 * not even the pool and disk; `real`: set up like the main daemon, with the bridge on eth0 of the
 * default profile and a btrfs pool) and returns its socket. `name`: up to 16
 * lowercase letters, digits and hyphens, starting with a letter; unique among the extra servers
 * of that lab. Default lab: the primary one.
 */
export async function startExtraServer(name: string, opts: { version?: string; bare?: boolean; real?: boolean } = {}): Promise<string> {
  const r = await labScript(["server-add", opts.version ?? labVersion(), ...(opts.bare ? ["--bare"] : []), ...(opts.real ? ["--real"] : []), name]);
  return r.stdout.trim();
}

/**
 * A two-member cluster in a lab (test/lab/lab.sh cluster-add): members node1 and node2, two extra
 * incusd in network namespaces of their own joined over a veth pair, each with a local `default`
 * dir pool and a managed bridge on eth0 of the default profile. Returns both members' sockets.
 * `name`: up to 14 lowercase letters, digits and hyphens. Remove it with stopCluster.
 */
export async function startCluster(name: string, opts: { version?: string } = {}): Promise<{ node1: string; node2: string }> {
  const r = await labScript(["cluster-add", opts.version ?? labVersion(), name]);
  const [node1, node2] = r.stdout.trim().split("\n");
  if (!node1 || !node2) throw new Error(`lab.sh cluster-add printed no sockets: ${r.stdout}${r.stderr}`);
  return { node1, node2 };
}

export async function stopCluster(name: string, opts: { version?: string } = {}): Promise<void> {
  await labScript(["cluster-remove", opts.version ?? labVersion(), name]);
}

/** Shuts an extra incusd down and removes its data. */
export async function stopExtraServer(name: string, opts: { version?: string } = {}): Promise<void> {
  await labScript(["server-remove", opts.version ?? labVersion(), name]);
}

/**
 * Restarts the lab's main incusd and waits until it answers again. SIGTERM (default) is a service
 * restart: instances keep running. `kill` sends SIGKILL, a crash.
 */
export async function restartIncusd(opts: { version?: string; kill?: boolean } = {}): Promise<void> {
  await labScript(["restart-incusd", opts.version ?? labVersion(), ...(opts.kill ? ["--kill"] : [])]);
}

let nameCounter = 0;

/**
 * A valid, unique Incus name (instance, volume, project): letters, digits and hyphens, starting
 * with a letter, at most 63 characters. Unique per call and per process.
 */
export function uniqueName(prefix: string): string {
  let base = prefix.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^[^a-z]+/, "").replace(/-+$/, "");
  if (!base) base = "t";
  nameCounter += 1;
  const suffix = `${process.pid.toString(36)}${nameCounter.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  return `${base.slice(0, 62 - suffix.length)}-${suffix}`;
}

export interface LaunchOptions {
  project?: string;
  /** Default true. */
  start?: boolean;
  /** Default "busybox", the lab's ~1 MB test image. */
  image?: string;
  config?: Record<string, string>;
  /** Storage pool of the root disk (`incus init --storage`); default: the default profile's. */
  pool?: string;
  socket?: string;
  /** Registers the instance for removal. */
  track?: Tracker;
}

/** Creates (and by default starts) an instance. The busybox image is copied into a project that has its own images. */
export async function launchInstance(name: string, opts: LaunchOptions = {}): Promise<string> {
  const image = opts.image ?? "busybox";
  const o = { socket: opts.socket, project: opts.project };
  if (opts.project && opts.project !== "default") {
    const found = await incus(["image", "info", image], { ...o, allowFail: true });
    if (found.code !== 0) {
      await incusOk(["image", "copy", `local:${image}`, "local:", "--target-project", opts.project, "--copy-aliases"], {
        socket: opts.socket,
      });
    }
  }
  const config = Object.entries(opts.config ?? {}).flatMap(([k, v]) => ["-c", `${k}=${v}`]);
  opts.track?.instance(name, o);
  await incusOk(["init", image, name, ...(opts.pool ? ["--storage", opts.pool] : []), ...config], o);
  if (opts.start ?? true) await incusOk(["start", name], o);
  return name;
}

export type EntryType = "file" | "dir" | "symlink" | "other";

/** One entry of a tree: everything a restore must reproduce, except times. */
export interface TreeEntry {
  /** Relative to the tree's root; "." is the root itself. */
  path: string;
  type: EntryType;
  /** Permission bits in octal, four digits ("0640", "1777"). */
  mode: string;
  uid: number;
  gid: number;
  /** Regular files only. */
  sha256?: string;
  /** Symlinks only. */
  target?: string;
}

/** Sorted by path; compare two with `expect(a).toEqual(b)`. */
export type Manifest = TreeEntry[];

// busybox sh: three passes (stat, sha256sum, readlink) rather than a process per entry.
// Tabs separate fields; fixture paths have no tabs or newlines.
const manifestScript = `
set -e
cd "$1"
T=$(printf '\\t')
echo '#stat'
find . -print0 | xargs -0 stat -c "%n$T%F$T%a$T%u$T%g"
echo '#sha256'
find . -type f -print0 | xargs -0 -r sha256sum
echo '#links'
find . -type l | while IFS= read -r p; do printf '%s\\t%s\\n' "$p" "$(readlink "$p")"; done
`;

function relPath(p: string): string {
  return p === "." ? "." : p.replace(/^\.\//, "");
}

function entryType(statType: string): EntryType {
  if (statType.startsWith("regular")) return "file";
  if (statType === "directory") return "dir";
  if (statType === "symbolic link") return "symlink";
  return "other";
}

export function parseManifest(text: string): Manifest {
  const entries = new Map<string, TreeEntry>();
  let section = "";
  for (const line of text.split("\n")) {
    if (!line) continue;
    if (line.startsWith("#")) {
      section = line;
      continue;
    }
    if (section === "#stat") {
      const [path, type, mode, uid, gid] = line.split("\t");
      if (path === undefined || type === undefined || mode === undefined || uid === undefined || gid === undefined) {
        throw new Error(`bad stat line: ${line}`);
      }
      entries.set(relPath(path), {
        path: relPath(path),
        type: entryType(type),
        mode: mode.padStart(4, "0"),
        uid: Number(uid),
        gid: Number(gid),
      });
    } else if (section === "#sha256") {
      const m = /^([0-9a-f]{64}) {2}(.*)$/.exec(line);
      const entry = m?.[2] !== undefined ? entries.get(relPath(m[2])) : undefined;
      if (!m || !entry) throw new Error(`bad sha256sum line: ${line}`);
      entry.sha256 = m[1];
    } else if (section === "#links") {
      const tab = line.indexOf("\t");
      const entry = entries.get(relPath(line.slice(0, tab)));
      if (tab < 0 || !entry) throw new Error(`bad readlink line: ${line}`);
      entry.target = line.slice(tab + 1);
    }
  }
  return [...entries.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * Reads a tree back through Incus (`incus exec` with the image's busybox): path, type, mode,
 * owner, sha256 of files, target of symlinks. Works on any image with find/xargs/stat/sha256sum.
 */
export async function checksumTree(
  instance: string,
  dir: string,
  opts: { project?: string; socket?: string } = {},
): Promise<Manifest> {
  return parseManifest(await execRead(instance, ["sh", "-c", manifestScript, "sh", dir], opts));
}

// What every fixture tree holds; the names say what each entry is there to check.
const fixtureScript = `
set -e
mkdir -p "$1"
cd "$1"
dd if=/dev/urandom of=random.bin bs=1048576 count="$2" 2>/dev/null
yes "incus-backup compresses this line well, $3" | head -c $(($4 * 1048576)) >compressible.txt
for i in 1 2 3; do echo "small file $i of $3" >"small-$i.txt"; done
mkdir -p sub/deeper empty-dir
echo "nested in $3" >sub/deeper/nested.txt
ln -s random.bin link-to-random
ln -s ../small-1.txt sub/link-up
ln -s does-not-exist dangling-link
echo "private to its owner and group" >mode-0640.txt
chmod 0640 mode-0640.txt
printf '#!/bin/sh\\necho hello\\n' >exec-0755.sh
chmod 0755 exec-0755.sh
echo "owned by 1234" >owned-1234.txt
chown 1234:1234 owned-1234.txt
mkdir -p owned-dir
chown 1234:1234 owned-dir
chmod 0750 owned-dir
: >empty
sync
`;

export interface TestDataOptions {
  /** Size of the random (incompressible) file. */
  sizeMiB: number;
  /** Size of the compressible file; default 1. */
  compressibleMiB?: number;
  project?: string;
  socket?: string;
}

/**
 * Writes a fixture tree into `dir` inside a running instance: a random file of `sizeMiB`, a
 * compressible file, small files, nested dirs, an empty dir, symlinks (one dangling), modes 0640
 * and 0755, a file and a dir owned by 1234:1234, an empty file. Returns the manifest of `dir`.
 */
export async function writeTestData(instance: string, dir: string, opts: TestDataOptions): Promise<Manifest> {
  const o = { project: opts.project, socket: opts.socket };
  const tag = `${instance}:${dir}`;
  const args = [dir, String(opts.sizeMiB), tag, String(opts.compressibleMiB ?? 1)];
  await incusOk(["exec", instance, "--", "sh", "-c", fixtureScript, "sh", ...args], { ...o, timeoutMs: 600_000 });
  return checksumTree(instance, dir, o);
}

export interface VolumeOptions extends TestDataOptions {
  /** Running instance to attach the volume to. */
  attachTo: string;
  /** Mount path in that instance. */
  path: string;
  /** Registers the volume for removal. */
  track?: Tracker;
}

/** Creates a custom filesystem volume, attaches it to a running instance and fills it via `writeTestData`. */
export async function createVolumeWithData(pool: string, volume: string, opts: VolumeOptions): Promise<Manifest> {
  const o = { project: opts.project, socket: opts.socket };
  opts.track?.volume(pool, volume, o);
  await incusOk(["storage", "volume", "create", pool, volume], o);
  await incusOk(["config", "device", "add", opts.attachTo, volume, "disk", `pool=${pool}`, `source=${volume}`, `path=${opts.path}`], o);
  return writeTestData(opts.attachTo, opts.path, opts);
}

interface Where {
  project?: string;
  socket?: string;
}

export interface Tracker {
  instance(name: string, where?: Where): string;
  volume(pool: string, name: string, where?: Where): string;
  image(fingerprintOrAlias: string, where?: Where): string;
  /** Removes the project and everything in it. */
  project(name: string, where?: Pick<Where, "socket">): string;
  /** Any other undo step; run first, last registered first. */
  defer(fn: () => unknown): void;
  /** Removes everything registered, in dependency order; throws after trying all if any failed. */
  cleanup(): Promise<void>;
}

/**
 * Records what a test creates so that it is removed even when the test fails:
 * `const track = tracker(); afterEach(() => track.cleanup());`
 */
export function tracker(): Tracker {
  let defers: (() => unknown)[] = [];
  let instances: [string, Where][] = [];
  let volumes: [string, string, Where][] = [];
  let images: [string, Where][] = [];
  let projects: [string, Where][] = [];

  const gone = (r: RunResult) => r.code === 0 || /not found/i.test(r.stderr);
  async function attempt(what: string, fn: () => Promise<RunResult | void>, errors: string[]) {
    try {
      const r = await fn();
      if (r && !gone(r)) errors.push(`${what}: ${r.stderr.trim()}`);
    } catch (e) {
      errors.push(`${what}: ${(e as Error).message}`);
    }
  }

  return {
    instance(name, where = {}) {
      instances.push([name, where]);
      return name;
    },
    volume(pool, name, where = {}) {
      volumes.push([pool, name, where]);
      return name;
    },
    image(fp, where = {}) {
      images.push([fp, where]);
      return fp;
    },
    project(name, where = {}) {
      projects.push([name, where]);
      return name;
    },
    defer(fn) {
      defers.push(fn);
    },
    async cleanup() {
      const errors: string[] = [];
      const [d, i, v, im, p] = [defers, instances, volumes, images, projects];
      defers = [];
      instances = [];
      volumes = [];
      images = [];
      projects = [];
      for (const fn of d.reverse()) await attempt("deferred cleanup", async () => void (await fn()), errors);
      for (const [name, w] of i) {
        await attempt(`delete instance ${name}`, () => incus(["delete", "--force", name], { ...w, allowFail: true }), errors);
      }
      for (const [pool, name, w] of v) {
        await attempt(`delete volume ${pool}/${name}`, () => incus(["storage", "volume", "delete", pool, name], { ...w, allowFail: true }), errors);
      }
      for (const [fp, w] of im) {
        await attempt(`delete image ${fp}`, () => incus(["image", "delete", fp], { ...w, allowFail: true }), errors);
      }
      for (const [name, w] of p) await attempt(`delete project ${name}`, () => purgeProject(name, w.socket), errors);
      if (errors.length) throw new Error(`cleanup failed:\n${errors.join("\n")}`);
    },
  };
}

function csvColumn(out: string): string[] {
  return out
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean);
}

/** Deletes a project with its instances, custom volumes, images and profiles. */
export async function purgeProject(project: string, socket?: string): Promise<RunResult> {
  if (project === "default") throw new Error("refusing to purge the default project");
  const o = { project, socket };
  const exists = await incus(["project", "show", project], { socket, allowFail: true });
  if (exists.code !== 0) return exists;
  // Without a feature, the project sees the default project's images, profiles or volumes:
  // those must stay.
  const own = async (feature: string) =>
    (await incusOk(["project", "get", project, `features.${feature}`], { socket })).trim() === "true";
  for (const name of csvColumn(await incusOk(["list", "-f", "csv", "-c", "n"], o))) {
    await incusOk(["delete", "--force", name], o);
  }
  const pools = (await own("storage.volumes"))
    ? csvColumn(await incusOk(["storage", "list", "-f", "csv", "-c", "n"], { socket }))
    : [];
  for (const pool of pools) {
    for (const line of csvColumn(await incusOk(["storage", "volume", "list", pool, "-f", "csv", "-c", "tn"], o))) {
      const [type, name] = line.split(",");
      // Snapshots are listed as volume/snapshot and go with their volume.
      if (type === "custom" && name && !name.includes("/")) await incusOk(["storage", "volume", "delete", pool, name], o);
    }
  }
  if (await own("images")) {
    for (const fp of csvColumn(await incusOk(["image", "list", "-f", "csv", "-c", "F"], o))) {
      await incusOk(["image", "delete", fp], o);
    }
  }
  if (await own("profiles")) {
    for (const name of csvColumn(await incusOk(["profile", "list", "-f", "csv", "-c", "n"], o))) {
      if (name !== "default") await incusOk(["profile", "delete", name], o);
    }
  }
  return incus(["project", "delete", project], { socket, allowFail: true });
}
