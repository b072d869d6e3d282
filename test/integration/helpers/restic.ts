// restic for the tests: the host's (Debian 12: 0.14) and the image's (Debian trixie: 0.18, taken
// from the image base that image/build.sh makes), and repositories made the way users make them.
import { execFile } from "node:child_process";
import { chmod, readdir, writeFile } from "node:fs/promises";
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

async function versionOf(binary: string): Promise<string | undefined> {
  try {
    const { stdout } = await run(binary, ["version"]);
    return /restic (\d+\.\d+)\./.exec(stdout)?.[1];
  } catch {
    return undefined;
  }
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
    const cache = join(process.env.INCUS_BACKUP_CACHE ?? join(root, ".cache"), "image");
    const bases = (await readdir(cache).catch(() => [] as string[])).filter((n) => n.startsWith("base-"));
    for (const b of bases) {
      const binary = join(cache, b, "restic");
      if (!(await versionOf(binary))) {
        await run("tar", ["-xf", join(cache, b, "rootfs.tar"), "-C", join(cache, b), "--strip-components=3", "./usr/bin/restic"]).catch(() => undefined);
        await chmod(binary, 0o755).catch(() => undefined);
      }
      const v = await versionOf(binary);
      if (v && !out.some((r) => r.version === v)) out.push({ version: v, binary });
    }
    if (process.env.CI === "true" && out.length < 2) {
      throw new Error(`CI tests restic 0.14 (the host's) and 0.18 (the image's): found ${out.map((r) => r.version).join(", ") || "none"}`);
    }
    if (out.length === 0) throw new Error("restic is not installed: run `bash scripts/setup.sh`");
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
export async function resticRepo(track: Tracker, restic: Restic, opts: { location?: string; init?: boolean } = {}): Promise<ResticRepo> {
  const dir = await tempDir(track, "ibk-restic-");
  await writeFile(join(dir, "password"), `test-${Math.random().toString(36).slice(2)}\n`, { mode: 0o600 });
  const location = opts.location ?? join(dir, "repo");
  const env = {
    RESTIC_PASSWORD_FILE: join(dir, "password"),
    RESTIC_CACHE_DIR: join(dir, "cache"),
    INCUS_BACKUP_STATE_DIR: join(dir, "state"),
    INCUS_BACKUP_RESTIC: restic.binary,
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
