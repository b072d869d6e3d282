// What every item of a backup run shares: the run's dependencies and options, its slots, and the
// manifest fields every kind of item records.

import { memberOf, type Manifest } from "../core/manifest";
import type { ItemDecision } from "../core/item_settings";
import type { ItemKey, Selection } from "../core/selection";
import type { Version } from "../core/version";
import type { IncusClient } from "../incus/client";
import type { Store } from "../repository/store";
import type { Semaphore } from "./pool";
import type { Reporter } from "./reporter";

export interface BackupDeps {
  client: IncusClient;
  store: Store;
  reporter: Reporter;
  now: () => Date;
  toolVersion: string;
}

export interface BackupOptions {
  selection: Selection;
  compression: string;
  /** Include instance and volume snapshots (for items without a decision of their own). */
  snapshots: boolean;
  /** Stop running instances for their backup and start them again afterwards (for items without a decision of their own). */
  stop: boolean;
  /** Each item's mode and snapshots, by itemId, from its user.incus-backup.* keys and the run's defaults (engine/backup_plan.ts). */
  decisions?: Map<string, ItemDecision>;
  /** What the run left out and why: for the run record. */
  skipped?: Array<{ item: ItemKey; reason: string }>;
  stopTimeout?: number;
  parallel: number;
  /** Use the server's direct (streamed) backups when it has them; default true. */
  direct?: boolean;
  /** For zstd, ask the server for pzstd where it has it (see serverCompressor); default true. */
  pzstd?: boolean;
  /** The host's CPUs (the server's and the tool's: it runs on the same host); default: this machine's. */
  cpus?: number;
  /** The command line, for the run record. */
  command: string;
}

export interface ItemContext {
  /** Stream backups directly (the server has `direct_backup` and it is not turned off). */
  direct: boolean;
  /**
   * The two phases of an item use different parts of the machine: the server making the backup
   * (CPU: tar and compression) and the transfer into the repository (the socket, the disk).
   * Each phase has `parallel` slots, and twice as many items are under way, so the next items'
   * backups are made while the previous ones are downloaded.
   */
  slots: { make: Semaphore; transfer: Semaphore };
  /**
   * Shared by the run's items: whether the server may still have pzstd, the host's CPUs, and how
   * many instance and volume items wait for a make slot or hold one (see serverCompressor).
   */
  compressors: {
    pzstd: boolean;
    cpus: number;
    waiting: number;
    making: number;
    /** Compressions the server refused in this run: later items use gzip without asking (or warning) again. */
    refused: Set<string>;
    /** Those of them the user was told about (once per run). */
    warned: Set<string>;
  };
  deps: BackupDeps;
  opts: BackupOptions;
  version: Version;
  serverInfo: { name: string | undefined; version: string | undefined };
  signal: AbortSignal;
}

/** The manifest fields every kind shares, plus the kind's own. */
export function manifestFor(
  ctx: ItemContext,
  item: ItemKey,
  created: Date,
  extra: Pick<Manifest, "options"> & Partial<Pick<Manifest, "pool" | "object" | "status" | "aliases" | "member">>,
): Omit<Manifest, "files"> {
  return {
    format: 1,
    kind: item.kind,
    project: item.project,
    name: item.name,
    version: ctx.version,
    created: created.toISOString(),
    tool: { name: "incus-backup", version: ctx.deps.toolVersion },
    server: {
      ...(ctx.serverInfo.name === undefined ? {} : { name: ctx.serverInfo.name }),
      ...(ctx.serverInfo.version === undefined ? {} : { version: ctx.serverInfo.version }),
    },
    ...extra,
    ...(memberOf(extra.object) === undefined ? {} : { member: memberOf(extra.object)! }),
  };
}
