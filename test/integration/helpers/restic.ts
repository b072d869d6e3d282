// restic for the tests: the host's (Debian 12: 0.14) and the image's (Debian trixie: 0.18, taken
// from the image base that image/build.sh makes), and repositories made the way users make them.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { Tracker } from "../../lab/lab";
import { tempDir } from "./server";
import { toolOk } from "./tool";

const run = promisify(execFile);
const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");

export interface Restic {
  /** "0.14", "0.18" */
  version: string;
  binary: string;
}

async function onPath(name: string): Promise<string> {
  const { stdout } = await run("sh", ["-c", `command -v ${name}`]);
  return stdout.trim();
}

async function versionOf(binary: string): Promise<string | undefined> {
  try {
    const { stdout } = await run(binary, ["version"]);
    return /restic (\d+\.\d+)\./.exec(stdout)?.[1];
  } catch {
    return undefined;
  }
}

// restic's `init` calibrates its key derivation (scrypt) to take about 0.5 s on the machine it runs
// on, and every later restic process on that repository pays it again to open the key: 0.3-0.5
// CPU-s each, some 650 times in a full run, on the same two cores the lab and the tool need.
// restic's own tests lower those parameters with a test-only switch; the binary has none. So the
// tests run restic through this wrapper: an `init` of a local repository runs slowed down (stopped
// 45 ms in every 50) until its key is written, so the calibration settles on restic's small
// parameters (N 8192-16384, p 1-2, against 32768 and 3-5). Everything else is the real binary,
// exec'd: the same process, arguments, environment, signals and exit codes. For a remote
// repository the test names the local directory its keys land in (IBK_TEST_RESTIC_KEYS: the REST
// server's or sshd's files); without one, a fixed window. The benches use restic as it is.
const SLOW_INIT = `#!/bin/sh
# written by test/integration/helpers/restic.ts: restic for the tests (see there)
real=@REAL@
case " $* " in
  *" init "*) ;;
  *) exec "$real" "$@" ;;
esac
exec 3<&0
"$real" "$@" <&3 3<&- &
pid=$!
exec 3<&-
pass() { kill -CONT "$pid" 2>/dev/null; kill -"$1" "$pid" 2>/dev/null; }
trap 'pass TERM' TERM
trap 'pass INT' INT
trap 'pass HUP' HUP
keys=$IBK_TEST_RESTIC_KEYS
case "$RESTIC_REPOSITORY" in
  /*) keys=\${keys:-$RESTIC_REPOSITORY/keys} ;;
esac
limit=150
[ -n "$keys" ] || limit=40
keyed() {
  [ -n "$keys" ] || return 1
  for k in "$keys"/*; do [ -e "$k" ] && return 0; done
  return 1
}
n=0
while [ "$n" -lt "$limit" ] && ! keyed && kill -STOP "$pid" 2>/dev/null; do
  sleep 0.045
  kill -CONT "$pid" 2>/dev/null
  sleep 0.005
  n=$((n + 1))
done
kill -CONT "$pid" 2>/dev/null
while :; do
  wait "$pid"
  rc=$?
  kill -0 "$pid" 2>/dev/null || exit "$rc"
done
`;

