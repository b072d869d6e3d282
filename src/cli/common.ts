// Arguments shared by several commands, and turning them into a repository and an Incus client.

import { array, flag, multioption, option, optional, string, type Type } from "cmd-ts";
import { resolve } from "node:path";
import { UsageError } from "../errors";
import { IncusClient } from "../incus/client";
import { findSocket } from "../incus/socket";
import { selectionFrom, type Kind, type Selection } from "../core/selection";
import { openStore } from "../repository/open";
import { repoSpecFrom, type RepoSpec } from "../core/repo_spec";
import { checkRepository } from "../engine/locking";
import type { Store } from "../repository/store";
import { isVersionPrefix } from "../core/version";
import type { CliContext } from "./context";
import { defaultParallel } from "../engine/pool";

/**
 * A number as typed, shown as <N> in help (checked by the command, which names the option in its
 * error: cmd-ts's own number type says only "not a number").
 */
export const countText: Type<string, string> = { displayName: "N", description: "a whole number", from: async (s) => s };

/** --stop-timeout, for the commands that stop instances (backup --stop, restore). */
export const stopTimeoutArg = {
  stopTimeout: option({
    long: "stop-timeout",
    type: optional(countText),
    description: "seconds an instance gets to shut down cleanly before it is forced (default 60)",
  }),
};

/** The --stop-timeout value: seconds, a whole number up to a day. */
export function checkStopTimeout(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || Number(text) > 86_400) throw new UsageError(`--stop-timeout=${JSON.stringify(text)}: use a whole number of seconds from 0 to 86400`);
  return Number(text);
}

export const dirArg = {
  repo: option({
    long: "repo",
    type: optional(string),
    description: "the repository: restic:LOCATION (a path, sftp:…, rest:…, s3:…), or a directory (dir:PATH or PATH) (default: $INCUS_BACKUP_REPO, else $INCUS_BACKUP_DIR)",
  }),
  dir: option({
    long: "dir",
    type: optional(string),
    description: "the backup repository directory (same as --repo dir:DIR)",
  }),
};

/** What dirArg gives a command. */
export type RepoArgs = { repo: string | undefined; dir: string | undefined };

export const socketArg = {
  socket: option({
    long: "socket",
    type: optional(string),
    description: "the Incus unix socket (default: $INCUS_SOCKET, else the standard locations)",
  }),
};

/** Selectors: singular and plural spellings mean the same, as users type both. */
/** What --all and --images mean differ by command: each command's help says it for itself. */
const SELECTOR_HELP = {
  backup: {
    all: "the database, every custom volume and every instance (images only with --images as well)",
    images: "images: with --all, as well as everything else; alone, only images (a backup takes them only when asked)",
  },
  restore: {
    all: "everything in the repository: the database, volumes, instances, and images if it holds any (the latest of each)",
    images: "images from the repository",
  },
  read: {
    all: "everything (the default when no selector is given)",
    images: "images",
  },
} as const;

/** The selector flags, with --all and --images described for `command` ("read": list, verify, prune). */
export function selectorArgs(command: keyof typeof SELECTOR_HELP) {
  const help = SELECTOR_HELP[command];
  return {
    all: flag({ long: "all", description: help.all }),
    instances: flag({ long: "instances", description: "instances (containers and VMs)" }),
    instance: flag({ long: "instance", description: "same as --instances" }),
    volumes: flag({ long: "volumes", description: "custom storage volumes" }),
    volume: flag({ long: "volume", description: "same as --volumes" }),
    images: flag({ long: "images", description: help.images }),
    image: flag({ long: "image", description: "same as --images" }),
    database: flag({
      long: "database",
      description: "the server's configuration: projects, storage pools, networks, profiles (and the SQL dumps)",
    }),
    config: flag({ long: "config", description: "same as --database" }),
    names: multioption({
      long: "name",
      type: array(string),
      description: "only items with this name; repeatable; a volume may be POOL/NAME, an image an alias or fingerprint",
    }),
    project: option({ long: "project", type: optional(string), description: "only this project" }),
    member: option({
      long: "member",
      type: optional(string),
      description: "in a cluster: only instances and volumes backed up on this member (an instance's versions, each by where it was)",
    }),
  };
}

