// Carries out a restore plan: check each backup, import it, and swap it in without losing the original.

import { randomBytes } from "node:crypto";
import { Transform } from "node:stream";
import { IntegrityError, errorMessage, exitCodeOf, throwIfAborted, type ExitCodeValue } from "../errors";
import type { IncusClient } from "../incus/client";
import { removeDrillCopy } from "./drill_cleanup";
import { placeholdersFor } from "../core/drill";
import { IncusNotFoundError } from "../incus/errors";
import {
  createInstanceFromBackup,
  deleteInstance,
  moveInstanceToMember,
  getInstance,
  getInstanceSnapshotNames,
  getInstances,
  instancePut,
  patchInstanceConfig,
  renameInstance,
  updateInstance,
  updateInstanceState,
} from "../incus/instances";
import { hasIdentity, inertConfig, macKeys, nicIdentities, restoredConfig, savedIdentity } from "../core/nics";
import { Operation, progressText } from "../incus/operations";
import {
  copyStoragePoolVolume,
  createStoragePoolVolumeFromBackup,
  deleteStoragePoolVolume,
  getStoragePoolVolume,
} from "../incus/storage_volumes";
import { imageKey, instanceKey, volumeKey, type Candidate, type LiveState, type Plan, type Step } from "../core/plan";
import { getImages } from "../incus/images";
import { restoreImage } from "./image_restore";
import { runPool, Semaphore } from "./pool";
import type { TransferOptions, UploadSource } from "../incus/transfer";
import { indexWatcher } from "./archive";
import { itemLabel, type ItemKey } from "../core/selection";
import type { FileEntry } from "../core/manifest";
import type { JournalStore, Store } from "../repository/store";
import type { JournalEntry, JournalInstanceRef } from "../repository/journal";
import { instancesUsingVolume, liveVolumes } from "./discover";
import { startInstance, stopInstance, waitForServerTasks } from "./power";
import { takeLock, type LockWait } from "./locking";
import { slotsOf, stopOptions, type RestoreDeps } from "./restore_deps";

export type { RestoreDeps } from "./restore_deps";

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
  for (const i of instances) state.instances.set(instanceKey(i.project, i.name), { status: i.status, nics: nicIdentities(i), ...(i.location ? { location: i.location } : {}) });
  for (const v of volumes) {
    const users = instancesUsingVolume(instances, v.volume, v.pool).map((i) => ({
      project: i.project,
      name: i.name,
      running: i.status === "Running",
    }));
    const key = volumeKey(v.project, v.pool, v.name);
    state.volumes.set(key, [...(state.volumes.get(key) ?? []), { users, ...(v.volume.location ? { location: v.volume.location } : {}) }]);
  }
  return state;
}

/**
 * Fills in what the plan's replacements take away that the plan itself cannot know: the snapshots
 * deleted with each replaced instance.
 */
export async function describeReplacements(c: IncusClient, plan: Plan, signal?: AbortSignal): Promise<void> {
  const opts = signal === undefined ? {} : { signal };
  await Promise.all(
    plan.steps.map(async (s) => {
      if (s.op === "replace") s.snapshots = await getInstanceSnapshotNames(c, s.target.project, s.target.name, opts);
    }),
  );
}

/** Total bytes of a version's files. */
export function sizeOf(c: Candidate): number {
  return c.manifest.files.reduce((n, f) => n + f.size, 0);
}

/** The archive file of an instance or volume version. */
export function archiveOf(c: Candidate): FileEntry {
  const prefix = `${c.manifest.kind}.`;
  const f = c.manifest.files.find((x) => x.name.startsWith(prefix));
  if (!f) throw new IntegrityError(`${c.location}: the manifest lists no ${c.manifest.kind} archive`);
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
      const exitCode = signal.aborted ? undefined : exitCodeOf(err);
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
  const archive = await checkArchive(deps, step);
  if (step.op === "create") {
    if (step.target.kind === "instance") {
      await importInstance(deps, step.target, archive, step.target.name, signal, step.member);
      if (step.freshMacs) await clearMacs(deps, step.target.project, step.target.name);
      if (step.start) {
        deps.reporter.itemStep(step.target, "starting");
        await startInstance(deps.client, step.target.project, step.target.name, signal);
      }
    } else {
      await importVolume(deps, step.target, archive, step.target.name, signal, step.member);
    }
    return;
  }
  const journal = deps.store.journal;
  if (step.op === "replace") await replaceInstance(deps, journal, step, archive, signal);
  else await replaceVolumeContents(deps, journal, step, archive, signal);
}