/** The wrapper for one restic binary, in the cache (written once, atomically: groups run side by side). */
async function withSlowInit(binary: string, version: string, cache: string): Promise<string> {
  const dir = join(cache, "restic-test");
  await mkdir(dir, { recursive: true });
  const path = join(dir, `restic-${version}`);
  const text = SLOW_INIT.replace("@REAL@", `'${binary.replace(/'/g, `'\\''`)}'`);
  if ((await readFile(path, "utf8").catch(() => "")) === text) return path;
  const tmp = `${path}.${process.pid}`;
  await writeFile(tmp, text, { mode: 0o755 });
  await rename(tmp, path);
  return path;
}

let found: Promise<Restic[]> | undefined;

/**
 * The restic binaries to test with: the host's, and the one in the image base (a static binary that
 * runs here too). In CI both must be there: the suite tests the oldest and the newest supported.
 */
export function resticBinaries(): Promise<Restic[]> {
  found ??= (async () => {
    const out: Restic[] = [];
    const host = await versionOf("restic");
    if (host) out.push({ version: host, binary: "restic" });
    const caches = process.env.INCUS_BACKUP_CACHE ?? join(root, ".cache");
    const cache = join(caches, "image");
    const bases = (await readdir(cache).catch(() => [] as string[])).filter((n) => n.startsWith("base-"));
    for (const b of bases) {
      const binary = join(cache, b, "restic");
      if (!(await versionOf(binary))) {
        // The test groups start side by side, and each may find the binary missing: each unpacks
        // it into a directory of its own and renames it into place, so no group ever runs (or
        // writes over) a half-written file.
        const tmp = await mkdtemp(join(cache, b, ".restic-"));
        try {
          await run("tar", ["-xf", join(cache, b, "rootfs.tar"), "-C", tmp, "--strip-components=3", "./usr/bin/restic"]);
          await chmod(join(tmp, "restic"), 0o755);
          await rename(join(tmp, "restic"), binary);
        } catch {
          // no restic in this base: the check below says what was found
        } finally {
          await rm(tmp, { recursive: true, force: true });
        }
      }
      const v = await versionOf(binary);
      if (v && !out.some((r) => r.version === v)) out.push({ version: v, binary });
    }
    if (process.env.CI === "true" && out.length < 2) {
      throw new Error(`CI tests restic 0.14 (the host's) and 0.18 (the image's): found ${out.map((r) => r.version).join(", ") || "none"}`);
    }
    if (out.length === 0) throw new Error("restic is not installed: run `bash scripts/setup.sh`");
    for (const r of out) r.binary = await withSlowInit(r.binary === "restic" ? await onPath("restic") : r.binary, r.version, caches);
    return out.sort((a, b) => Number(a.version.split(".")[1]) - Number(b.version.split(".")[1]));
  })();
  return found;
}

export interface ResticRepo {
  /** For --repo. */
  repo: string;
  /** The restic repository string. */
  location: string;
  /** What the tool needs in its environment: the password file, restic's cache, the state directory, the binary. */
  env: Record<string, string>;
  dir: string;
}

/** A temporary place for a restic repository and its password; `init` makes the repository unless told not to. */
export async function resticRepo(track: Tracker, restic: Restic, opts: { location?: string; init?: boolean; keys?: string } = {}): Promise<ResticRepo> {
  const dir = await tempDir(track, "ibk-restic-");
  await writeFile(join(dir, "password"), `test-${Math.random().toString(36).slice(2)}\n`, { mode: 0o600 });
  const location = opts.location ?? join(dir, "repo");
  const env = {
    RESTIC_PASSWORD_FILE: join(dir, "password"),
    RESTIC_CACHE_DIR: join(dir, "cache"),
    INCUS_BACKUP_STATE_DIR: join(dir, "state"),
    INCUS_BACKUP_RESTIC: restic.binary,
    // Where a remote repository's keys land on this machine (see SLOW_INIT).
    ...(opts.keys ? { IBK_TEST_RESTIC_KEYS: opts.keys } : {}),
  };
  const r = { repo: `restic:${location}`, location, env, dir };
  if (opts.init ?? true) await toolOk(["init", `--repo=${r.repo}`], { env });
  return r;
}

/** Runs restic itself on a test repository (to look at it, or to hold a lock). */
export async function resticCli(r: ResticRepo, restic: Restic, args: string[]): Promise<string> {
  const { stdout } = await run(restic.binary, args, {
    env: { ...process.env, RESTIC_PASSWORD_FILE: r.env.RESTIC_PASSWORD_FILE, RESTIC_CACHE_DIR: r.env.RESTIC_CACHE_DIR, RESTIC_REPOSITORY: r.location },
    maxBuffer: 64 * 1024 * 1024,
  });
  return stdout;
}

/** This tool's snapshots in the repository (both data and manifests). */
export async function toolSnapshots(r: ResticRepo, restic: Restic): Promise<Array<{ id: string; tags: string[] }>> {
  return (JSON.parse((await resticCli(r, restic, ["snapshots", "--json", "--tag", "incus-backup"])) || "[]") as Array<{ id: string; tags: string[] }> | null) ?? [];
}

/** A port nobody listens on now, on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolvePort(port));
    });
  });
}

async function waitListening(port: number, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, "127.0.0.1", () => {
        s.destroy();
        res(true);
      });
      s.once("error", () => res(false));
    });
    if (ok) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${what} does not listen on 127.0.0.1:${port}`);
}

