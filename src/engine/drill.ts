// Restore drills: each selected version is restored into the scratch project, started (an
// instance) or compared with its backup (a volume), judged, and deleted. Nothing outside the
// scratch project is created, changed or stopped; a journal entry per copy lets the next run of
// any command take away what a drill that died left.

import { randomBytes } from "node:crypto";
import { Writable } from "node:stream";
import { Parser, type ReadEntry } from "tar";
import { errorMessage, InterruptedError, NotFoundError } from "../errors";
import { DRILL_CHECK_KEY, DRILL_PROJECT, describeDevice, drillCopy, placeholdersFor, rotation } from "../core/drill";
import type { Candidate } from "../core/plan";
import { itemId, itemLabel, keyOf, matches, type ItemKey, type Selection } from "../core/selection";
import { pickVersion } from "../core/version";
import type { IncusClient } from "../incus/client";
import { IncusNotFoundError } from "../incus/errors";
import { execInstance } from "../incus/exec";
import { getInstance, instancePut, updateInstance } from "../incus/instances";
import { createStorageVolumeBackup, createStorageVolumeBackupStream, deleteStorageVolumeBackup, getStorageVolumeBackupFile } from "../incus/storage_volumes";
import type { JournalEntry, Store, StoredVersion } from "../repository/store";
import { entryOf, type CatalogEntry } from "./catalog";
import { removeDrillCopy, removePlaceholders } from "./drill_cleanup";
import { readEntries } from "./files";
import { takeLock, type LockWait } from "./locking";
import { startInstance } from "./power";
import type { Reporter } from "./reporter";
import { importAs, recoverJournals } from "./restore";

export const DRILL_STATE = "drills";

export interface DrillDeps {
  client: IncusClient;
  store: Store;
  reporter: Reporter;
  now: () => Date;
}

export interface DrillOptions {
  selection: Selection;
  version?: string;
  /** Without --name: at most this many items, the least recently drilled first. */
  max?: number;
  /** Seconds an instance has to reach RUNNING, and its check command to end. */
  timeout: number;
  /** Seconds the copy must stay RUNNING before it passes (an init that exits at once fails). */
  settle: number;
  /** limits.* keys for the copies. */
  limits: Record<string, string>;
  command: string;
  wait?: LockWait;
}

export interface DrillResult {
  item: ItemKey;
  version: string;
  ok: boolean;
  /** Why it failed. */
  reason?: string;
  /** What the copy did not get (NICs, proxies, disks from host paths or volumes). */
  dropped: string[];
  /** Seconds: the import, the start until RUNNING and settled, the check; and the whole. */
  timings: { import?: number; boot?: number; check?: number; compare?: number; total: number };
  /** The check command's last output lines, when it failed. */
  output?: string;
}

/** The record status shows: every item's last drill, and the last run. */
export interface DrillRecord {
  finished: string;
  items: Record<string, { label: string; key?: Pick<ItemKey, "kind" | "project" | "pool" | "name" | "member">; version: string; ok: boolean; reason?: string; finished: string; seconds: number }>;
  lastRun: { finished: string; drilled: number; passed: number; failed: string[]; interrupted: boolean };
}