/** An archive to restore: its size was checked; its index and sha256 are checked as it uploads. */
interface CheckedArchive {
  source: Candidate;
  file: FileEntry;
  /** Names the archive in errors. */
  label: string;
  /** Adds, to a failed check's error, that the existing item was not touched. */
  untouched: (err: unknown) => unknown;
}

/**
 * The checks of a backup, made before anything on the server changes: its size at once; its own
 * index (backup/index.yaml, in its first kilobytes: so an archive swapped for another item's is
 * refused even if its manifest was rewritten to match) and its sha256 while it uploads
 * (importArchive). The upload's last bytes wait for both: the server keeps an upload whole
 * before it acts on it, so an archive that fails either check never becomes an instance or a
 * volume, and every restore uploads before it touches what exists.
 */
async function checkArchive(deps: RestoreDeps, step: Exclude<Step, { op: "image" }>): Promise<CheckedArchive> {
  const file = archiveOf(step.source);
  const label = `${step.source.location}/${file.name}`;
  const untouched = (err: unknown): unknown =>
    err instanceof IntegrityError && step.op !== "create"
      ? new IntegrityError(`${err.message} (the existing ${step.target.kind} was not touched)`, { cause: err })
      : err;
  deps.reporter.itemStep(step.target, "checking the backup");
  try {
    await deps.store.checkFileSize(step.source, file);
  } catch (err) {
    throw untouched(err);
  }
  return { source: step.source, file, label, untouched };
}

/** An upload that failed because its archive failed the check reports the check's error. */
async function checkFailure(checked: Promise<void>, err: unknown): Promise<unknown> {
  const verdict = await Promise.race([checked.then(() => undefined, (e: unknown) => e), new Promise((r) => setTimeout(r, 50, undefined))]);
  return verdict ?? err;
}

function tempName(kind: "restore" | "old"): string {
  return `ibk-${kind}-${randomBytes(4).toString("hex")}`;
}

/**
 * Imports an instance; in a cluster, onto `member`. Incus puts an uploaded instance on the member
 * this tool talks to, so for another member it is imported here and moved there. The import checks
 * that the custom volumes its disks name exist here: those that do not (they are the other
 * member's local volumes) get empty stand-ins, marked as such, for the import, removed once it has moved.
 */
async function importInstance(deps: RestoreDeps, target: ItemKey, archive: CheckedArchive, name: string, signal: AbortSignal, member?: string): Promise<void> {
  const here = deps.connectedMember;
  if (member === undefined || here === undefined || member === here) {
    await importArchive(deps, target, archive, signal, (source, opts) => createInstanceFromBackup(deps.client, { project: target.project, source, name }, opts));
    return;
  }
  // Journaled before the first stand-in is made: a run killed from here on has the next one
  // finish the move and delete the stand-ins (recoverMove).
  const standIns = await missingStandIns(deps.client, target.project, here, archive.source);
  const entry: JournalEntry = {
    id: randomBytes(6).toString("hex"),
    kind: "move",
    project: target.project,
    name,
    temp: "",
    phase: "move",
    member,
    move: { from: here, standIns },
    restart: [],
    started: deps.now().toISOString(),
  };
  await deps.store.journal.write(entry);
  try {
    try {
      for (const v of standIns) await makeStandIn(deps.client, target.project, here, v);
      await importArchive(deps, target, archive, signal, (source, opts) => createInstanceFromBackup(deps.client, { project: target.project, source, name }, opts));
      deps.reporter.itemStep(target, `moving to member ${member}`);
      await moveInstanceToMember(deps.client, target.project, name, member, { signal });
    } finally {
      for (const v of standIns) await deleteStandIn(deps.client, target.project, here, v);
    }
  } catch (err) {
    // An instance imported but not moved keeps the entry: the next run moves it on (or the
    // caller deletes it, and the next run finds nothing left to do).
    if (!(await instanceExists(deps.client, target.project, name).catch(() => true))) await deps.store.journal.remove(entry.id);
    throw err;
  }
  await deps.store.journal.remove(entry.id);
}

