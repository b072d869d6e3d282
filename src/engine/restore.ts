// Carries out a restore plan: check each backup, import it, and swap it in without losing the original.

import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { AppError, IntegrityError, errorMessage, throwIfAborted, type ExitCodeValue } from "../errors";
import type { IncusClient } from "../incus/client";
import { IncusNotFoundError } from "../incus/errors";
import {
  createInstanceFromBackup,
  deleteInstance,
  getInstance,
  getInstances,
  renameInstance,
} from "../incus/instances";
import { Operation, getRunningTasks, progressText } from "../incus/operations";
import {
  copyStoragePoolVolume,
  createStoragePoolVolumeFromBackup,
  deleteStoragePoolVolume,
} from "../incus/storage_volumes";
import { imageKey, instanceKey, volumeKey, type Candidate, type LiveState, type Plan, type Step } from "../core/plan";
import { getImages } from "../incus/images";
import { restoreImage } from "./image_restore";
import { runPool, Semaphore } from "./pool";
import type { TransferOptions } from "../incus/transfer";
import { peekIndexName } from "./archive";
import { itemLabel, type ItemKey } from "../core/selection";
import type { FileEntry } from "../repository/manifest";
import type { Repository, VersionEntry } from "../repository/repository";
import { Journal, type JournalEntry, type JournalInstanceRef } from "../repository/journal";
import { RepositoryLock } from "../repository/lock";
import { instancesUsingVolume, liveVolumes } from "./discover";
import { startInstance, stopInstance } from "./power";
import type { Reporter } from "./reporter";

export interface RestoreDeps {
  client: IncusClient;
  repo: Repository;
  reporter: Reporter;
  now: () => Date;
  /** Slots for the two phases of an item (see executePlan); unlimited when absent. */
  slots?: { transfer: Semaphore; make: Semaphore };
}

const UNLIMITED = { transfer: new Semaphore(Infinity), make: new Semaphore(Infinity) };

function slotsOf(deps: RestoreDeps): { transfer: Semaphore; make: Semaphore } {
  return deps.slots ?? UNLIMITED;
}

export interface StepResult {
  item: ItemKey;
  ok: boolean;
  error?: string;
  /** The exit code of the tool's own error that failed the step (a corrupt backup: 9). */
  exitCode?: ExitCodeValue;
  seconds: number;
}

export interface RestoreResult {
  steps: StepResult[];
  interrupted: boolean;
}

/** Reads what the plan needs to know about the target server. */
export async function liveState(c: IncusClient, signal?: AbortSignal): Promise<LiveState> {
  const opts = signal === undefined ? {} : { signal };
  // Three independent lists: read them at once.
  const [instances, images, volumes] = await Promise.all([getInstances(c, undefined, opts), getImages(c, undefined, opts), liveVolumes(c, undefined, signal)]);
  const state: LiveState = { instances: new Map(), volumes: new Map(), images: new Set(), aliases: new Map() };
  for (const img of images) {
    state.images.add(imageKey(img.project, img.fingerprint));
    for (const a of img.aliases ?? []) state.aliases.set(`${img.project}/${a.name}`, img.fingerprint);
  }
  for (const i of instances) state.instances.set(instanceKey(i.project, i.name), { status: i.status });
  for (const v of volumes) {
    const users = instancesUsingVolume(instances, v.volume, v.pool).map((i) => ({
      project: i.project,
      name: i.name,
      running: i.status === "Running",
    }));
    state.volumes.set(volumeKey(v.project, v.pool, v.name), { users });
  }
  return state;
}

/** Total bytes of a version's files. */
export function sizeOf(c: Candidate): number {
  return c.manifest.files.reduce((n, f) => n + f.size, 0);
}

/** The archive file of an instance or volume version. */
export function archiveOf(c: Candidate): FileEntry {
  const prefix = `${c.manifest.kind}.`;
  const f = c.manifest.files.find((x) => x.name.startsWith(prefix));
  if (!f) throw new IntegrityError(`${c.dir}: the manifest lists no ${c.manifest.kind} archive`);
  return f;
}