/** The items a drill takes: their version, and (without names) the bounded, rotating pick. */
export async function planDrill(store: Store, opts: Pick<DrillOptions, "selection" | "version" | "max">): Promise<Candidate[]> {
  const sel = opts.selection;
  const { versions } = await store.list(sel.kinds.filter((k) => k === "instance" || k === "volume"));
  const byItem = new Map<string, StoredVersion[]>();
  for (const v of versions) {
    if (!matches(sel, v.manifest) || v.manifest.project === DRILL_PROJECT) continue;
    const id = itemId(v.manifest);
    byItem.set(id, [...(byItem.get(id) ?? []), v]);
  }
  const missing = sel.names.filter((n) => ![...byItem.values()].some((g) => matches({ ...sel, names: [n] }, g[0]!.manifest)));
  if (missing.length > 0) throw new NotFoundError(`nothing in the repository is named ${missing.map((n) => JSON.stringify(n)).join(", ")} (see \`incus-backup list\`)`);
  const picked: Candidate[] = [];
  for (const g of byItem.values()) {
    const v = pickVersion(g.map((x) => x.manifest.version), opts.version);
    const c = g.find((x) => x.manifest.version === v);
    if (c) picked.push(c);
  }
  if (picked.length === 0) throw new NotFoundError(`nothing to drill${opts.version ? ` at version ${opts.version}` : ""} (see \`incus-backup list\`)`);
  if (sel.names.length > 0 || opts.max === undefined) return picked;
  const record = await store.readState<DrillRecord>(DRILL_STATE).catch(() => undefined);
  const last = new Map(Object.entries(record?.items ?? {}).map(([id, r]) => [id, r.finished]));
  const keys = rotation(
    picked.map((c) => ({ ...c.manifest, c })),
    last,
    opts.max,
  );
  return keys.map((k) => k.c);
}

/**
 * Runs the drills, one at a time, under the repository lock (a backup's recovery must never take
 * a copy away under a running drill), after tidying what earlier drills or restores left.
 */
export async function drill(deps: DrillDeps, opts: DrillOptions, signal: AbortSignal): Promise<DrillResult[]> {
  const picked = await planDrill(deps.store, opts);
  const lock = await takeLock(deps.store, opts.command, deps.reporter, signal, opts.wait);
  const results: DrillResult[] = [];
  try {
    for (const line of await recoverJournals(deps)) deps.reporter.info(line);
    await ensureDrillProject(deps.client, signal);
    for (const c of picked) {
      if (signal.aborted) break;
      await deps.store.checkLock();
      const r = await drillOne(deps, opts, c, signal);
      results.push(r);
    }
    await saveRecord(deps, results, signal.aborted);
  } finally {
    await lock.release();
  }
  if (signal.aborted) throw new InterruptedError();
  return results;
}

async function saveRecord(deps: DrillDeps, results: DrillResult[], interrupted: boolean): Promise<void> {
  const now = deps.now().toISOString();
  const old = await deps.store.readState<DrillRecord>(DRILL_STATE).catch(() => undefined);
  const items = { ...(old?.items ?? {}) };
  for (const r of results) {
    items[itemId(r.item)] = { label: itemLabel(r.item), key: r.item, version: r.version, ok: r.ok, ...(r.reason === undefined ? {} : { reason: r.reason }), finished: now, seconds: r.timings.total };
  }
  const record: DrillRecord = {
    finished: now,
    items,
    lastRun: { finished: now, drilled: results.length, passed: results.filter((r) => r.ok).length, failed: results.filter((r) => !r.ok).map((r) => itemLabel(r.item)), interrupted },
  };
  await deps.store.saveState(DRILL_STATE, record).catch((err: unknown) => deps.reporter.warn(`could not save the drill record: ${errorMessage(err)}`));
}

/** The scratch project: its own profiles (empty: a copy gets no device from them), its own volumes, the default project's networks. */
export async function ensureDrillProject(c: IncusClient, signal?: AbortSignal): Promise<void> {
  try {
    await c.get(`/1.0/projects/${DRILL_PROJECT}`, `Get project ${DRILL_PROJECT}`, signal === undefined ? {} : { signal });
    return;
  } catch (err) {
    if (!(err instanceof IncusNotFoundError)) throw err;
  }
  await c.sync("POST", "/1.0/projects", `Create project ${DRILL_PROJECT}`, {
    body: {
      name: DRILL_PROJECT,
      description: "incus-backup restore drills: scratch copies, deleted after each drill",
      config: { "features.images": "false", "features.profiles": "true", "features.storage.volumes": "true", "features.networks": "false" },
    },
    ...(signal === undefined ? {} : { signal }),
  });
}

function copyName(): string {
  return `ibk-drill-${randomBytes(4).toString("hex")}`;
}

const seconds = (t0: number) => Math.round((Date.now() - t0) / 100) / 10;

