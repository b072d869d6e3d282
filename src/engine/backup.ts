// Backs up the selected instances and custom volumes into the repository, one version per run.

import { randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import type { Writable } from "node:stream";
import { IntegrityError, InterruptedError, LockLostError, NotFoundError, RepositoryError, errorMessage, exitCodeOf, type ExitCodeValue } from "../errors";
import { tidyRepository } from "./housekeeping";
import { checkRepository, takeLock, type LockWait } from "./locking";
import { recoverBeforePlanning } from "./restore";
import { Transform } from "node:stream";
import type { FileEntry } from "../core/manifest";
import { archiveChecker } from "./archive";
import type { IncusClient } from "../incus/client";
import { IncusError } from "../incus/errors";
import {
  createInstanceBackup,
  createInstanceBackupStream,
  deleteInstanceBackup,
  getInstanceBackupFile,
} from "../incus/instances";
import type { Operation } from "../incus/operations";
import { progressText } from "../incus/operations";
import {
  createStorageVolumeBackup,
  createStorageVolumeBackupStream,
  deleteStorageVolumeBackup,
  getStorageVolumeBackupFile,
} from "../incus/storage_volumes";
import { drained, type TransferOptions } from "../incus/transfer";
import { itemId, itemLabel, keyOf, matches, unmatchedNames, type ItemKey, type Selection } from "../core/selection";
import type { Version } from "../core/version";
import type { Store, VersionWriter } from "../repository/store";
import type { JournalEntry } from "../repository/journal";
import { liveInstances, liveVolumes, rootPool, usedOnlyBy, type LiveInstance, type LiveVolume } from "./discover";
import { startInstance, stopInstance, waitForServerTasks } from "./power";
import { claimRepository } from "./ownership";
import { runPool, Semaphore } from "./pool";
import { PzstdHeaderWriter } from "./zstd_frames";
import { backupDatabase, backupImage, liveImages, type LiveDatabase, type LiveImage } from "./server_items";
import { planBackup, type BackupPlan, type SkippedItem } from "./backup_plan";
import { DEFAULT_BACKUP_DEFAULTS, type BackupDefaults, type BackupOverrides, type ItemDecision } from "../core/item_settings";
import { manifestFor, type BackupDeps, type BackupOptions, type ItemContext } from "./backup_item";

export type { BackupDeps, BackupOptions } from "./backup_item";

export { COMPRESSIONS } from "../core/compression";
import { COMPRESSIONS } from "../core/compression";

/** How long a server-side backup may outlive us if we die before deleting it. */
const SERVER_BACKUP_TTL_MS = 24 * 3600_000;

export interface ItemResult {
  item: ItemKey;
  ok: boolean;
  error?: string;
  /** The exit code the failure deserves on its own (a full disk: 8). */
  exitCode?: ExitCodeValue;
  bytes?: number;
  seconds: number;
}

export interface BackupResult {
  version: Version;
  items: ItemResult[];
  /** Items found but left out (user.incus-backup.exclude, a service-wide exclusion, ephemeral). */
  skipped: SkippedItem[];
  interrupted: boolean;
}

export type LiveItem = LiveInstance | LiveVolume | LiveImage | LiveDatabase;

export interface BackupRunOptions extends BackupOptions {
  /** The container this tool runs in: left out unless it is named (it holds no data). */
  self?: { project: string; name: string };
  /** The id the repository must have (the service's, from its setup); a place that has another is refused. */
  repositoryId?: string;
  /** Wait for a held lock (the service) instead of failing at once. */
  wait?: LockWait;
  /** Work done under the same lock once the backup is through (the service prunes). */
  after?: (result: BackupResult) => Promise<void>;
  /** What applies to each item unless its own user.incus-backup.* keys say otherwise; default: live, no snapshots, no exclusions. */
  defaults?: BackupDefaults;
  /** The command line's choices: they win over the items' keys. */
  overrides?: BackupOverrides;
  /** Told the plan (what is backed up and how, what is left out and why) before anything is written. */
  onPlan?: (plan: BackupPlan) => void;
}

/**
 * The backup command, for the CLI and the service alike: finish or undo interrupted restores,
 * find the items (a --name that matches nothing fails before anything is written), make the
 * repository if asked, take the lock, tidy what dead runs left, back the items up, and run `after`.
 * Returns undefined when nothing matches the selection.
 */
export async function backup(deps: BackupDeps, opts: BackupRunOptions, signal: AbortSignal): Promise<BackupResult | undefined> {
  const { store, client, reporter } = deps;
  await store.checkWritable();
  // A restore that died half-way is finished or undone first: what is backed up must see the result.
  for (const line of await recoverBeforePlanning(deps, opts.command, signal, opts.wait)) reporter.info(line);
  const discover = async () => planBackupRun(client, opts, signal);
  let plan = await discover();
  opts.onPlan?.(plan);
  if (plan.items.length === 0) return undefined;
  await checkRepository(store, opts.repositoryId);
  const lock = await takeLock(store, opts.command, reporter, signal, opts.wait);
  try {
    const tidied = await tidyRepository(deps);
    for (const line of tidied) reporter.info(line);
    // Recovery renames instances, and a wait for the lock can be long: look again.
    if (tidied.length > 0 || opts.wait) plan = await discover();
    for (const s of plan.skipped) reporter.info(`skipped ${itemLabel(s.item)}: ${s.reason}`);
    for (const item of plan.items) for (const w of plan.decisions.get(itemId(item))?.warnings ?? []) reporter.warn(`${itemLabel(item)}: ${w}`);
    const result = await backupItems(deps, { ...opts, decisions: plan.decisions, skipped: plan.skipped }, plan.items, signal);
    await opts.after?.(result);
    return result;
  } finally {
    await lock.release();
  }
}

/**
 * What a backup run would take and how, without changing anything: the items the selection finds
 * (less this tool's own container), each decided by its keys, the defaults and the command line.
 */
export async function planBackupRun(client: IncusClient, opts: Pick<BackupRunOptions, "selection" | "self" | "defaults" | "overrides" | "snapshots" | "stop">, signal?: AbortSignal): Promise<BackupPlan> {
  const found = (await discoverForBackup(client, opts.selection, signal)).filter((i) => !isSelf(opts.self, i) || opts.selection.names.includes(i.name));
  const defaults = opts.defaults ?? { ...DEFAULT_BACKUP_DEFAULTS, mode: opts.stop ? "stop" : "live", snapshots: opts.snapshots };
  return planBackup(found, opts.selection, defaults, opts.overrides);
}

/**
 * The backup container, and the volumes only it uses (its state volume, with the restic password
 * and the run records): left out of backups unless named. A copy of the password inside the
 * repository it opens would be of no use, and in a directory it would be in the clear.
 */
function isSelf(self: { project: string; name: string } | undefined, item: LiveItem): boolean {
  if (self === undefined) return false;
  if (item.kind === "instance") return item.project === self.project && item.name === self.name;
  return item.kind === "volume" && usedOnlyBy(item.volume, self);
}

/**
 * Finds the items a backup selection covers, in the order they are backed up (the server's
 * configuration first, instances last); a --name that matches nothing is an error.
 */
export async function discoverForBackup(c: IncusClient, sel: Selection, signal?: AbortSignal): Promise<LiveItem[]> {
  const items: LiveItem[] = [];
  if (sel.kinds.includes("database")) items.push({ kind: "database", project: "", name: "server" });
  if (sel.kinds.includes("image")) items.push(...(await liveImages(c, sel.project, signal)));
  if (sel.kinds.includes("volume")) items.push(...(await liveVolumes(c, sel.project, signal)));
  if (sel.kinds.includes("instance")) items.push(...(await liveInstances(c, sel.project, signal)));
  const chosen = items.filter((i) => matches(sel, i));
  const missing = unmatchedNames(sel, chosen);
  if (missing.length > 0) {
    const kinds = sel.kinds.filter((k) => k !== "database").join(" or ");
    throw new NotFoundError(`no ${kinds} named ${missing.map((n) => JSON.stringify(n)).join(", ")}${sel.project ? ` in project ${sel.project}` : ""}${sel.member ? ` on member ${sel.member}` : ""}`);
  }
  return chosen;
}

/**
 * Runs one backup: every item gets a version named after the run's start time. The caller holds
 * the repository lock. One item failing does not stop the others.
 */
export async function backupItems(deps: BackupDeps, opts: BackupOptions, items: LiveItem[], signal: AbortSignal): Promise<BackupResult> {
  const started = deps.now();
  const server = await deps.client.server(signal);
  // Refused before anything is written if the repository holds another server's backups.
  await claimRepository(deps.store, server, started);
  // A run frozen since it took the lock (and taken over meanwhile) writes not even its run record.
  await deps.store.checkLock();
  const version = await deps.store.reserveVersion(started, { command: opts.command, started: started.toISOString(), status: "running" });
  const results: ItemResult[] = [];
  const direct = opts.direct !== false && (server.api_extensions ?? []).includes("direct_backup");
  const slots = { make: new Semaphore(opts.parallel), transfer: new Semaphore(opts.parallel) };
  const compressing = items.filter((i) => i.kind === "instance" || i.kind === "volume").length;
  const compressors = { pzstd: opts.pzstd !== false, cpus: opts.cpus ?? availableParallelism(), waiting: compressing, making: 0, refused: new Set<string>(), warned: new Set<string>() };
  const ctx: ItemContext = { direct, slots, compressors, deps, opts, version, serverInfo: { name: server.environment?.server_name, version: server.environment?.server_version }, signal };

  const estimates = await previousSizes(deps.store, items);
  const known = items.every((i) => estimates.has(itemId(i)));
  deps.reporter.plan?.(items.length, known ? items.reduce((n, i) => n + (estimates.get(itemId(i)) ?? 0), 0) : undefined);
  // Once the lock is found lost, the repository is another run's: no new item starts, the ones
  // under way stop at their next write, and nothing more (not even the run record) is written.
  let lost: LockLostError | undefined;
  const stop = new AbortController();
  await runPool(largestFirst(items, estimates), opts.parallel * 2, AbortSignal.any([signal, stop.signal]), async (item) => {
    const t0 = Date.now();
    // Nothing of an item (a stop, a server-side export) happens unless the lock is still ours.
    const check = await deps.store.checkLock().then(
      () => undefined,
      (e: unknown) => e,
    );
    if (check instanceof LockLostError) {
      lost ??= check;
      stop.abort();
      return;
    }
    deps.reporter.itemStart(item);
    try {
      const bytes = await backupItem(ctx, item);
      const r: ItemResult = { item, ok: true, bytes, seconds: (Date.now() - t0) / 1000 };
      results.push(r);
      deps.reporter.itemDone(item, { ok: true, bytes, seconds: r.seconds });
    } catch (caught) {
      // A failure after another run took the lock over (it removed our half-written files as
      // leftovers, say) is that takeover's doing: say so.
      const lockState = caught instanceof LockLostError ? caught : await deps.store.checkLock().catch((e: unknown) => e);
      const err = lockState instanceof LockLostError ? lockState : caught;
      if (err instanceof LockLostError) {
        lost ??= err;
        stop.abort();
      }
      const interrupted = err instanceof InterruptedError || signal.aborted;
      const r: ItemResult = {
        item,
        ok: false,
        error: interrupted ? "interrupted" : errorMessage(err),
        ...(interrupted ? {} : { exitCode: exitCodeOf(err) }),
        seconds: (Date.now() - t0) / 1000,
      };
      results.push(r);
      deps.reporter.itemDone(item, { ok: false, error: r.error!, seconds: r.seconds });
    }
  });

  if (lost) throw lost;
  const interrupted = signal.aborted;
  const skipped = opts.skipped ?? [];
  await deps.store
    .saveRun({
      version,
      command: opts.command,
      started: started.toISOString(),
      finished: deps.now().toISOString(),
      status: runStatus({ items: results, interrupted }),
      items: results.map((r) => {
        const d = decisionOf(opts, r.item);
        return {
          label: itemLabel(r.item),
          ok: r.ok,
          ...(r.error === undefined ? {} : { error: r.error }),
          ...(r.bytes === undefined ? {} : { bytes: r.bytes }),
          seconds: r.seconds,
          ...(r.item.kind === "instance" && d.mode === "stop" ? { mode: "stop" as const } : {}),
          ...((r.item.kind === "instance" || r.item.kind === "volume") && d.snapshots ? { snapshots: true } : {}),
          // A volume's member is part of its key: same-named volumes on two members are two items.
          key: keyOf(r.item),
          ...(r.item.member === undefined ? {} : { member: r.item.member }),
        };
      }),
      ...(skipped.length === 0 ? {} : { skipped: skipped.map((x) => ({ label: itemLabel(x.item), reason: x.reason })) }),
    })
    .catch((err: unknown) => deps.reporter.warn(`could not save the run record: ${errorMessage(err)}`));
  return { version, items: results, skipped, interrupted };
}

/** The size of each item's latest version: the best guess of how big its next backup is. */
async function previousSizes(store: Store, items: LiveItem[]): Promise<Map<string, number>> {
  const kinds = [...new Set(items.map((i) => i.kind))];
  const latest = new Map<string, { version: string; size: number }>();
  for (const v of (await store.list(kinds)).versions) {
    const id = itemId(v.manifest);
    const seen = latest.get(id);
    if (!seen || v.manifest.version > seen.version) latest.set(id, { version: v.manifest.version, size: v.size });
  }
  return new Map([...latest].map(([id, v]) => [id, v.size]));
}

/**
 * The order items start in: the configuration first (small, and what everything else needs on
 * restore), then the largest first, so the longest job does not run alone at the end. Items
 * never backed up before count as large: nothing is known about them.
 */
export function largestFirst<T extends ItemKey>(items: T[], estimates: Map<string, number>): T[] {
  const size = (i: T) => (i.kind === "database" ? Infinity : (estimates.get(itemId(i)) ?? Number.MAX_SAFE_INTEGER));
  return [...items].sort((a, b) => size(b) - size(a));
}

/** How a run went, in one word: what run records, status and notifications say. */
export function runStatus(r: Pick<BackupResult, "items" | "interrupted">): "ok" | "partial" | "failed" | "interrupted" {
  const failed = r.items.filter((i) => !i.ok).length;
  if (r.interrupted) return "interrupted";
  if (failed === 0) return "ok";
  return failed === r.items.length ? "failed" : "partial";
}

function backupItem(ctx: ItemContext, item: LiveItem): Promise<number> {
  switch (item.kind) {
    case "instance":
      return backupInstance(ctx, item);
    case "volume":
      return backupVolume(ctx, item);
    case "image":
      return backupImage(ctx, item);
    case "database":
      return backupDatabase(ctx, item);
  }
}

/** How an item is backed up: its decision from the plan, else the run's options. */
function decisionOf(opts: BackupOptions, item: ItemKey): { mode: "stop" | "live"; snapshots: boolean } {
  const d: ItemDecision | undefined = opts.decisions?.get(itemId(item));
  return { mode: d?.mode ?? (opts.stop ? "stop" : "live"), snapshots: d?.snapshots ?? opts.snapshots };
}

/** The calls that differ between instance and volume backups. */
interface BackupApi {
  create(body: Record<string, unknown>): Promise<Operation>;
  download(backupName: string, sink: Writable, opts: TransferOptions): Promise<{ bytes: number }>;
  remove(backupName: string): Promise<void>;
  /** A direct backup: the server streams it instead of writing a copy first (`direct_backup`). */
  stream(body: Record<string, unknown>, sink: Writable, opts: TransferOptions): Promise<{ bytes: number }>;
}

async function backupInstance(ctx: ItemContext, item: LiveInstance): Promise<number> {
  const { client } = ctx.deps;
  const { project, name } = item;
  const inst = item.instance;
  const how = decisionOf(ctx.opts, item);
  const api: BackupApi = {
    create: (body) => createInstanceBackup(client, project, name, { ...body, instance_only: !how.snapshots }, { signal: ctx.signal }),
    download: (b, sink, o) => getInstanceBackupFile(client, project, name, b, sink, o),
    remove: (b) => deleteInstanceBackup(client, project, name, b),
    stream: (body, sink, o) => createInstanceBackupStream(client, project, name, { ...body, instance_only: !how.snapshots }, sink, o),
  };
  const pool = rootPool(inst);
  const stop = how.mode === "stop" && inst.status === "Running" ? stopMode(ctx, item) : undefined;
  return backupWith(ctx, item, api, "instance", {
    ...(pool === undefined ? {} : { pool }),
    object: inst,
    status: inst.status,
    extraOptions: { instance_only: !how.snapshots, stopped: stop !== undefined },
    ...(stop === undefined ? {} : { around: stop }),
  });
}

/**
 * `--stop`, like vzdump's stop mode: the instance is down only while the server makes its backup
 * (not while it waits for a slot, nor during the download), and a journal entry makes the next run
 * start it again if this one dies meanwhile.
 */
function stopMode(ctx: ItemContext, item: LiveInstance): AroundMake {
  const { client, reporter, store } = ctx.deps;
  const { project, name } = item;
  const journal = store.journal;
  const entry: JournalEntry = {
    id: randomBytes(6).toString("hex"),
    kind: "stopped",
    project,
    name,
    temp: "",
    phase: "stopped",
    restart: [{ project, name }],
    started: ctx.deps.now().toISOString(),
  };
  return {
    before: async () => {
      await journal.write(entry);
      reporter.itemStep(item, "stopping");
      await stopInstance(client, project, name, { ...(ctx.opts.stopTimeout === undefined ? {} : { timeout: ctx.opts.stopTimeout }), signal: ctx.signal });
    },
    after: async () => {
      reporter.itemStep(item, "starting again");
      // Start again even when the backup failed or was interrupted: leaving a service down is
      // worse than a late exit. A backup cut off on our side may still run on the server and
      // keep the instance busy: wait for it, and try once more before leaving it to the journal
      // (the next run, or the service when it starts).
      for (let attempt = 1; ; attempt++) {
        try {
          await startInstance(client, project, name);
          await journal.remove(entry.id);
          return;
        } catch (err) {
          if (attempt >= 2) {
            reporter.warn(`could not start ${itemLabel(item)} again (the next run will try): ${errorMessage(err)}`);
            return;
          }
          await waitForServerTasks(client, [name]).catch(() => undefined);
        }
      }
    },
  };
}

async function backupVolume(ctx: ItemContext, item: LiveVolume): Promise<number> {
  const { client } = ctx.deps;
  const { project, pool, name } = item;
  const { snapshots } = decisionOf(ctx.opts, item);
  // The member's own volume: another member may have one of the same name.
  const target = item.member;
  const api: BackupApi = {
    create: (body) => createStorageVolumeBackup(client, project, pool, name, { ...body, volume_only: !snapshots }, { signal: ctx.signal, target }),
    download: (b, sink, o) => getStorageVolumeBackupFile(client, project, pool, name, b, sink, { ...o, target }),
    remove: (b) => deleteStorageVolumeBackup(client, project, pool, name, b, { target }),
    stream: (body, sink, o) => createStorageVolumeBackupStream(client, project, pool, name, { ...body, volume_only: !snapshots }, sink, { ...o, target }),
  };
  return backupWith(ctx, item, api, "volume", { pool, object: item.volume, extraOptions: { volume_only: !snapshots } });
}

/** Work around the making of the backup on the server (stop mode stops and starts the instance). */
interface AroundMake {
  before(): Promise<void>;
  after(): Promise<void>;
}

type BackupMeta = { pool?: string; object: unknown; status?: string; extraOptions: Record<string, unknown>; around?: AroundMake; leftWaiting?: boolean };

/** Runs `fn` in a "make" slot, with the item's before/after work around it. */
async function making<T>(ctx: ItemContext, meta: BackupMeta, fn: () => Promise<T>): Promise<T> {
  const load = ctx.compressors;
  // An item leaves the waiting ones once, when it first gets a slot or gives up waiting (a retry
  // with another compressor comes back here).
  const leaveWaiting = () => {
    if (meta.leftWaiting) return;
    meta.leftWaiting = true;
    load.waiting--;
  };
  try {
    return await ctx.slots.make.use(async () => {
      leaveWaiting();
      load.making++;
      try {
        await meta.around?.before();
        try {
          return await fn();
        } finally {
          await meta.around?.after();
        }
      } finally {
        load.making--;
      }
    });
  } finally {
    leaveWaiting();
  }
}

function backupWith(ctx: ItemContext, item: ItemKey, api: BackupApi, fileBase: string, meta: BackupMeta): Promise<number> {
  return ctx.direct ? backupStreamed(ctx, item, api, fileBase, meta) : backupExported(ctx, item, api, fileBase, meta);
}

/**
 * With `direct_backup`, the server streams the backup as it makes it: no temporary copy on the
 * host, and writing overlaps with reading. Such a stream has no size announced and, if the
 * server fails half-way, simply stops; so while it arrives it is also decompressed and parsed
 * as a tar, and it becomes a version only if it is a complete archive.
 */
async function backupStreamed(ctx: ItemContext, item: ItemKey, api: BackupApi, fileBase: string, meta: BackupMeta): Promise<number> {
  const { reporter, now } = ctx.deps;
  const created = now();
  let compression = ctx.opts.compression;
  let compressor = compression;
  const writer = await ctx.deps.store.begin(item, ctx.version);
  try {
    reporter.itemStep(item, "waiting for a slot");
    let entry: FileEntry | undefined;
    for (;;) {
      const fileName = `${fileBase}${COMPRESSIONS[compression] ?? ".tar"}`;
      const sink = await writer.createFile(fileName);
      reporter.itemStep(item, "streaming the backup from the server");
      const checker = archiveChecker(fileName, ctx.signal);
      const tee = teeInto(checker.sink);
      tee.pipe(sink);
      let sinkError: unknown;
      const written = new Promise<void>((resolve, reject) => {
        sink.on("finish", resolve);
        sink.on("error", (e) => {
          // A file that cannot be written (a full disk) stops the stream that feeds it; `pipe`
          // alone would leave the stream waiting for a reader that is gone.
          sinkError ??= e;
          tee.destroy(e);
          reject(e);
        });
      });
      // Awaited once the stream is through; a failure before then must not crash the process.
      written.catch(() => undefined);
      try {
        // The server makes the backup while it streams it: both phases at once, so both slots.
        await making(ctx, meta, () =>
          ctx.slots.transfer.use(async () => {
            // Another item found out meanwhile that the server refuses it: do not ask again.
            if (ctx.compressors.refused.has(compression)) throw new RefusedEarlier();
            compressor = serverCompressor(ctx, compression);
            try {
              await api.stream({ optimized_storage: false, compression_algorithm: compressor }, intoRepository(compressor, tee), {
                signal: ctx.signal,
                onProgress: (done) => reporter.itemBytes(item, done, undefined),
              });
            } catch (err) {
              // Told before the slot is free, so an item waiting for it does not ask for it again.
              if (isCompressionProblem(err, compressor)) {
                if (compressor === "pzstd") ctx.compressors.pzstd = false;
                else if (compression !== "gzip") ctx.compressors.refused.add(compression);
              }
              // Free the space before the next item may write: a full disk fails one item, not two.
              sink.destroy();
              await writer.removeFile(fileName);
              throw err;
            }
          }),
        );
      } catch (err) {
        sink.destroy();
        // Ends the checker's input, so its decompressor exits instead of waiting for more.
        checker.sink.end();
        checker.result.catch(() => undefined);
        await writer.removeFile(fileName);
        if (sinkError !== undefined) throw sinkError;
        if (err instanceof RefusedEarlier) compression = compressor = "gzip";
        else ({ compression, compressor } = nextCompressor(ctx, err, compression, compressor));
        continue;
      }
      await written;
      reporter.itemStep(item, "checking the archive is complete");
      const check = await checker.result;
      if (check.indexName !== undefined && check.indexName !== item.name) {
        throw new IntegrityError(`the server streamed a backup of "${check.indexName}", not of "${item.name}"`);
      }
      entry = sink.entry();
      break;
    }
    return await commitArchive(ctx, writer, item, created, entry, meta, { compression, compressor, transfer: "direct" });
  } catch (err) {
    await writer.abort();
    if (ctx.signal.aborted) throw new InterruptedError();
    throw err;
  }
}

/** A pass-through that also writes every chunk into `side`, waiting for it when it is busy. */
function teeInto(side: Writable): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (side.write(chunk)) done(null, chunk);
      else drained(side).then(() => done(null, chunk), done);
    },
    flush(done) {
      side.end();
      done();
    },
  });
}