export type SelectorValues = {
  all: boolean;
  instances: boolean;
  instance: boolean;
  volumes: boolean;
  volume: boolean;
  images: boolean;
  image: boolean;
  database: boolean;
  config: boolean;
  names: string[];
  project: string | undefined;
  member: string | undefined;
};

export function selectionOf(v: SelectorValues, allKinds: readonly Kind[], defaultAll: boolean): Selection {
  return selectionFrom(
    {
      all: v.all,
      instances: v.instances || v.instance,
      volumes: v.volumes || v.volume,
      images: v.images || v.image,
      database: v.database || v.config,
      names: v.names,
      project: v.project,
      member: v.member,
    },
    allKinds,
    defaultAll,
  );
}

/** The repository from --repo, --dir, $INCUS_BACKUP_REPO or $INCUS_BACKUP_DIR (a directory's path made absolute). */
export function repoSpec(ctx: CliContext, a: RepoArgs): RepoSpec {
  const spec = repoSpecFrom(a, ctx.env);
  return spec.backend === "dir" ? { backend: "dir", path: resolve(spec.path) } : spec;
}

/** Opens the store the arguments name, without checking it is a repository (init, status). */
export function storeOf(ctx: CliContext, a: RepoArgs): Promise<Store> {
  return openStore(repoSpec(ctx, a), { create: false, env: ctx.env });
}

/**
 * The repository the arguments name (see repoSpec). It must be one: every command but `init` (which
 * makes one) and `status` (which reports what it finds) refuses any other place with exit 8.
 */
export async function openRepository(ctx: CliContext, a: RepoArgs): Promise<Store> {
  const store = await storeOf(ctx, a);
  await checkRepository(store);
  return store;
}

export function connect(ctx: CliContext, socket: string | undefined): IncusClient {
  return new IncusClient(findSocket(socket, ctx.env).path);
}

export function checkVersionArg(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  if (!isVersionPrefix(v)) {
    throw new UsageError(`invalid --version ${JSON.stringify(v)}: use YYYYMMDD-HHMMSS or a prefix of it, e.g. 20250914`);
  }
  return v;
}

/** Options that take a value; a bare one at the end or before another flag is a usage error. */
export const VALUE_OPTIONS = new Set([
  "--repo",
  "--dir",
  "--socket",
  "--name",
  "--project",
  "--member",
  "--version",
  "--snapshot",
  "--find",
  "--path",
  "--to",
  "--compression",
  "--target-name",
  "--parallel",
  "--read-data",
  "--stop-timeout",
  "--keep-last",
  "--keep-hourly",
  "--keep-daily",
  "--keep-weekly",
  "--keep-monthly",
  "--keep-yearly",
]);

/**
 * cmd-ts quietly treats `--dir` without a value as absent, and takes the next flag as the value
 * of an option; both would make the tool act on something the user did not mean.
 */
export function checkValueOptions(argv: readonly string[]): void {
  // argv[0] is the subcommand (or a top-level flag such as --version, which is not an option here).
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") return;
    if (VALUE_OPTIONS.has(a)) {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) throw new UsageError(`option ${a} needs a value`);
      i++;
    } else if (a.includes("=")) {
      const [k, v] = [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)];
      if (VALUE_OPTIONS.has(k) && v === "") throw new UsageError(`option ${k} needs a value`);
    }
  }
}

/** --parallel: a whole number from 1 to 64; default one per CPU, at most 4. */
export function checkParallel(v: number | undefined): number {
  if (v === undefined) return defaultParallel();
  if (!Number.isInteger(v) || v < 1 || v > 64) throw new UsageError("--parallel must be a whole number from 1 to 64");
  return v;
}

/**
 * The container this tool runs in, from INCUS_BACKUP_SELF (install.sh sets it): `backup --all`
 * leaves it out (it holds no data: its state is on the NAS), and a restore must never replace it
 * while it runs the restore.
 */
export function selfInstance(ctx: CliContext): { project: string; name: string } | undefined {
  const text = ctx.env.INCUS_BACKUP_SELF;
  if (!text) return undefined;
  const m = /^(?:([^/]+)\/)?([^/]+)$/.exec(text);
  if (!m) throw new UsageError(`INCUS_BACKUP_SELF=${JSON.stringify(text)}: use NAME or PROJECT/NAME`);
  return { project: m[1] ?? "default", name: m[2]! };
}