async function drillOne(deps: DrillDeps, opts: DrillOptions, c: Candidate, signal: AbortSignal): Promise<DrillResult> {
  const m = c.manifest;
  const item = keyOf(m);
  const t0 = Date.now();
  const temp = copyName();
  const object = (m.object ?? {}) as {
    config?: Record<string, string>;
    expanded_config?: Record<string, string>;
    devices?: Record<string, Record<string, string>>;
    expanded_devices?: Record<string, Record<string, string>>;
    profiles?: string[];
  };
  const placeholders = m.kind === "instance" ? placeholdersFor(object.devices) : [];
  const entry: JournalEntry = {
    id: randomBytes(6).toString("hex"),
    kind: "drill",
    project: DRILL_PROJECT,
    ...(m.kind === "volume" ? { pool: m.pool ?? "" } : {}),
    name: m.name,
    temp,
    phase: "drill",
    // Every stand-in the import may need, before any is made: recovery removes only those marked as ours.
    drill: { of: m.kind === "volume" ? "volume" : "instance", placeholders },
    restart: [],
    started: deps.now().toISOString(),
  };
  const result: DrillResult = { item, version: m.version, ok: false, dropped: [], timings: { total: 0 } };
  deps.reporter.itemStart(item);
  await deps.store.journal.write(entry);
  try {
    if (m.kind === "volume") await drillVolume(deps, c, temp, result, signal);
    else {
      await prepareImport(deps.client, object.profiles ?? [], placeholders, signal);
      await drillInstance(deps, opts, c, temp, object, result, entry, signal);
    }
    result.ok = result.reason === undefined;
  } catch (err) {
    result.ok = false;
    result.reason = signal.aborted ? "interrupted" : errorMessage(err);
  } finally {
    deps.reporter.itemStep(item, "deleting the copy");
    try {
      await removeDrillCopy(deps.client, entry);
      await deps.store.journal.remove(entry.id);
    } catch (err) {
      deps.reporter.warn(`could not delete the drill copy ${DRILL_PROJECT}/${temp} (the next run will): ${errorMessage(err)}`);
    }
    result.timings.total = seconds(t0);
    deps.reporter.itemDone(item, result.ok ? { ok: true, seconds: result.timings.total } : { ok: false, error: result.reason ?? "failed", seconds: result.timings.total });
  }
  return result;
}

/**
 * The import checks that the instance's profiles exist in the project and that its volumes do:
 * empty profiles of those names (once), and empty stand-in volumes, marked as such, which the copy
 * loses before it starts.
 */
async function prepareImport(c: IncusClient, profiles: string[], placeholders: Array<{ pool: string; name: string }>, signal: AbortSignal): Promise<void> {
  const o = { query: { project: DRILL_PROJECT }, signal };
  for (const p of profiles) {
    if (p === "default") continue;
    const exists = await c.get(`/1.0/profiles/${encodeURIComponent(p)}`, `Get profile ${p}`, o).then(
      () => true,
      (err: unknown) => {
        if (err instanceof IncusNotFoundError) return false;
        throw err;
      },
    );
    if (!exists) await c.sync("POST", "/1.0/profiles", `Create profile ${p} in ${DRILL_PROJECT}`, { ...o, body: { name: p, description: "incus-backup drill: empty on purpose", config: {}, devices: {} } });
  }
  for (const p of placeholders) {
    const path = `/1.0/storage-pools/${encodeURIComponent(p.pool)}/volumes/custom`;
    try {
      await c.sync("POST", path, `Create stand-in volume ${p.pool}/${p.name}`, { ...o, body: { name: p.name, type: "custom", config: { "user.incus-backup.drill-placeholder": "true" } } });
    } catch (err) {
      // One left by an earlier drill (recovery removes it) or made by hand: the import only needs it to exist.
      if (!/already exists/i.test(errorMessage(err))) throw err;
    }
  }
}