/**
 * Without `direct_backup`: create the server-side backup (with an expiry, so a crash leaves nothing
 * behind for long), stream it into a new version while hashing it, delete it on the server, and
 * commit the version. Any failure throws the partial version away.
 */
async function backupExported(ctx: ItemContext, item: ItemKey, api: BackupApi, fileBase: string, meta: BackupMeta): Promise<number> {
  const { reporter, now } = ctx.deps;
  const backupName = `incus-backup-${ctx.version}-${randomBytes(3).toString("hex")}`;
  const created = now();
  let compression = ctx.opts.compression;
  let compressor = compression;
  let serverBackup = false;
  let removal: Promise<void> | undefined;
  // Deletes the server's copy, once: as soon as every byte has arrived (it is not needed while
  // the file is synced and committed), or in the end after a failure.
  const removeServerBackup = (): void => {
    if (!serverBackup) return;
    serverBackup = false;
    removal = api.remove(backupName).catch((err: unknown) => {
      reporter.warn(`could not delete the server-side backup ${backupName} of ${itemLabel(item)} (it expires by itself within a day): ${errorMessage(err)}`);
    });
  };
  let writer: VersionWriter | undefined;
  try {
    const body = () => ({
      name: backupName,
      expires_at: new Date(created.getTime() + SERVER_BACKUP_TTL_MS).toISOString(),
      optimized_storage: false,
      compression_algorithm: compressor,
    });
    reporter.itemStep(item, "waiting for a slot");
    await making(ctx, meta, async () => {
      reporter.itemStep(item, "creating the backup on the server");
      // Another item found out meanwhile that the server refuses it: do not ask again.
      if (ctx.compressors.refused.has(compression)) compression = "gzip";
      compressor = serverCompressor(ctx, compression);
      let op: Operation | undefined;
      while (op === undefined) {
        try {
          op = await api.create(body());
        } catch (err) {
          ({ compression, compressor } = nextCompressor(ctx, err, compression, compressor));
        }
      }
      serverBackup = true;
      await waitForBackup(op, ctx, item);
    });

    writer = await ctx.deps.store.begin(item, ctx.version);
    const fileName = `${fileBase}${COMPRESSIONS[compression] ?? ".tar"}`;
    const sink = await writer.createFile(fileName);
    reporter.itemStep(item, "waiting for a slot to download");
    await ctx.slots.transfer.use(async () => {
      reporter.itemStep(item, "downloading");
      try {
        await api.download(backupName, intoRepository(compressor, sink), {
          signal: ctx.signal,
          onProgress: (done, total) => reporter.itemBytes(item, done, total),
          onReceived: () => {
            reporter.itemStep(item, "writing to disk");
            removeServerBackup();
          },
        });
      } catch (err) {
        // Free the space before the next item may write: a full disk fails one item, not two.
        await writer?.abort();
        throw err;
      }
    });
    reporter.itemStep(item, "saving the version");
    return await commitArchive(ctx, writer, item, created, sink.entry(), meta, { compression, compressor, transfer: "export" });
  } catch (err) {
    await writer?.abort();
    if (ctx.signal.aborted) throw new InterruptedError();
    throw err;
  } finally {
    removeServerBackup();
    await removal;
  }
}