/**
 * Runs the steps, `parallel` at a time, in dependency phases: images, then volumes, then
 * instances (which may use them). Volume replacements run one at a time, because two of them can
 * stop and restart the same instance. One failing step does not stop the others.
 */
export async function executePlan(base: RestoreDeps, plan: Plan, signal: AbortSignal, parallel = 1): Promise<RestoreResult> {
  // Checking and uploading is one phase (the repository's disk, the socket), the server unpacking
  // another (its CPU and disk): each has `parallel` slots, and twice as many items are under way.
  const deps: RestoreDeps = { ...base, slots: { transfer: new Semaphore(parallel), make: new Semaphore(parallel) } };
  const results: StepResult[] = [];
  deps.reporter.plan?.(plan.steps.length, plan.steps.reduce((n, s) => n + (s.op === "image" && s.exists ? 0 : sizeOf(s.source)), 0));
  const one = async (step: Step) => {
    const t0 = Date.now();
    deps.reporter.itemStart(step.target);
    try {
      await runStep(deps, step, signal);
      const seconds = (Date.now() - t0) / 1000;
      results.push({ item: step.target, ok: true, seconds });
      deps.reporter.itemDone(step.target, { ok: true, seconds, bytes: sizeOf(step.source) });
    } catch (err) {
      const seconds = (Date.now() - t0) / 1000;
      const error = signal.aborted ? "interrupted" : errorMessage(err);
      const exitCode = !signal.aborted && err instanceof AppError ? err.exitCode : undefined;
      results.push({ item: step.target, ok: false, error, ...(exitCode === undefined ? {} : { exitCode }), seconds });
      deps.reporter.itemDone(step.target, { ok: false, error, seconds });
    }
  };
  const largestFirst = (steps: Step[]) => [...steps].sort((a, b) => sizeOf(b.source) - sizeOf(a.source));
  for (const kind of ["image", "volume", "instance"] as const) {
    const steps = plan.steps.filter((s) => s.target.kind === kind);
    await runPool(largestFirst(steps.filter((s) => s.op !== "replace-contents")), parallel * 2, signal, one);
    await runPool(steps.filter((s) => s.op === "replace-contents"), 1, signal, one);
  }
  return { steps: results, interrupted: signal.aborted };
}

async function runStep(deps: RestoreDeps, step: Step, signal: AbortSignal): Promise<void> {
  if (step.op === "image") return restoreImage(deps, step, signal);
  const archive = await checkArchive(deps, step, signal);
  if (step.op === "create") {
    if (step.target.kind === "instance") {
      await importInstance(deps, step.target, archive, step.target.name, signal);
      if (step.start) {
        deps.reporter.itemStep(step.target, "starting");
        await startInstance(deps.client, step.target.project, step.target.name, signal);
      }
    } else {
      await importVolume(deps, step.target, archive, step.target.name, signal);
    }
    return;
  }
  const journal = new Journal(deps.repo.root);
  if (step.op === "replace") await replaceInstance(deps, journal, step, archive, signal);
  else await replaceVolumeContents(deps, journal, step, archive, signal);
}

/** An archive to restore, and the promise of its full check. */
interface CheckedArchive {
  file: string;
  /** Resolves once the file's sha256 matches the manifest; rejects with IntegrityError if not. */
  checked: Promise<void>;
}

/**
 * Checks a backup before anything on the server changes. Its size and its own index
 * (backup/index.yaml, a few KB: so an archive swapped for another item's is refused even if its
 * manifest was rewritten to match) are checked at once. Its sha256 is computed while it uploads,
 * and the upload's last bytes wait for it: the server keeps an upload whole before it acts on it,
 * so an archive that fails the check never becomes an instance or a volume.
 */