async function drillInstance(
  deps: DrillDeps,
  opts: DrillOptions,
  c: Candidate,
  temp: string,
  object: { config?: Record<string, string>; expanded_config?: Record<string, string>; expanded_devices?: Record<string, Record<string, string>> },
  result: DrillResult,
  entry: JournalEntry,
  signal: AbortSignal,
): Promise<void> {
  const { client, reporter } = deps;
  const item = result.item;
  const target: ItemKey = { kind: "instance", project: DRILL_PROJECT, name: temp };
  let t = Date.now();
  reporter.itemStep(item, `restoring into ${DRILL_PROJECT} as ${temp}`);
  await importAs({ ...deps }, c, target, signal);
  result.timings.import = seconds(t);

  // Before it can ever start: no device but its root disk, no MAC, never at boot, the drill's limits.
  const inst = await getInstance(client, DRILL_PROJECT, temp, { signal });
  const copy = drillCopy(inst, opts.limits);
  // What its profiles gave the original: the scratch project's profiles of those names are empty.
  const fromProfiles = Object.entries(object.expanded_devices ?? {})
    .filter(([n, d]) => !(n in (inst.devices ?? {})) && !(d.type === "disk" && d.path === "/"))
    .map(([n, d]) => `${describeDevice(n, d)} from a profile`);
  result.dropped = [...copy.dropped, ...fromProfiles];
  await checkProfilesEmpty(client, inst.profiles, signal);
  await updateInstance(client, DRILL_PROJECT, temp, { ...instancePut(inst), devices: copy.devices, config: copy.config }, { signal });
  // The stand-ins are of no more use: the copy has none of those devices now.
  await removePlaceholders(client, entry.drill?.placeholders ?? []);

  t = Date.now();
  reporter.itemStep(item, "starting the copy");
  const startTimeout = AbortSignal.timeout(opts.timeout * 1000);
  try {
    await startInstance(client, DRILL_PROJECT, temp, AbortSignal.any([signal, startTimeout]));
  } catch (err) {
    if (signal.aborted) throw err;
    result.reason = startTimeout.aborted ? `it did not start within ${opts.timeout} s` : `it did not start: ${errorMessage(err)}`;
    return;
  }
  // RUNNING, and still RUNNING after the settle time: an init that exits at once fails here.
  for (const end = Date.now() + opts.settle * 1000; ; ) {
    const now = await getInstance(client, DRILL_PROJECT, temp, { signal });
    if (now.status !== "Running") {
      result.reason = `it stopped ${seconds(t)} s after it started (status ${now.status}): its init exited or crashed`;
      return;
    }
    if (Date.now() >= end) break;
    await sleep(Math.min(500, end - Date.now()), signal);
  }
  result.timings.boot = seconds(t);

  const check = object.config?.[DRILL_CHECK_KEY] ?? object.expanded_config?.[DRILL_CHECK_KEY];
  if (check === undefined || check.trim() === "") return;
  t = Date.now();
  reporter.itemStep(item, "running its check");
  const r = await execInstance(client, DRILL_PROJECT, temp, ["sh", "-c", check], { timeoutMs: opts.timeout * 1000, signal });
  result.timings.check = seconds(t);
  if (r.code === 0) return;
  const tail = `${r.stdout}\n${r.stderr}`.trim().split("\n").slice(-5).join("\n");
  if (tail) result.output = tail;
  result.reason = r.code === undefined ? `its check did not end within ${opts.timeout} s` : `its check exited ${r.code}${tail ? `: ${tail.split("\n").at(-1)}` : ""}`;
}

/** The copy's profiles must add no device: the scratch project's are made empty; one that an admin changed is refused. */
async function checkProfilesEmpty(c: IncusClient, profiles: string[], signal: AbortSignal): Promise<void> {
  for (const p of profiles) {
    const prof = await c.get<{ devices?: Record<string, Record<string, string>> }>(`/1.0/profiles/${encodeURIComponent(p)}`, `Get profile ${p}`, { query: { project: DRILL_PROJECT }, signal });
    const bad = Object.entries(prof.devices ?? {}).filter(([, d]) => !(d.type === "disk" && d.path === "/"));
    if (bad.length > 0) throw new Error(`profile ${p} of project ${DRILL_PROJECT} has devices (${bad.map(([n]) => n).join(", ")}); a drill copy must have none: remove them`);
  }
}