/** Records the archive and commits the version of an instance or volume. Returns its size. */
async function commitArchive(
  ctx: ItemContext,
  writer: VersionWriter,
  item: ItemKey,
  created: Date,
  entry: FileEntry,
  meta: BackupMeta,
  how: { compression: string; compressor: string; transfer: "direct" | "export" },
): Promise<number> {
  writer.addFile(entry);
  await writer.commit(
    manifestFor(ctx, item, created, {
      ...(meta.pool === undefined ? {} : { pool: meta.pool }),
      options: {
        compression: how.compression,
        ...(how.compressor === how.compression ? {} : { compressor: how.compressor }),
        optimized_storage: false,
        transfer: how.transfer,
        ...meta.extraOptions,
      },
      object: meta.object,
      ...(meta.status === undefined ? {} : { status: meta.status }),
    }),
    ctx.signal,
  );
  return entry.size;
}

/** Waits for the server to finish writing the backup, reporting its progress text. */
async function waitForBackup(op: Operation, ctx: ItemContext, item: ItemKey): Promise<void> {
  try {
    await op.wait({
      signal: ctx.signal,
      onProgress: (md) => {
        const text = progressText(md);
        if (text) ctx.deps.reporter.itemStep(item, `server: ${text}`);
      },
    });
  } catch (err) {
    if (err instanceof InterruptedError) {
      // The backup cannot be deleted while it is being written; give the server a bounded time
      // to finish so the cleanup in the caller can remove it. If that fails, it expires.
      await op.wait({ signal: AbortSignal.timeout(30_000), stepSeconds: 5 }).catch(() => undefined);
    }
    throw err;
  }
}

