// Who this process is, for locks that several hosts see: a random id per install (kept in the
// state directory) and the process's start time, which together with the PID name one run.
//
// The hostname cannot do this: every deployed container is called `backup`, so two hosts sharing
// a NAS would each take the other's live lock for one of their own dead runs.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { link, mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Where the tool keeps its local state (restic state, the install id) unless INCUS_BACKUP_STATE_DIR says. */
export const DEFAULT_STATE_DIR = "/var/lib/incus-backup";
const INSTALL_ID_FILE = "install-id";
const ID_RE = /^[0-9a-f]{16,64}$/;

const known = new Map<string, Promise<string | undefined>>();

/**
 * The install id: INCUS_BACKUP_INSTALL_ID where set (deploy/install.sh sets it in the container's
 * config, which an upgrade keeps; not a secret), else the one kept in `stateDir`, made on first
 * use. Undefined when it can be neither read nor made (a read-only or foreign state directory):
 * locks then carry none, and nobody takes them over for a dead PID, only once they are not
 * refreshed for a while.
 */
export function installId(stateDir: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  const given = givenId(env);
  if (given) return Promise.resolve(given);
  let p = known.get(stateDir);
  if (!p) {
    p = readOrMake(stateDir).catch(() => undefined);
    known.set(stateDir, p);
  }
  return p;
}

async function readOrMake(stateDir: string): Promise<string | undefined> {
  const path = join(stateDir, INSTALL_ID_FILE);
  const found = await readId(path);
  if (found) return found;
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  // Written aside and linked into place: two first runs at once end up with the same id.
  const id = randomBytes(8).toString("hex");
  const tmp = `${path}.tmp-${id}`;
  await writeFile(tmp, id + "\n", { mode: 0o644 });
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as { code?: string }).code !== "EEXIST") throw err;
  } finally {
    await rm(tmp, { force: true });
  }
  return readId(path);
}

/**
 * The install id of the state directory the environment names. `create: false` (for readers such
 * as `status` and `unlock`, which judge others' locks and write nothing): undefined if none was made.
 */
export function envInstallId(env: NodeJS.ProcessEnv = process.env, options: { create?: boolean } = {}): Promise<string | undefined> {
  const dir = env.INCUS_BACKUP_STATE_DIR || DEFAULT_STATE_DIR;
  if (options.create !== false) return installId(dir, env);
  const given = givenId(env);
  return given ? Promise.resolve(given) : (known.get(dir) ?? readId(join(dir, INSTALL_ID_FILE)));
}

/** INCUS_BACKUP_INSTALL_ID, if it is an id. */
function givenId(env: NodeJS.ProcessEnv): string | undefined {
  const given = env.INCUS_BACKUP_INSTALL_ID?.trim();
  return given && ID_RE.test(given) ? given : undefined;
}

async function readId(path: string): Promise<string | undefined> {
  const text = (await readFile(path, "utf8").catch(() => "")).trim();
  return ID_RE.test(text) ? text : undefined;
}

/** This process as a lock or the service state records it: the install id given, and its start time. */
export function selfIdentity(install: string | undefined): { install?: string; start?: string } {
  const start = processStart(process.pid);
  return { ...(install === undefined ? {} : { install }), ...(start === undefined ? {} : { start }) };
}

/**
 * A process's start time (clock ticks since boot, from /proc/PID/stat), or undefined when it is
 * gone or cannot be read. A PID reused by another process has another start time.
 */
export function processStart(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count from after it.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[19];
}