/** A volume: imported, then read back from the server and compared with the backup, file by file (paths, types, sizes). */
async function drillVolume(deps: DrillDeps, c: Candidate, temp: string, result: DrillResult, signal: AbortSignal): Promise<void> {
  const { client, reporter, store } = deps;
  const item = result.item;
  const pool = c.manifest.pool ?? "";
  let t = Date.now();
  reporter.itemStep(item, `restoring into ${DRILL_PROJECT} as ${temp}`);
  await importAs({ ...deps }, c, { kind: "volume", project: DRILL_PROJECT, pool, name: temp }, signal);
  result.timings.import = seconds(t);
  const object = (c.manifest.object ?? {}) as { content_type?: string };
  if (object.content_type === "block") return;
  t = Date.now();
  reporter.itemStep(item, "comparing the copy with the backup");
  const file = c.manifest.files.find((f) => f.name.startsWith("volume.tar"));
  if (!file) throw new Error(`version ${c.manifest.version} has no volume archive`);
  const backedUp = await readEntries(store, { version: c, file, kind: "volume" }, (e) => e.snapshot === "", { reporter, signal });
  const restored = await volumeEntries(client, pool, temp, signal);
  result.timings.compare = seconds(t);
  const diff = compareEntries(backedUp.entries, restored);
  if (diff.length > 0) result.reason = `the copy differs from the backup in ${diff.length} place(s): ${diff.slice(0, 3).join("; ")}${diff.length > 3 ? "; ..." : ""}`;
}

/** The entries of a volume as the server has it now: a backup of it, read as it streams (uncompressed), its data skipped. */
async function volumeEntries(c: IncusClient, pool: string, name: string, signal: AbortSignal): Promise<CatalogEntry[]> {
  const entries: CatalogEntry[] = [];
  const parser = new Parser({ strict: true });
  parser.on("entry", (e: ReadEntry) => {
    const x = entryOf("volume", e);
    if (x && x.snapshot === "") entries.push(x);
    e.resume();
  });
  const ended = new Promise<void>((resolve, reject) => {
    parser.on("end", () => resolve());
    parser.on("error", reject);
  });
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      if (parser.write(chunk)) done();
      else parser.once("drain", () => done());
    },
    final(done) {
      parser.end();
      done();
    },
  });
  const direct = ((await c.server(signal)).api_extensions ?? []).includes("direct_backup");
  if (direct) {
    await createStorageVolumeBackupStream(c, DRILL_PROJECT, pool, name, { volume_only: true, compression_algorithm: "none" }, sink, { signal });
  } else {
    const backupName = `ibk-drill-${randomBytes(3).toString("hex")}`;
    const op = await createStorageVolumeBackup(c, DRILL_PROJECT, pool, name, { name: backupName, volume_only: true, compression_algorithm: "none", expires_at: new Date(Date.now() + 3600_000).toISOString() }, { signal });
    await op.wait({ signal });
    try {
      await getStorageVolumeBackupFile(c, DRILL_PROJECT, pool, name, backupName, sink, { signal });
    } finally {
      await deleteStorageVolumeBackup(c, DRILL_PROJECT, pool, name, backupName).catch(() => undefined);
    }
  }
  await ended;
  return entries;
}

/** Paths missing on either side, and ones whose type or size differ. */
export function compareEntries(backedUp: readonly CatalogEntry[], restored: readonly CatalogEntry[]): string[] {
  const key = (e: CatalogEntry) => e.path;
  const now = new Map(restored.map((e) => [key(e), e]));
  const out: string[] = [];
  for (const e of backedUp) {
    const r = now.get(key(e));
    now.delete(key(e));
    if (!r) out.push(`${e.path} is missing`);
    else if (r.type !== e.type) out.push(`${e.path} is a ${r.type}, not a ${e.type}`);
    else if (r.size !== e.size) out.push(`${e.path} has ${r.size} bytes, not ${e.size}`);
  }
  for (const r of now.values()) out.push(`${r.path} is not in the backup`);
  return out;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        reject(new InterruptedError());
      },
      { once: true },
    );
  });
}
