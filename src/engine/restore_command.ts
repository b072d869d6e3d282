// The restore command, for the CLI (and later drills): plan it against the server as it is,
// then, once confirmed, carry it out under the lock when it replaces anything.

import { IntegrityError, NotFoundError, UsageError } from "../errors";
import { isDestructive, olderRunNotes, planRestore, type Plan } from "../core/plan";
import { checkTargetMember, type ClusterInfo } from "../core/placement";
import { clusterInfo } from "./cluster";
import { configIsDestructive, planConfig, type ConfigPlan } from "../core/config_plan";
import { itemId, itemLabel, keyOf, matches, type Selection } from "../core/selection";
import { pickVersion } from "../core/version";
import type { IncusClient } from "../incus/client";
import { getProjects } from "../incus/projects";
import type { DamagedVersion, Store, StoredVersion } from "../repository/store";
import { applyConfigPlan, loadSnapshot, type ConfigResult } from "./config_restore";
import { exportDatabase } from "./database";
import { takeLock } from "./locking";
import { describeReplacements, executePlan, liveState, pendingRecoveries, recoverBeforePlanning, recoverJournals, type RestoreDeps, type RestoreResult } from "./restore";

export interface RestoreOptions {
  selection: Selection;
  version?: string;
  targetName?: string;
  serverConfig: boolean;
  noStart: boolean;
  /** Plan only: recover nothing, change nothing (interrupted restores are only counted). */
  dryRun: boolean;
  /** The container this tool runs in: never replaced while it runs the restore. */
  self?: { project: string; name: string };
  /** The command line, for the lock. */
  command: string;
  /** In a cluster: where items go whose member is not in it (core/placement.ts). */
  targetMember?: string;
}

/** The database part of a restore: the version picked and its plan, or a note why there is none. */
export interface DatabasePart {
  version?: string;
  plan?: ConfigPlan;
  note?: string;
}

export interface PreparedRestore {
  plan: Plan;
  config?: DatabasePart;
  /** Whether carrying it out changes something that exists now (so it needs confirmation). */
  destructive: boolean;
  /** Restores that died half-way and wait for recovery (a dry run only counts them). */
  pendingRecoveries: number;
  /** The server: a cluster or not, its members, the one this tool talks to. */
  cluster: ClusterInfo;
}

/**
 * Plans a restore. Recovers interrupted restores first (unless a dry run): the plan must see their
 * result. Refuses, before anything changes: a damaged version the restore would use, nothing to
 * restore, and items going into a project the server does not have.
 */
export async function prepareRestore(deps: RestoreDeps, opts: RestoreOptions, signal: AbortSignal): Promise<PreparedRestore> {
  const { store, client, reporter } = deps;
  const { selection, version } = opts;
  const { versions, damaged } = await store.list(selection.kinds);
  const cluster = await clusterInfo(client, signal);
  checkTargetMember(cluster, opts.targetMember);
  let pending = 0;
  if (opts.dryRun) pending = await pendingRecoveries(store);
  else for (const line of await recoverBeforePlanning(deps, opts.command, signal)) reporter.info(line);
  refuseDamagedPick(selection, version, versions, damaged);
  for (const d of damaged) reporter.warn(`ignoring a damaged backup at ${d.location}: ${d.problem}`);
  const config = selection.kinds.includes("database") ? await planDatabase(store, client, versions, opts, signal) : undefined;
  const itemKinds = selection.kinds.filter((k) => k !== "database");
  const live = itemKinds.length > 0 ? await liveState(client, signal) : undefined;
  const plan: Plan =
    itemKinds.length > 0
      ? planRestore(
          versions.filter((v) => v.manifest.kind !== "database"),
          live!,
          {
            selection: { ...selection, kinds: itemKinds },
            ...(version === undefined ? {} : { version }),
            ...(opts.targetName === undefined ? {} : { targetName: opts.targetName }),
            noStart: opts.noStart,
            allowEmpty: selection.kinds.length > 1,
            cluster,
            ...(opts.targetMember === undefined ? {} : { targetMember: opts.targetMember }),
          },
        )
      : { steps: [], skipped: [], notes: [] };
  // Never replace the container this restore runs in; restoring it under another name is fine.
  const self = opts.self;
  const mine = plan.steps.filter((s) => s.op === "replace" && s.target.kind === "instance" && self && s.target.project === self.project && s.target.name === self.name);
  if (mine.length > 0) {
    plan.steps = plan.steps.filter((s) => !mine.includes(s));
    const reason = "it is the container running this restore (restore it from the host, or under --target-name)";
    if (!config?.plan && plan.steps.length === 0) throw new UsageError(`not replacing ${itemLabel(mine[0]!.target)}: ${reason}`);
    plan.skipped.push(...mine.map((s) => ({ item: s.target, reason })));
  }
  if (!config?.plan && plan.steps.length === 0) {
    throw new NotFoundError(`nothing to restore for ${describeSelection(selection)}${version ? ` at version ${version}` : ""} (see \`incus-backup list\`)`);
  }
  // Without --version, say which items cannot come from the latest run (with it, the notes say what a prefix picked).
  if (version === undefined) plan.notes.push(...olderRunNotes(plan, config?.plan ? config.version : undefined));
  await checkTargetProjects(client, plan, config?.plan, signal);
  await describeReplacements(client, plan, signal);
  const destructive = isDestructive(plan) || (config?.plan !== undefined && configIsDestructive(config.plan));
  return { plan, ...(config ? { config } : {}), destructive, pendingRecoveries: pending, cluster };
}