async function checkArchive(deps: RestoreDeps, step: Exclude<Step, { op: "image" }>, signal: AbortSignal): Promise<CheckedArchive> {
  const entry: VersionEntry = { manifest: step.source.manifest, dir: step.source.dir, size: 0 };
  const archive = archiveOf(step.source);
  const file = join(step.source.dir, archive.name);
  const untouched = (err: unknown): unknown =>
    err instanceof IntegrityError && step.op !== "create"
      ? new IntegrityError(`${err.message} (the existing ${step.target.kind} was not touched)`, { cause: err })
      : err;
  deps.reporter.itemStep(step.target, "checking the backup");
  try {
    await deps.repo.checkFileSize(entry, archive);
    const inside = await peekIndexName(file);
    if (inside !== undefined && inside !== step.source.manifest.name) {
      throw new IntegrityError(`${file} holds a backup of "${inside}", not of "${step.source.manifest.name}" as its manifest says`);
    }
  } catch (err) {
    throw untouched(err);
  }
  const checked = deps.repo.checkFileSum(entry, archive, signal).catch((err: unknown) => {
    throw untouched(err);
  });
  checked.catch(() => undefined);
  return { file, checked };
}

/** An upload that failed because its archive failed the check reports the check's error. */
async function checkFailure(archive: CheckedArchive, err: unknown): Promise<unknown> {
  const verdict = await Promise.race([archive.checked.then(() => undefined, (e: unknown) => e), new Promise((r) => setTimeout(r, 50, undefined))]);
  return verdict ?? err;
}

function tempName(kind: "restore" | "old"): string {
  return `ibk-${kind}-${randomBytes(4).toString("hex")}`;
}

function importInstance(deps: RestoreDeps, target: ItemKey, archive: CheckedArchive, name: string, signal: AbortSignal): Promise<void> {
  return importArchive(deps, target, archive, signal, (opts) => createInstanceFromBackup(deps.client, { project: target.project, file: archive.file, name }, opts));
}

function importVolume(deps: RestoreDeps, target: ItemKey, archive: CheckedArchive, name: string, signal: AbortSignal): Promise<void> {
  return importArchive(deps, target, archive, signal, (opts) =>
    createStoragePoolVolumeFromBackup(deps.client, { project: target.project, pool: target.pool ?? "", file: archive.file, name }, opts),
  );
}

/** Uploads a checked archive in a transfer slot (the check gates its last bytes), then waits for the server to unpack it. */
async function importArchive(
  deps: RestoreDeps,
  target: ItemKey,
  archive: CheckedArchive,
  signal: AbortSignal,
  upload: (opts: TransferOptions) => Promise<Operation>,
): Promise<void> {
  const op = await slotsOf(deps).transfer.use(async () => {
    deps.reporter.itemStep(target, "uploading (and checking the sha256)");
    try {
      return await upload({ signal, gate: archive.checked, onProgress: (done, total) => deps.reporter.itemBytes(target, done, total) });
    } catch (err) {
      throw await checkFailure(archive, err);
    }
  });
  await waitImport(deps, op, target, signal);
}

/**
 * The server unpacks what was uploaded. Uploading and unpacking use different parts of the
 * machine, so each has its own slots: the next item uploads while the previous one unpacks.
 */
async function waitImport(deps: RestoreDeps, op: Operation, target: ItemKey, signal: AbortSignal): Promise<void> {
  await slotsOf(deps).make.use(() => waitUnpacked(deps, op, target, signal));
}

async function waitUnpacked(deps: RestoreDeps, op: Operation, target: ItemKey, signal: AbortSignal): Promise<void> {
  deps.reporter.itemStep(target, "unpacking on the server");
  await op.wait({
    signal,
    onProgress: (md) => {
      const t = progressText(md);
      if (t) deps.reporter.itemStep(target, `server: ${t}`);
    },
  });
}