export interface RestServer {
  location: string;
  /** Stops the server (the remote goes away); `start` brings it back on the same port and data. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** How many restic locks the repository holds now (one appears once a restic has opened it). */
  locks(): Promise<number>;
  /** The repository's keys directory, on this machine. */
  keys: string;
}

/** restic's REST protocol from `rclone serve restic` on 127.0.0.1, its data in a temp dir; stopped by track.cleanup(). */
export async function restServer(track: Tracker): Promise<RestServer> {
  const dir = await tempDir(track, "ibk-rest-");
  const port = await freePort();
  let child: ChildProcess | undefined;
  const stop = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    c.kill("SIGKILL");
    await new Promise((res) => c.once("close", res));
  };
  const start = async () => {
    child = spawn("rclone", ["serve", "restic", "--addr", `127.0.0.1:${port}`, join(dir, "data")], { stdio: "ignore" });
    await waitListening(port, "rclone serve restic");
  };
  track.defer(stop);
  await start();
  const locks = async () => (await readdir(join(dir, "data", "locks")).catch(() => [])).length;
  return { location: `rest:http://127.0.0.1:${port}/`, stop, start, locks, keys: join(dir, "data", "keys") };
}

export interface SftpServer {
  /** The restic location of a repository path on it. */
  location(path: string): string;
  /** PATH for the tool: an `ssh` that knows this server (its port, key and host key) and nothing else. */
  path: string;
}

/**
 * A private sshd on 127.0.0.1 (key login, internal-sftp), in a mount namespace of its own whose
 * /run is private (sshd wants /run/sshd; the machine's /run is left alone); stopped by track.cleanup().
 */
export async function sftpServer(track: Tracker): Promise<SftpServer> {
  const dir = await tempDir(track, "ibk-sftp-");
  const port = await freePort();
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "hostkey")]);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "userkey")]);
  await copyFile(join(dir, "userkey.pub"), join(dir, "authorized_keys"));
  const config = [
    "ListenAddress 127.0.0.1",
    `Port ${port}`,
    `HostKey ${join(dir, "hostkey")}`,
    `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "StrictModes no",
    "PermitRootLogin prohibit-password",
    `PidFile ${join(dir, "sshd.pid")}`,
    "Subsystem sftp internal-sftp",
  ];
  await writeFile(join(dir, "sshd_config"), config.join("\n") + "\n");
  const hostKey = (await readFile(join(dir, "hostkey.pub"), "utf8")).split(" ").slice(0, 2).join(" ");
  await writeFile(join(dir, "known_hosts"), `[127.0.0.1]:${port} ${hostKey}\n`);
  const client = [`Host 127.0.0.1`, `  Port ${port}`, `  IdentityFile ${join(dir, "userkey")}`, `  UserKnownHostsFile ${join(dir, "known_hosts")}`, "  StrictHostKeyChecking yes", "  BatchMode yes"];
  await writeFile(join(dir, "ssh_config"), client.join("\n") + "\n");
  await mkdir(join(dir, "bin"));
  await writeFile(join(dir, "bin", "ssh"), `#!/bin/sh\nexec /usr/bin/ssh -F ${join(dir, "ssh_config")} "$@"\n`, { mode: 0o755 });
  const sshd = spawn(
    "unshare",
    ["-m", "--propagation", "private", "sh", "-c", `mount -t tmpfs none /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -D -f ${join(dir, "sshd_config")} -E ${join(dir, "sshd.log")}`],
    { stdio: "ignore" },
  );
  track.defer(async () => {
    if (sshd.exitCode !== null) return;
    sshd.kill("SIGTERM");
    await new Promise((res) => sshd.once("close", res));
  });
  await waitListening(port, "sshd");
  return { location: (path) => `sftp:root@127.0.0.1:${path}`, path: `${join(dir, "bin")}:${process.env.PATH ?? "/usr/bin:/bin"}` };
}