/** A killed cluster import: the instance, if it got imported, goes on to its member; the stand-ins go. */
async function recoverMove(deps: RestoreDeps, e: JournalEntry): Promise<string> {
  const { from, standIns } = e.move!;
  const said: string[] = [];
  const inst = await getInstance(deps.client, e.project, e.name).catch((err: unknown) => {
    if (err instanceof IncusNotFoundError) return undefined;
    throw err;
  });
  if (inst !== undefined && inst.location === from) {
    await moveInstanceToMember(deps.client, e.project, e.name, e.member!);
    said.push(`moved to member ${e.member!}, as the interrupted restore was doing`);
  }
  for (const v of standIns) if (await deleteStandIn(deps.client, e.project, from, v)) said.push(`removed the stand-in volume ${v.pool}/${v.name} on member ${from}`);
  return said.length > 0 ? said.join("; ") : "nothing was left to tidy";
}

const STAND_IN_KEY = "user.incus-backup.stand-in";

/** The custom volumes an instance's disks name that member `here` lacks: the import needs stand-ins for them there. */
async function missingStandIns(c: IncusClient, project: string, here: string, source: Candidate): Promise<Array<{ pool: string; name: string }>> {
  const object = (source.manifest.object ?? {}) as { devices?: Record<string, Record<string, string>> };
  const missing: Array<{ pool: string; name: string }> = [];
  for (const v of placeholdersFor(object.devices)) {
    const path = `/1.0/storage-pools/${encodeURIComponent(v.pool)}/volumes/custom`;
    try {
      await c.get(`${path}/${encodeURIComponent(v.name)}`, `Get volume ${v.pool}/${v.name}`, { query: { project, target: here } });
    } catch (err) {
      if (!(err instanceof IncusNotFoundError)) throw err;
      missing.push(v);
    }
  }
  return missing;
}

async function makeStandIn(c: IncusClient, project: string, here: string, v: { pool: string; name: string }): Promise<void> {
  const path = `/1.0/storage-pools/${encodeURIComponent(v.pool)}/volumes/custom`;
  await c.sync("POST", path, `Create a stand-in for volume ${v.pool}/${v.name} on member ${here}`, {
    query: { project, target: here },
    body: { name: v.name, type: "custom", config: { [STAND_IN_KEY]: "true" } },
  });
}

/** Deletes a stand-in: only a volume marked as one and attached to nothing. Whether it did. */
async function deleteStandIn(c: IncusClient, project: string, here: string, v: { pool: string; name: string }): Promise<boolean> {
  const path = `/1.0/storage-pools/${encodeURIComponent(v.pool)}/volumes/custom/${encodeURIComponent(v.name)}`;
  const vol = await c.get<{ config?: Record<string, string>; used_by?: string[] }>(path, `Get volume ${v.pool}/${v.name}`, { query: { project, target: here } }).catch(() => undefined);
  if (!vol || vol.config?.[STAND_IN_KEY] !== "true" || (vol.used_by ?? []).length > 0) return false;
  return c.sync("DELETE", path, `Delete the stand-in for volume ${v.pool}/${v.name}`, { query: { project, target: here } }).then(
    () => true,
    () => false,
  );
}

function importVolume(deps: RestoreDeps, target: ItemKey, archive: CheckedArchive, name: string, signal: AbortSignal, member?: string): Promise<void> {
  return importArchive(deps, target, archive, signal, (source, opts) =>
    createStoragePoolVolumeFromBackup(deps.client, { project: target.project, pool: target.pool ?? "", source, name, ...(member === undefined ? {} : { target: member }) }, opts),
  );
}