/**
 * Replaces an instance: import the backup under a temporary name; only once that worked, stop the
 * original, rename it aside, give the new one the name, start it, and delete the original. The
 * journal records each phase so that a run that dies is completed or undone by the next one.
 */
async function replaceInstance(deps: RestoreDeps, journal: Journal, step: Extract<Step, { op: "replace" }>, archive: CheckedArchive, signal: AbortSignal) {
  const { client } = deps;
  const { project, name } = step.target;
  const entry: JournalEntry = {
    id: randomBytes(6).toString("hex"),
    kind: "instance",
    project,
    name,
    temp: tempName("restore"),
    aside: tempName("old"),
    phase: "import",
    wasRunning: step.wasRunning,
    restart: step.start ? [{ project, name }] : [],
    started: deps.now().toISOString(),
  };
  await journal.write(entry);
  try {
    await importInstance(deps, step.target, archive, entry.temp, signal);
  } catch (err) {
    await deleteInstance(client, project, entry.temp).catch(() => undefined);
    await journal.remove(entry.id);
    // A failed check already says the existing instance was not touched.
    if (err instanceof IntegrityError) throw err;
    throw new Error(`${errorMessage(err)} (the existing instance was not touched)`);
  }
  throwIfAborted(signal);

  // From here on, finish even if interrupted: a half-done swap is worse than a late exit.
  entry.phase = "swap";
  await journal.write(entry);
  const current = await getInstance(client, project, name);
  if (current.status !== "Stopped") {
    deps.reporter.itemStep(step.target, "stopping the existing instance");
    await stopInstance(client, project, name);
  }
  deps.reporter.itemStep(step.target, "swapping in the restored instance");
  await renameInstance(client, project, name, entry.aside!);
  await renameInstance(client, project, entry.temp, name);
  entry.phase = "finish";
  await journal.write(entry);
  await finishInstance(deps, entry, step.target);
  await journal.remove(entry.id);
}

async function finishInstance(deps: RestoreDeps, entry: JournalEntry, target: ItemKey): Promise<void> {
  const { client } = deps;
  for (const r of entry.restart) {
    deps.reporter.itemStep(target, "starting");
    await startIfStopped(client, r);
  }
  deps.reporter.itemStep(target, "deleting the replaced instance");
  await deleteInstance(client, entry.project, entry.aside!).catch((err: unknown) => {
    if (!(err instanceof IncusNotFoundError)) throw err;
  });
}

/**
 * Replaces a volume's contents in place, so it keeps its name, config and attachments: import the
 * backup as a temporary volume, stop the instances using the volume, refresh the volume from the
 * temporary one (files that are not in the backup disappear), start the instances again.
 */
async function replaceVolumeContents(
  deps: RestoreDeps,
  journal: Journal,
  step: Extract<Step, { op: "replace-contents" }>,
  archive: CheckedArchive,
  signal: AbortSignal,
) {
  const { client } = deps;
  const { project, name } = step.target;
  const pool = step.target.pool ?? "";
  const entry: JournalEntry = {
    id: randomBytes(6).toString("hex"),
    kind: "volume",
    project,
    pool,
    name,
    temp: tempName("restore"),
    phase: "import",
    stop: [...step.restart, ...step.stopOnly],
    restart: step.restart,
    started: deps.now().toISOString(),
  };
  await journal.write(entry);
  try {
    await importVolume(deps, step.target, archive, entry.temp, signal);
  } catch (err) {
    await deleteStoragePoolVolume(client, project, pool, entry.temp).catch(() => undefined);
    await journal.remove(entry.id);
    if (err instanceof IntegrityError) throw err;
    throw new Error(`${errorMessage(err)} (the existing volume was not touched)`);
  }
  throwIfAborted(signal);

  entry.phase = "stop";
  await journal.write(entry);
  for (const u of entry.stop ?? []) {
    deps.reporter.itemStep(step.target, `stopping ${u.project}/${u.name}`);
    const now = await getInstance(client, u.project, u.name);
    if (now.status !== "Stopped") await stopInstance(client, u.project, u.name);
  }
  entry.phase = "refresh";
  await journal.write(entry);
  deps.reporter.itemStep(step.target, "replacing the volume's contents");
  await copyStoragePoolVolume(client, project, pool, entry.temp, name, { refresh: true, volumeOnly: true });
  entry.phase = "finish";
  await journal.write(entry);
  await finishVolume(deps, entry, step.target);
  await journal.remove(entry.id);
}