/**
 * What the server is asked to compress with, chosen when the item gets its make slot. For zstd,
 * pzstd when the server has it and cores would otherwise sit idle (see parallelCompression): the
 * parallel zstd that ships with zstd, at the same level, on every core, so one big item no longer
 * leaves all but one core idle. Its headers are taken out on the way (zstd_frames.ts), so the
 * file is plain zstd, as `incus export --compression zstd` would write it.
 */
function serverCompressor(ctx: ItemContext, compression: string): string {
  const c = ctx.compressors;
  return compression === "zstd" && c.pzstd && parallelCompression(c.making, c.waiting, ctx.opts.parallel, c.cpus) ? "pzstd" : compression;
}

/**
 * Whether an item that just got its make slot should compress on several cores: only if the
 * items compressing alongside it (those holding slots, itself included, and those about to fill
 * the free ones) leave cores idle. Where they already use every core, pzstd's threads only add
 * work: on 2 cores, four 100 MiB items took 3.2 to 3.4 s with pzstd and 2.9 to 3.05 s with zstd.
 */
export function parallelCompression(making: number, waiting: number, parallel: number, cpus: number): boolean {
  return Math.min(parallel, making + waiting) < cpus;
}

/** Where the server's bytes go: through pzstd's header removal when it compresses with pzstd. */
function intoRepository(compressor: string, sink: Writable): Writable {
  return compressor === "pzstd" ? new PzstdHeaderWriter(sink) : sink;
}

/**
 * After the server refused a compressor: pzstd falls back to zstd quietly (and not again for the
 * run's other items); anything else falls back to gzip with a warning. Rethrows anything else.
 */
function nextCompressor(ctx: ItemContext, err: unknown, compression: string, compressor: string): { compression: string; compressor: string } {
  if (!isCompressionProblem(err, compressor)) throw err;
  if (compressor === "pzstd") {
    ctx.compressors.pzstd = false;
    return { compression, compressor: compression };
  }
  if (compression === "gzip") throw err;
  ctx.compressors.refused.add(compression);
  if (!ctx.compressors.warned.has(compression)) {
    ctx.compressors.warned.add(compression);
    ctx.deps.reporter.warn(`the server cannot compress with ${compression} (${(err as IncusError).serverMessage}); using gzip`);
  }
  return { compression: "gzip", compressor: "gzip" };
}

/** A compression another item of the run found the server refuses (see ItemContext.compressors). */
class RefusedEarlier extends Error {}

function isCompressionProblem(err: unknown, algorithm: string): boolean {
  if (!(err instanceof IncusError)) return false;
  const text = err.serverMessage.toLowerCase();
  return text.includes("compression") || text.includes(`"${algorithm}"`) || text.includes("executable file not found");
}