/** Uploads a checked archive in a transfer slot (its sha256 check gates the last bytes), then waits for the server to unpack it. */
async function importArchive(
  deps: RestoreDeps,
  target: ItemKey,
  archive: CheckedArchive,
  signal: AbortSignal,
  upload: (source: UploadSource, opts: TransferOptions) => Promise<Operation>,
): Promise<void> {
  const op = await slotsOf(deps).transfer.use(async () => {
    deps.reporter.itemStep(target, "uploading (and checking the sha256)");
    let checked: Promise<void> = Promise.resolve();
    try {
      const stored = await deps.store.openFile(archive.source, archive.file, signal);
      const index = indexWatcher(archive.file.name, archive.label);
      const expected = archive.source.manifest.name;
      const indexOk = index.result.then((inside) => {
        if (inside !== undefined && inside !== expected) throw new IntegrityError(`${archive.label} holds a backup of "${inside}", not of "${expected}" as its manifest says`);
      });
      checked = Promise.all([stored.checked, indexOk]).then(
        () => undefined,
        (err: unknown) => {
          throw archive.untouched(err);
        },
      );
      checked.catch(() => undefined);
      const watched = stored.stream.pipe(
        new Transform({
          transform(chunk: Buffer, _enc, done) {
            index.write(chunk);
            done(null, chunk);
          },
          flush(done) {
            index.end();
            done();
          },
        }),
      );
      stored.stream.on("error", (err) => watched.destroy(err));
      // An upload that fails early (before the index went by) must not leave the watcher's
      // decompressor waiting for more: in the service (drills) that would be a process per failure.
      watched.once("close", () => index.end());
      return await upload({ stream: watched, size: stored.size }, { signal, gate: checked, onProgress: (done, total) => deps.reporter.itemBytes(target, done, total) });
    } catch (err) {
      throw await checkFailure(checked, archive.untouched(err));
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

/** Drops an instance's MACs, so Incus gives it new ones when it starts (as `incus copy` does). */
async function clearMacs(deps: RestoreDeps, project: string, name: string): Promise<void> {
  const keys = macKeys(await getInstance(deps.client, project, name));
  if (keys.length > 0) await patchInstanceConfig(deps.client, project, name, Object.fromEntries(keys.map((k) => [k, ""])));
}

/**
 * Replaces an instance: import the backup under a temporary name; only once that worked, stop the
 * original, rename it aside and make it inert (no NICs, no autostart: the restored one keeps the
 * backup's MACs and addresses, which Incus allows only once on a network, stopped or not), give the
 * restored one the name, start it, and delete the original. If anything after the import fails,
 * the original is put back, with its name, devices, MACs and running state, in the same run. The
 * journal records each phase, so that a run that dies is completed or undone by the next one.
 */
async function replaceInstance(deps: RestoreDeps, journal: JournalStore, step: Extract<Step, { op: "replace" }>, archive: CheckedArchive, signal: AbortSignal) {
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
    await importInstance(deps, step.target, archive, entry.temp, signal, step.member);
    if (step.freshMacs) await clearMacs(deps, project, entry.temp);
  } catch (err) {
    // Nothing to undo but the import: its copy goes (a protected one too), and the journal with it
    // only if it went.
    if (await instanceExists(client, project, entry.temp).catch(() => true)) {
      try {
        await deleteRestored(client, project, entry.temp);
      } catch (cleanup) {
        throw new Error(`${errorMessage(err)} (the existing instance was not touched; the imported copy ${entry.temp} could not be deleted, the next run retries: ${errorMessage(cleanup)})`);
      }
    }
    await journal.remove(entry.id);
    // A failed check already says the existing instance was not touched.
    if (err instanceof IntegrityError) throw err;
    throw new Error(`${errorMessage(err)} (the existing instance was not touched)`);
  }
  throwIfAborted(signal);

  // From here on, finish even if interrupted: a half-done swap is worse than a late exit.
  const current = await getInstance(client, project, name);
  entry.phase = "swap";
  entry.original = savedIdentity(current);
  await journal.write(entry);
  try {
    if (current.status !== "Stopped") {
      deps.reporter.itemStep(step.target, "stopping the existing instance");
      await stopInstance(client, project, name, stopOptions(deps));
    }
    deps.reporter.itemStep(step.target, "swapping in the restored instance");
    await renameInstance(client, project, name, entry.aside!);
    await makeInert(client, project, entry.aside!);
    await renameInstance(client, project, entry.temp, name);
  } catch (err) {
    throw await undone(deps, journal, entry, step.target, `the swap failed: ${errorMessage(err)}`);
  }
  entry.phase = "finish";
  await journal.write(entry);
  await finishInstance(deps, journal, entry, step.target);
}

/** Sets the stopped original aside as inert: see inertConfig. */
async function makeInert(c: IncusClient, project: string, name: string): Promise<void> {
  const inst = await getInstance(c, project, name);
  await updateInstance(c, project, name, { ...instancePut(inst), ...inertConfig(inst) });
}

/**
 * Starts the restored instance if it is to run, then deletes the original. A restored instance
 * that does not start is thrown away and the original put back (it is still there, aside), so a
 * restore never leaves an instance down that was running; the backup stays in the repository.
 */
async function finishInstance(deps: RestoreDeps, journal: JournalStore, entry: JournalEntry, target: ItemKey): Promise<void> {
  const { client } = deps;
  const hasAside = await instanceExists(client, entry.project, entry.aside!);
  for (const r of entry.restart) {
    deps.reporter.itemStep(target, "starting");
    try {
      await startIfStopped(client, r);
    } catch (err) {
      if (hasAside) throw await undone(deps, journal, entry, target, `the restored instance did not start: ${errorMessage(err)}`);
      // The original is gone already (deleted after an earlier start): nothing to go back to,
      // and trying again on every run would not help.
      await journal.remove(entry.id);
      throw err;
    }
  }
  if (hasAside) {
    deps.reporter.itemStep(target, "deleting the replaced instance");
    await deleteInstance(client, entry.project, entry.aside!).catch((err: unknown) => {
      if (!(err instanceof IncusNotFoundError)) throw err;
    });
  }
  await journal.remove(entry.id);
}

/** A replace that failed after the import, and was undone: the original is back. */
class ReplaceUndoneError extends Error {}

/**
 * Puts the original back after a failed swap or start, and returns the error to report: a
 * ReplaceUndoneError, or, if putting it back failed too, a plain error saying so (the journal then
 * stays for the next run).
 */
async function undone(deps: RestoreDeps, journal: JournalStore, entry: JournalEntry, target: ItemKey, reason: string): Promise<Error> {
  deps.reporter.itemStep(target, "putting the original back");
  try {
    // Recorded first: once the original has its name back, the state alone looks like a
    // completed swap, and a run that dies now must be undone, not completed, by the next one.
    entry.phase = "undo";
    await journal.write(entry);
    await putOriginalBack(deps.client, entry);
  } catch (err) {
    return new Error(`${reason}; putting the original back failed too (the next run retries it): ${errorMessage(err)}`);
  }
  await journal.remove(entry.id);
  return new ReplaceUndoneError(`${reason}; the original instance is back in place${entry.wasRunning ? " and running" : ""}`);
}

/**
 * Undoes a replace from whatever point it reached: the restored instance (under the name or the
 * temporary one) is deleted, the original gets its devices, MACs and autostart back and its name,
 * and runs again if it ran. Safe to repeat.
 */
async function putOriginalBack(c: IncusClient, e: JournalEntry): Promise<void> {
  const { project, name } = e;
  const hasAside = e.aside !== undefined && (await instanceExists(c, project, e.aside));
  if (!hasAside && !(await instanceExists(c, project, name))) throw new Error("neither the original nor the restored instance is there");
  // The restored instance goes first, under either name: Incus refuses to give the original its
  // static addresses back while another instance holds them. With the original aside, whatever
  // has the name is the restored one.
  if (await instanceExists(c, project, e.temp)) await deleteRestored(c, project, e.temp);
  if (hasAside) {
    if (await instanceExists(c, project, name)) await deleteRestored(c, project, name);
    if (e.original) await giveIdentityBack(c, project, e.aside!, e.original);
    await renameInstance(c, project, e.aside!, name);
  }
  if (e.wasRunning) await startIfStopped(c, { project, name });
}

/**
 * Deletes a restored copy that is being thrown away: stopped by force (it holds nothing to save),
 * and without the delete protection it may have brought from the backup.
 */
async function deleteRestored(c: IncusClient, project: string, name: string): Promise<void> {
  const inst = await getInstance(c, project, name);
  if (inst.status !== "Stopped") await updateInstanceState(c, project, name, { action: "stop", force: true });
  if (inst.config["security.protection.delete"] === "true") await patchInstanceConfig(c, project, name, { "security.protection.delete": "" });
  await deleteInstance(c, project, name);
}

/** Gives an inert original its devices and autostart back, then its MACs (see restoredConfig). */
async function giveIdentityBack(c: IncusClient, project: string, name: string, saved: NonNullable<JournalEntry["original"]>): Promise<void> {
  const inst = await getInstance(c, project, name);
  if (hasIdentity(inst, saved)) return;
  await updateInstance(c, project, name, { ...instancePut(inst), ...restoredConfig(inst, saved) });
  if (Object.keys(saved.hwaddr).length > 0) await patchInstanceConfig(c, project, name, saved.hwaddr);
}

/**
 * Replaces a volume's contents in place, so it keeps its name, config and attachments: import the
 * backup as a temporary volume, stop the instances using the volume, refresh the volume from the
 * temporary one (files that are not in the backup disappear), start the instances again.
 */
async function replaceVolumeContents(
  deps: RestoreDeps,
  journal: JournalStore,
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
    ...(step.member === undefined ? {} : { member: step.member }),
    stop: [...step.restart, ...step.stopOnly],
    restart: step.restart,
    started: deps.now().toISOString(),
  };
  await journal.write(entry);
  try {
    await importVolume(deps, step.target, archive, entry.temp, signal, step.member);
  } catch (err) {
    await deleteStoragePoolVolume(client, project, pool, entry.temp).catch(() => undefined);
    await journal.remove(entry.id);
    if (err instanceof IntegrityError) throw err;
    throw new Error(`${errorMessage(err)} (the existing volume was not touched)`);
  }
  throwIfAborted(signal);

  entry.phase = "stop";
  await journal.write(entry);
  try {
    for (const u of entry.stop ?? []) {
      deps.reporter.itemStep(step.target, `stopping ${u.project}/${u.name}`);
      const now = await getInstance(client, u.project, u.name);
      if (now.status !== "Stopped") await stopInstance(client, u.project, u.name, stopOptions(deps));
    }
  } catch (err) {
    // Nothing of the volume changed yet: undo the stops and throw the import away.
    const restarted = await startAgain(deps, entry.stop ?? [], step.target);
    await deleteStoragePoolVolume(client, project, pool, entry.temp).catch(() => undefined);
    await journal.remove(entry.id);
    throw new Error(`${errorMessage(err)} (the existing volume was not touched; ${restarted})`);
  }
  entry.phase = "refresh";
  await journal.write(entry);
  deps.reporter.itemStep(step.target, "replacing the volume's contents");
  try {
    await copyStoragePoolVolume(client, project, pool, entry.temp, name, { refresh: true, volumeOnly: true, ...(entry.member === undefined ? {} : { member: entry.member }) });
  } catch (err) {
    // The contents may be partly replaced. The restored copy is complete and checked, so the
    // journal stays and the next run finishes the replace from it; the instances run meanwhile.
    const restarted = await startAgain(deps, entry.stop ?? [], step.target);
    throw new Error(
      `replacing the contents failed: ${errorMessage(err)}; they may be partly replaced: the next run finishes the restore from the restored copy ${entry.temp} (${restarted})`,
    );
  }
  entry.phase = "finish";
  await journal.write(entry);
  await finishVolume(deps, journal, entry, step.target);
}

/** Starts instances a failed step had stopped, as far as it can; says how that went. */
async function startAgain(deps: RestoreDeps, refs: readonly JournalInstanceRef[], target: ItemKey): Promise<string> {
  const failed: string[] = [];
  for (const r of refs) {
    deps.reporter.itemStep(target, `starting ${r.project}/${r.name} again`);
    await startIfStopped(deps.client, r).catch((err: unknown) => failed.push(`${r.project}/${r.name}: ${errorMessage(err)}`));
  }
  if (refs.length === 0) return "no instance was stopped";
  return failed.length === 0 ? "the instances stopped for it run again" : `could not start again ${failed.join("; ")}`;
}

/**
 * Starts the volume's instances again and deletes the restored copy; every start is tried. An
 * instance that does not start is reported, not retried by the next run: the volume is restored.
 */
async function finishVolume(deps: RestoreDeps, journal: JournalStore, entry: JournalEntry, target: ItemKey): Promise<void> {
  const failed: string[] = [];
  for (const r of entry.restart) {
    deps.reporter.itemStep(target, `starting ${r.project}/${r.name}`);
    await startIfStopped(deps.client, r).catch((err: unknown) => failed.push(`${r.project}/${r.name}: ${errorMessage(err)}`));
  }
  await deleteStoragePoolVolume(deps.client, entry.project, entry.pool ?? "", entry.temp).catch((err: unknown) => {
    if (!(err instanceof IncusNotFoundError)) throw err;
  });
  await journal.remove(entry.id);
  if (failed.length > 0) throw new Error(`the volume was restored, but an instance using it did not start again: ${failed.join("; ")}`);
}

async function startIfStopped(c: IncusClient, r: JournalInstanceRef): Promise<void> {
  const now = await getInstance(c, r.project, r.name);
  if (now.status === "Stopped") await startInstance(c, r.project, r.name);
}

async function volumeExists(c: IncusClient, project: string, pool: string, name: string): Promise<boolean> {
  try {
    await getStoragePoolVolume(c, project, pool, name);
    return true;
  } catch (err) {
    if (err instanceof IncusNotFoundError) return false;
    throw err;
  }
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
  const journal = deps.store.journal;
  const { entries, problems } = await journal.list();
  const said: string[] = [...problems];
  // Moves last: a replace's own recovery may delete the copy a move entry names first.
  for (const e of [...entries.filter((x) => x.kind !== "move"), ...entries.filter((x) => x.kind === "move")]) {
    const label = itemLabel({ kind: e.kind === "volume" ? "volume" : "instance", project: e.project, name: e.name, ...(e.pool === undefined ? {} : { pool: e.pool }) });
    try {
      if (e.kind === "drill") {
        const removed = await removeDrillCopy(deps.client, e);
        said.push(`drill of ${e.drill?.of ?? "instance"} ${e.name}: an interrupted drill was tidied up${removed.length ? ` (removed ${removed.join(", ")})` : ""}`);
      } else if (e.kind === "move") said.push(`${label}: ${await recoverMove(deps, e)}`);
      else if (e.kind === "stopped") said.push(`${label}: ${await recoverStopped(deps, e)}`);
      else if (e.kind === "instance") said.push(`${label}: ${await recoverInstance(deps, e)}`);
      else said.push(`${label}: ${await recoverVolume(deps, e)}`);
      await journal.remove(e.id);
    } catch (err) {
      // Some failures end the journal entry themselves (nothing left to retry).
      const kept = (await journal.list()).entries.some((x) => x.id === e.id);
      said.push(`${label}: recovery of an interrupted restore failed${kept ? ", will retry next run" : ""}: ${errorMessage(err)}`);
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
export async function recoverBeforePlanning(deps: RestoreDeps, command: string, signal: AbortSignal, wait?: LockWait): Promise<string[]> {
  const { entries } = await deps.store.journal.list();
  if (entries.length === 0) return [];
  const lock = await takeLock(deps.store, command, deps.reporter, signal, wait);
  try {
    return await recoverJournals(deps);
  } finally {
    await lock.release();
  }
}

/** Whether restores died half-way and wait for recovery (for a dry run, which changes nothing). */
export async function pendingRecoveries(store: Store): Promise<number> {
  return (await store.journal.list()).entries.length;
}

/** A `backup --stop` died while its instance was down: start it again. */
async function recoverStopped(deps: RestoreDeps, e: JournalEntry): Promise<string> {
  for (const r of e.restart) {
    const now = await getInstance(deps.client, r.project, r.name).catch((err: unknown) => {
      if (err instanceof IncusNotFoundError) return undefined;
      throw err;
    });
    if (now === undefined) return "an interrupted backup --stop had stopped it; it is gone now, nothing to start";
    if (now.status === "Stopped") {
      await startInstance(deps.client, r.project, r.name);
      return "started again: an interrupted backup --stop had left it stopped";
    }
  }
  return "an interrupted backup --stop had stopped it; it is running again";
}

async function recoverInstance(deps: RestoreDeps, e: JournalEntry): Promise<string> {
  const c = deps.client;
  const target: ItemKey = { kind: "instance", project: e.project, name: e.name };
  await waitForServerTasks(c, [e.name, e.temp, ...(e.aside === undefined ? [] : [e.aside])]);
  const hasName = await instanceExists(c, e.project, e.name);
  const hasTemp = await instanceExists(c, e.project, e.temp);
  const hasAside = e.aside !== undefined && (await instanceExists(c, e.project, e.aside));
  // The swap went through when the restored instance has the name and the original is aside (or,
  // in the finish phase, already deleted): finish it. Anything short of that is undone.
  const swapped = hasName && !hasTemp && (hasAside || e.phase === "finish");
  if ((e.phase === "swap" || e.phase === "finish") && swapped) {
    try {
      await finishInstance(deps, deps.store.journal, e, target);
    } catch (err) {
      if (err instanceof ReplaceUndoneError) return `an interrupted restore could not be completed, so it was undone: ${err.message}`;
      throw err;
    }
    return "an interrupted restore was completed";
  }
  if (!hasName && !hasAside) {
    if (hasTemp) await deleteRestored(c, e.project, e.temp);
    return "an interrupted restore left neither the original nor the restored instance; nothing to recover";
  }
  await putOriginalBack(c, e);
  return `an interrupted restore was undone; the original instance is ${hasAside ? "back " : ""}in place`;
}

async function recoverVolume(deps: RestoreDeps, e: JournalEntry): Promise<string> {
  const target: ItemKey = { kind: "volume", project: e.project, pool: e.pool ?? "", name: e.name };
  await waitForServerTasks(deps.client, [e.name, e.temp, ...(e.stop ?? e.restart).map((r) => r.name)]);
  if (e.phase === "import") {
    await deleteStoragePoolVolume(deps.client, e.project, e.pool ?? "", e.temp).catch(() => undefined);
    for (const r of e.restart) await startIfStopped(deps.client, r);
    return "an interrupted restore was undone; the volume was not touched";
  }
  if (e.phase === "stop" || e.phase === "refresh") {
    if (!(await volumeExists(deps.client, e.project, e.pool ?? "", e.temp))) {
      // Nothing to finish the replace from: run the instances again and say what that means.
      const restarted = await startAgain(deps, e.stop ?? e.restart, target);
      return `an interrupted restore could not be finished: its restored copy ${e.temp} is gone; the volume ${
        e.phase === "stop" ? "was not touched" : "may be partly replaced: restore it again"
      } (${restarted})`;
    }
    // The contents may be half replaced: replace them again from the complete temporary volume.
    for (const r of e.stop ?? e.restart) {
      const now = await getInstance(deps.client, r.project, r.name).catch(() => undefined);
      if (now && now.status !== "Stopped") await stopInstance(deps.client, r.project, r.name, stopOptions(deps));
    }
    await copyStoragePoolVolume(deps.client, e.project, e.pool ?? "", e.temp, e.name, { refresh: true, volumeOnly: true, ...(e.member === undefined ? {} : { member: e.member }) });
  }
  await finishVolume(deps, deps.store.journal, e, target);
  return "an interrupted restore was completed";
}

/**
 * Imports a version as a new instance or volume named `target` (the drill copies), checked as a
 * restore checks it: size and index first, the sha256 before the upload's last bytes.
 */
export async function importAs(deps: RestoreDeps, source: Candidate, target: ItemKey, signal: AbortSignal): Promise<void> {
  const step = { op: "create", source, target, start: false, freshMacs: false, notes: [] } as Extract<Step, { op: "create" }>;
  const archive = await checkArchive(deps, step);
  if (target.kind === "instance") await importInstance(deps, target, archive, target.name, signal);
  else await importVolume(deps, target, archive, target.name, signal);
}