async function finishVolume(deps: RestoreDeps, entry: JournalEntry, target: ItemKey): Promise<void> {
  for (const r of entry.restart) {
    deps.reporter.itemStep(target, `starting ${r.project}/${r.name}`);
    await startIfStopped(deps.client, r);
  }
  await deleteStoragePoolVolume(deps.client, entry.project, entry.pool ?? "", entry.temp).catch((err: unknown) => {
    if (!(err instanceof IncusNotFoundError)) throw err;
  });
}

async function startIfStopped(c: IncusClient, r: JournalInstanceRef): Promise<void> {
  const now = await getInstance(c, r.project, r.name);
  if (now.status === "Stopped") await startInstance(c, r.project, r.name);
}

async function instanceExists(c: IncusClient, project: string, name: string): Promise<boolean> {
  try {
    await getInstance(c, project, name);
    return true;
  } catch (err) {
    if (err instanceof IncusNotFoundError) return false;
    throw err;
  }
}

/**
 * Completes or undoes restores that died half-way, from their journals. Call while holding the
 * repository lock, before a new backup or restore. Returns what it did, for the user.
 */
export async function recoverJournals(deps: RestoreDeps): Promise<string[]> {
  const journal = new Journal(deps.repo.root);
  const { entries, problems } = await journal.list();
  const said: string[] = [...problems];
  for (const e of entries) {
    const label = itemLabel({ kind: e.kind === "volume" ? "volume" : "instance", project: e.project, name: e.name, ...(e.pool === undefined ? {} : { pool: e.pool }) });
    try {
      if (e.kind === "stopped") said.push(`${label}: ${await recoverStopped(deps, e)}`);
      else if (e.kind === "instance") said.push(`${label}: ${await recoverInstance(deps, e)}`);
      else said.push(`${label}: ${await recoverVolume(deps, e)}`);
      await journal.remove(e.id);
    } catch (err) {
      said.push(`${label}: recovery of an interrupted restore failed, will retry next run: ${errorMessage(err)}`);
    }
  }
  return said;
}

/**
 * Recovers interrupted restores before a command reads the server's state to plan: a restore that
 * died between its renames leaves the instance under a temporary name, and a plan made from that
 * (create instead of replace, stopped instead of running) would be wrong. Only when a journal
 * exists; takes the repository lock for it and releases it. Returns what it did.
 */
export async function recoverBeforePlanning(deps: RestoreDeps, command: string): Promise<string[]> {
  const { entries } = await new Journal(deps.repo.root).list();
  if (entries.length === 0) return [];
  const lock = await RepositoryLock.acquire(deps.repo.root, command, { onMessage: (t) => deps.reporter.info(t) });
  try {
    return await recoverJournals(deps);
  } finally {
    await lock.release();
  }
}

/** Whether restores died half-way and wait for recovery (for a dry run, which changes nothing). */
export async function pendingRecoveries(root: string): Promise<number> {
  return (await new Journal(root).list()).entries.length;
}

/** How long recovery waits for what a dead run left the server doing. */
const SETTLE_MS = 5 * 60_000;

/**
 * Waits for the server's tasks on these instances or volumes to end. A run killed while it waited
 * for an import, a stop or a copy leaves the server doing it; deciding before it ends would, say,
 * start an instance that is still stopping, or miss an import that creates the temporary copy
 * a moment later.
 */