/**
 * Carries out a prepared (and, if destructive, confirmed) restore: the configuration first, then
 * images, volumes and instances. Replacing items writes journals, so it holds the lock (failing at
 * once if another run has it), and first recovers what a run that died meanwhile left.
 */
export async function runRestore(
  deps: RestoreDeps,
  prepared: PreparedRestore,
  opts: { command: string; parallel: number },
  signal: AbortSignal,
): Promise<{ config?: ConfigResult; result: RestoreResult }> {
  const lock = isDestructive(prepared.plan) ? await takeLock(deps.store, opts.command, deps.reporter, signal) : undefined;
  try {
    if (lock) for (const line of await recoverJournals(deps)) deps.reporter.info(line);
    const config = prepared.config?.plan ? await applyConfigPlan(deps.client, prepared.config.plan, deps.reporter, signal) : undefined;
    const result = await executePlan({ ...deps, ...(prepared.cluster.connected === undefined ? {} : { connectedMember: prepared.cluster.connected }) }, prepared.plan, signal, opts.parallel);
    return { ...(config ? { config } : {}), result };
  } finally {
    await lock?.release();
  }
}

/**
 * A damaged version that the restore would have used (the item's latest, or latest matching
 * --version) stops it before anything changes: quietly taking an older version, or none, would
 * restore something other than what was asked for. Older damaged versions are only warned about.
 */
function refuseDamagedPick(selection: Selection, version: string | undefined, versions: StoredVersion[], damaged: DamagedVersion[]): void {
  const wanted = (v: string) => version === undefined || v.startsWith(version);
  // A damaged version of a cluster's volume from before volumes were keyed by member says no member
  // (its manifest cannot tell): the versions of any member of that name count as newer ones.
  const sameItem = (m: StoredVersion["manifest"], d: DamagedVersion) =>
    itemId(m) === itemId(d.key) || (d.key.kind === "volume" && d.key.member === undefined && itemId({ ...keyOf(m), member: undefined }) === itemId(d.key));
  for (const d of damaged) {
    if (!matches(selection, d.key) || !wanted(d.version)) continue;
    const newer = versions.some((v) => sameItem(v.manifest, d) && wanted(v.manifest.version) && v.manifest.version > d.version);
    if (newer) continue;
    throw new IntegrityError(`${itemLabel(d.key)} version ${d.version} is damaged (${d.problem}); nothing was changed`, {
      hint: "see `incus-backup verify`; restore another version with --version",
    });
  }
}

/**
 * Items restored into a project the server does not have fail one by one, some with a refused
 * upload that loses Incus's reason: say so once, before anything changes. Projects the
 * configuration restore creates first count as there.
 */
async function checkTargetProjects(client: IncusClient, plan: Plan, config: ConfigPlan | undefined, signal: AbortSignal): Promise<void> {
  const wanted = new Set(plan.steps.map((s) => s.target.project));
  if (wanted.size === 0) return;
  const have = new Set((await getProjects(client, { signal })).map((p) => p.name));
  for (const a of config?.actions ?? []) if (a.action === "create" && a.rec.kind === "project") have.add(a.rec.id);
  const missing = [...wanted].filter((p) => !have.has(p));
  if (missing.length > 0) {
    throw new NotFoundError(`project ${missing.map((p) => JSON.stringify(p)).join(", ")} does not exist on the server; nothing was changed`, {
      hint: "create it first, or restore the database (--database) with it, or choose another --project",
    });
  }
}

/** Picks the database version, checks and loads it, and plans it against the server as it is now. */
async function planDatabase(store: Store, client: IncusClient, versions: StoredVersion[], opts: RestoreOptions, signal: AbortSignal): Promise<DatabasePart> {
  const { selection, version } = opts;
  const dbVersions = versions.filter((v) => v.manifest.kind === "database");
  const onlyDatabase = selection.kinds.length === 1;
  const picked = pickVersion(dbVersions.map((v) => v.manifest.version), version);
  if (picked === undefined) {
    if (!onlyDatabase) return { note: `no database backup${version ? ` matching ${version}` : ""}: the configuration is left as it is` };
    const available = dbVersions.map((v) => v.manifest.version).sort().reverse();
    throw new NotFoundError(
      dbVersions.length === 0
        ? "there is no database backup in the repository (make one with `incus-backup backup --database`)"
        : `no database version matching ${JSON.stringify(version)}; available: ${available.slice(0, 20).join(", ")}`,
    );
  }
  const entry = dbVersions.find((v) => v.manifest.version === picked)!;
  const snapshot = await loadSnapshot(store, entry);
  const live = await exportDatabase(client, signal);
  const plan = planConfig(snapshot, live, { ...(selection.project === undefined ? {} : { project: selection.project }), serverConfig: opts.serverConfig });
  return { version: picked, plan };
}

export function describeSelection(sel: Selection): string {
  const names = sel.names.length ? ` named ${sel.names.map((n) => JSON.stringify(n)).join(", ")}` : "";
  return `${sel.kinds.join(", ")}${names}${sel.project ? ` in project ${sel.project}` : ""}`;
}