async function settle(c: IncusClient, names: string[]): Promise<void> {
  const touches = (op: { resources?: Record<string, string[]> | null }) =>
    Object.values(op.resources ?? {})
      .flat()
      .some((url) => names.includes(decodeURIComponent(url.split("?")[0]!.split("/").pop() ?? "")));
  const deadline = Date.now() + SETTLE_MS;
  for (const data of (await getRunningTasks(c)).filter(touches)) {
    const op = new Operation(c, data, `wait for the server: ${data.description}`);
    // Its outcome does not matter here (an upload cut off fails): only that it is over.
    await op.wait({ signal: AbortSignal.timeout(Math.max(1000, deadline - Date.now())) }).catch(() => undefined);
  }
}

/** A `backup --stop` died while its instance was down: start it again. */
async function recoverStopped(deps: RestoreDeps, e: JournalEntry): Promise<string> {
  for (const r of e.restart) {
    const now = await getInstance(deps.client, r.project, r.name).catch((err: unknown) => {
      if (err instanceof IncusNotFoundError) return undefined;
      throw err;
    });
    if (now?.status === "Stopped") {
      await startInstance(deps.client, r.project, r.name);
      return "started again: an interrupted backup --stop had left it stopped";
    }
  }
  return "an interrupted backup --stop had stopped it; it is running again";
}

async function recoverInstance(deps: RestoreDeps, e: JournalEntry): Promise<string> {
  const c = deps.client;
  const target: ItemKey = { kind: "instance", project: e.project, name: e.name };
  await settle(c, [e.name, e.temp, ...(e.aside === undefined ? [] : [e.aside])]);
  const hasName = await instanceExists(c, e.project, e.name);
  const hasTemp = await instanceExists(c, e.project, e.temp);
  const hasAside = e.aside !== undefined && (await instanceExists(c, e.project, e.aside));
  if (e.phase === "import" || (hasName && hasTemp)) {
    // The swap never happened: the original is in place; throw the import away.
    if (hasTemp) await deleteInstance(c, e.project, e.temp);
    if (hasName && e.wasRunning) await startIfStopped(c, { project: e.project, name: e.name });
    return "an interrupted restore was undone; the original instance is in place";
  }
  if (!hasName && hasAside) {
    // Died between the two renames: put the original back.
    await renameInstance(c, e.project, e.aside!, e.name);
    if (hasTemp) await deleteInstance(c, e.project, e.temp);
    if (e.wasRunning) await startIfStopped(c, { project: e.project, name: e.name });
    return "an interrupted restore was undone; the original instance is back in place";
  }
  if (hasName) {
    // The restored instance is in place; finish: start it and delete the old one.
    await finishInstance(deps, e, target);
    return "an interrupted restore was completed";
  }
  return "an interrupted restore left neither the original nor the restored instance; nothing to recover";
}

async function recoverVolume(deps: RestoreDeps, e: JournalEntry): Promise<string> {
  const target: ItemKey = { kind: "volume", project: e.project, pool: e.pool ?? "", name: e.name };
  await settle(deps.client, [e.name, e.temp, ...(e.stop ?? e.restart).map((r) => r.name)]);
  if (e.phase === "import") {
    await deleteStoragePoolVolume(deps.client, e.project, e.pool ?? "", e.temp).catch(() => undefined);
    for (const r of e.restart) await startIfStopped(deps.client, r);
    return "an interrupted restore was undone; the volume was not touched";
  }
  if (e.phase === "stop" || e.phase === "refresh") {
    // The contents may be half replaced: replace them again from the complete temporary volume.
    for (const r of e.stop ?? e.restart) {
      const now = await getInstance(deps.client, r.project, r.name).catch(() => undefined);
      if (now && now.status !== "Stopped") await stopInstance(deps.client, r.project, r.name);
    }
    await copyStoragePoolVolume(deps.client, e.project, e.pool ?? "", e.temp, e.name, { refresh: true, volumeOnly: true });
  }
  await finishVolume(deps, e, target);
  return "an interrupted restore was completed";
}
