// Restore planning (pure): which version of what goes where, what it replaces, what stops and starts.

import { NotFoundError, UsageError } from "../errors";
import type { Manifest } from "./manifest";
import { KINDS, itemId, itemLabel, keyOf, matches, memberMatches, nameMatches, unmatchedNames, type ItemKey, type Selection } from "./selection";
import { placeNew, placeReplacement, type ClusterInfo, type Placement } from "./placement";
import { pickVersion } from "./version";
import { checkInstanceName } from "./names";
import { describeClash, identityClashes, nicIdentities, type InstanceConfig, type NicIdentity } from "./nics";

/** One backed-up version available for restore: as a store lists it (store.ts, StoredVersion). */
export interface Candidate {
  manifest: Manifest;
  /** Total bytes of its files. */
  size: number;
  /** Where it is, for messages. */
  location: string;
}

export interface InstanceRef {
  project: string;
  name: string;
}

/** What the target server has now, as far as the plan needs it. */
export interface LiveState {
  /** Existing instances, by `project/name`, with their status and their NICs' identities. */
  instances: Map<string, { status: string; nics?: NicIdentity[]; location?: string }>;
  /**
   * Existing custom volumes, by `project/pool/name`, with the instances that use them: one, or in a
   * cluster one per member that has a volume of that name (a local pool has one per member).
   */
  volumes: Map<string, LiveVolumeState[]>;
  /** Existing images, by `project/fingerprint`. */
  images: Set<string>;
  /** Existing image aliases, by `project/alias`, with the fingerprint they point at. */
  aliases: Map<string, string>;
}

export interface LiveVolumeState {
  users: Array<InstanceRef & { running: boolean }>;
  location?: string;
}

/**
 * Where a restored volume lands, and the live volume there that it replaces, if any (`found`: the
 * live volumes of its project, pool and name, at most one per member; `label`: that key).
 *
 * A volume backed up on member M of a cluster (a local pool has one volume of a name per member)
 * is an item of its own. Into a cluster it goes back to M if the cluster has it, else where a new
 * item goes (--target-member, else the member this tool talks to), and replaces only the volume of
 * its name on that member. Any other volume (a remote pool's, a single server's), and any volume
 * onto a single server, replaces the one of its name wherever it is (volumeOnMember).
 */
export function volumeLanding<T extends { location?: string }>(
  found: readonly T[],
  label: string,
  m: Pick<Manifest, "member">,
  cluster: ClusterInfo,
  targetMember?: string,
): { existing?: T; placement: Placement } {
  if (cluster.clustered && m.member !== undefined) {
    const placement = placeNew(m, cluster, targetMember);
    const existing = found.find((v) => v.location === placement.member);
    if (existing === undefined) return { placement };
    return { existing, placement: placement.member === m.member ? placeReplacement(existing.location, cluster) : placement };
  }
  const existing = volumeOnMember(found, label, m.member);
  return existing === undefined ? { placement: placeNew(m, cluster, targetMember) } : { existing, placement: placeReplacement(existing.location, cluster) };
}

/**
 * Of the volumes of one name (at most one per member), the one a backup taken on `recordedMember`
 * replaces: the only one, or the one on that member. Where several members have one and none is
 * the backup's, which one is meant cannot be told, and the restore is refused before anything changes.
 */
export function volumeOnMember<T extends { location?: string }>(found: readonly T[], label: string, recordedMember: string | undefined): T | undefined {
  if (found.length <= 1) return found[0];
  const mine = recordedMember === undefined ? undefined : found.find((v) => v.location === recordedMember);
  if (mine !== undefined) return mine;
  const [pool, name] = label.split("/").slice(-2);
  throw new UsageError(
    `members ${found.map((v) => v.location ?? "?").sort().join(" and ")} each have a volume ${label}, and the backup ${recordedMember === undefined ? "does not say which member it was on" : `was taken on member ${recordedMember}`}: which one is meant cannot be told; nothing was changed (rename one of them first: incus storage volume rename ${pool ?? ""} ${name ?? ""} NEW --target MEMBER)`,
  );
}

export type Step =
  | {
      op: "create";
      source: Candidate;
      target: ItemKey;
      start: boolean;
      /** An instance gets new MACs: it is a copy beside its original, or its MAC is in use. */
      freshMacs?: boolean;
      /** What the plan should say about it (address clashes, new MACs). */
      notes?: string[];
      /** In a cluster: the member it goes to (core/placement.ts). */
      member?: string;
    }
  | {
      op: "replace";
      source: Candidate;
      target: ItemKey;
      wasRunning: boolean;
      start: boolean;
      freshMacs?: boolean;
      notes?: string[];
      /** Snapshots of the existing instance, deleted with it (filled in from the server before printing). */
      snapshots?: string[];
      member?: string;
    }
  | { op: "replace-contents"; source: Candidate; target: ItemKey; restart: InstanceRef[]; stopOnly: InstanceRef[]; member?: string; notes?: string[] }
  | {
      op: "image";
      source: Candidate;
      target: ItemKey;
      /** The image is there already (same fingerprint, so the same content): not uploaded again. */
      exists: boolean;
      createAliases: string[];
      /** Aliases that point at another image now: moving them is destructive. */
      moveAliases: Array<{ name: string; from: string }>;
    };

export interface Plan {
  steps: Step[];
  /** Items left out, with why (no version matching --version, ...). */
  skipped: Array<{ item: ItemKey; reason: string }>;
  /** Lines worth telling before the plan (which version a prefix picked, project overrides). */
  notes: string[];
}

export interface PlanOptions {
  selection: Selection;
  version?: string;
  targetName?: string;
  noStart: boolean;
  /** Return an empty plan instead of failing when nothing matches (another part of the restore may). */
  allowEmpty?: boolean;
  /** The server: a cluster or not, its members, the one this tool talks to (default: a single server). */
  cluster?: ClusterInfo;
  /** In a cluster: where items go whose member is not in it (core/placement.ts). */
  targetMember?: string;
}

const SINGLE_SERVER: ClusterInfo = { clustered: false, members: [] };

export const instanceKey = (project: string, name: string) => `${project}/${name}`;
export const imageKey = (project: string, fingerprint: string) => `${project}/${fingerprint}`;
export const volumeKey = (project: string, pool: string, name: string) => `${project}/${pool}/${name}`;

/**
 * Builds the restore plan. Rules:
 * - each selected item restores its latest version, or the latest matching --version;
 * - --project filters by the recorded project; if nothing is recorded there, it is the target
 *   project for the items the other selectors match (a restore into another project);
 * - --member takes the versions backed up on that member (an instance's, version by version);
 * - a --name that matches the same kind in several pools or projects is refused, listing them
 *   (a cluster's volumes of one name on several members are several items, each restored);
 * - in a cluster, each item goes to its member (core/placement.ts); two items that would land on
 *   one volume (members of a cluster restored onto a single server) are refused;
 * - missing items are created, existing ones replaced; volumes come before instances.
 */
export function planRestore(candidates: readonly Candidate[], live: LiveState, opts: PlanOptions): Plan {
  // --member is applied to the versions here: a group's key has no member for an instance.
  const { member: _member, ...sel } = opts.selection;
  const notes: string[] = [];
  const byItem = groupByItem(candidates.filter((c) => sel.kinds.includes(c.manifest.kind) && memberMatches(opts.selection, c.manifest)));

  let items = [...byItem.values()].filter((g) => matches(sel, g.key));
  let targetProject: string | undefined;
  let matched: Selection = sel;
  if (items.length === 0 && sel.project !== undefined) {
    const { project: _ignored, ...withoutProject } = sel;
    items = [...byItem.values()].filter((g) => matches(withoutProject, g.key));
    if (items.length > 0) {
      targetProject = sel.project;
      matched = withoutProject;
    }
  }
  if (items.length === 0) {
    if (opts.allowEmpty) return { steps: [], skipped: [], notes: [] };
    throw new NotFoundError(nothingMessage(opts.selection, candidates));
  }
  // A --name that matches nothing is a typo more often than not: restoring the others and
  // saying nothing would look like success.
  const unmatched = unmatchedNames(matched, items.map((g) => g.key));
  if (unmatched.length > 0) {
    throw new NotFoundError(`nothing in the repository is named ${unmatched.map((n) => JSON.stringify(n)).join(", ")}${sel.kinds.length < KINDS.length ? ` among the ${sel.kinds.join(", ")} backups` : ""}; nothing was changed (see \`incus-backup list\`)`);
  }
  checkAmbiguity(sel, items.map((g) => g.key));

  if (opts.targetName !== undefined && items.length !== 1) {
    throw new UsageError(`--target-name needs exactly one item, but the selection matches ${items.length}: ${items.map((g) => itemLabel(g.key)).join(", ")}`);
  }
  // The command line checks it as an instance name only when it selects nothing but instances.
  if (opts.targetName !== undefined && items[0]!.key.kind === "instance") checkInstanceName(opts.targetName, "--target-name");

  const chosen: Candidate[] = [];
  const skipped: Plan["skipped"] = [];
  for (const g of items) {
    const v = pickVersion(g.versions.map((c) => c.manifest.version), opts.version);
    if (v === undefined) {
      skipped.push({ item: g.key, reason: `no version matching ${opts.version}` });
      continue;
    }
    if (opts.version !== undefined && opts.version !== v) notes.push(`${itemLabel(g.key)}: --version ${opts.version} picked ${v}`);
    chosen.push(g.versions.find((c) => c.manifest.version === v)!);
  }
  if (chosen.length === 0 && !opts.allowEmpty) {
    const available = [...new Set(items.flatMap((g) => g.versions.map((c) => c.manifest.version)))].sort().reverse();
    throw new NotFoundError(
      `no version matching ${JSON.stringify(opts.version)}; available: ${available.slice(0, 20).join(", ")}${available.length > 20 ? ", ..." : ""}`,
    );
  }

  const cluster = opts.cluster ?? SINGLE_SERVER;
  const steps: Step[] = [];
  const replacedInstances = new Set<string>();
  const targets = chosen.map((c) => {
    let target: ItemKey = {
      kind: c.manifest.kind,
      project: targetProject ?? c.manifest.project,
      // Images are named by their content; --target-name does not apply to them.
      name: c.manifest.kind === "image" ? c.manifest.name : (opts.targetName ?? c.manifest.name),
      ...(c.manifest.pool === undefined ? {} : { pool: c.manifest.pool }),
      ...(c.manifest.aliases === undefined ? {} : { aliases: c.manifest.aliases }),
    };
    let landing: { existing?: LiveVolumeState; placement: Placement } | undefined;
    if (target.kind === "volume") {
      const key = volumeKey(target.project, target.pool ?? "", target.name);
      landing = volumeLanding(live.volumes.get(key) ?? [], key, c.manifest, cluster, opts.targetMember);
      // The member it lands on is part of the target's key where it is a member's own volume, so
      // that two items landing on one volume are found out below.
      const member = cluster.clustered && (c.manifest.member !== undefined || landing.existing !== undefined) ? landing.placement.member : undefined;
      if (member !== undefined) target = { ...target, member };
    }
    if (targetProject !== undefined) notes.push(`${itemLabel(c.manifest)} goes into project ${targetProject}`);
    if (target.kind === "instance" && live.instances.has(instanceKey(target.project, target.name))) {
      replacedInstances.add(instanceKey(target.project, target.name));
    }
    return { c, target, landing };
  });
  checkTargetClashes(targets, cluster);

  for (const kind of KINDS) {
    for (const { c, target, landing } of targets) {
      if (target.kind !== kind) continue;
      const step = stepFor(c, target, live, replacedInstances, opts.noStart, landing);
      if (step.op !== "image") {
        const p = landing?.placement ?? placeInstance(step, live, cluster, opts.targetMember);
        if (p.member !== undefined) step.member = p.member;
        if (p.note !== undefined) step.notes = [...(step.notes ?? []), p.note];
      }
      steps.push(step);
    }
  }
  return { steps, skipped, notes };
}

/** Where an instance goes: a new one to its member (or --target-member, ...), a replacement where the original is. */
function placeInstance(step: Exclude<Step, { op: "image" }>, live: LiveState, cluster: ClusterInfo, targetMember: string | undefined): Placement {
  if (step.op === "create") return placeNew(step.source.manifest, cluster, targetMember);
  return placeReplacement(live.instances.get(instanceKey(step.target.project, step.target.name))?.location, cluster);
}

function stepFor(c: Candidate, target: ItemKey, live: LiveState, replacedInstances: Set<string>, noStart: boolean, landing: { existing?: LiveVolumeState } | undefined): Step {
  if (target.kind === "instance") {
    const key = instanceKey(target.project, target.name);
    const existing = live.instances.get(key);
    const identity = instanceIdentity(c, target, live, key);
    if (!existing) {
      // Incus refuses to start an instance whose static address another one holds: create it stopped.
      const start = !noStart && c.manifest.status === "Running" && !identity.addressClash;
      return { op: "create", source: c, target, start, freshMacs: identity.freshMacs, notes: identity.notes };
    }
    const wasRunning = existing.status === "Running";
    return { op: "replace", source: c, target, wasRunning, start: !noStart && wasRunning, freshMacs: identity.freshMacs, notes: identity.notes };
  }
  if (target.kind === "volume") {
    const existing = landing?.existing;
    if (!existing) return { op: "create", source: c, target, start: false };
    const running = existing.users.filter((u) => u.running);
    // Instances replaced later in this plan are started by their own step, not here.
    const restart = running.filter((u) => !noStart && !replacedInstances.has(instanceKey(u.project, u.name)));
    const stopOnly = running.filter((u) => !restart.includes(u));
    return { op: "replace-contents", source: c, target, restart, stopOnly };
  }
  if (target.kind === "image") {
    const aliases = (c.manifest.aliases ?? []);
    const createAliases: string[] = [];
    const moveAliases: Array<{ name: string; from: string }> = [];
    for (const a of aliases) {
      const now = live.aliases.get(`${target.project}/${a}`);
      if (now === undefined) createAliases.push(a);
      else if (now !== target.name) moveAliases.push({ name: a, from: now });
    }
    return { op: "image", source: c, target, exists: live.images.has(imageKey(target.project, target.name)), createAliases, moveAliases };
  }
  throw new UsageError(`restoring ${target.kind} items is done by the database restore`);
}

/**
 * How a restored instance's NICs meet the server's other instances. A copy (another name or
 * project than the backup's) gets new MACs, as `incus copy` gives them; so does an instance whose
 * MAC another one uses now. A static address that another instance holds stops it from starting.
 * The instance it replaces does not count: it is stopped and set aside first.
 */
function instanceIdentity(c: Candidate, target: ItemKey, live: LiveState, key: string): { freshMacs: boolean; addressClash: boolean; notes: string[] } {
  const mine = nicIdentities((c.manifest.object ?? {}) as InstanceConfig);
  const others = [...live.instances].filter(([k]) => k !== key).map(([k, v]) => ({ key: k, nics: v.nics ?? [] }));
  const clashes = identityClashes(mine, others);
  const copy = target.name !== c.manifest.name || target.project !== c.manifest.project;
  const macClashes = clashes.filter((x) => x.what === "hwaddr");
  const addressClashes = clashes.filter((x) => x.what !== "hwaddr");
  const notes: string[] = [];
  const withMacs = mine.filter((n) => n.hwaddr !== undefined).length > 0;
  if (copy && withMacs) notes.push("it gets new MACs, as a copy made by `incus copy` would");
  else if (macClashes.length > 0) notes.push(`it gets new MACs: ${macClashes.map(describeClash).join("; ")}`);
  for (const x of addressClashes) {
    notes.push(
      live.instances.has(key)
        ? `${describeClash(x)}: the restored instance will fail to start, and the original is then put back`
        : `${describeClash(x)}: it is left stopped (Incus would refuse to start it; change the address first)`,
    );
  }
  return { freshMacs: withMacs && (copy || macClashes.length > 0), addressClash: addressClashes.length > 0, notes };
}

/**
 * Two items must never land on one instance or volume: one would fail or overwrite the other.
 * Restoring into another project can bring two onto one name there (default/web and prod/web both
 * as staging/web); a cluster's volumes of one name on two members land on one volume of a single
 * server, or of a cluster that has neither member. Images are left out: the same fingerprint is
 * the same content.
 */
function checkTargetClashes(targets: ReadonlyArray<{ c: Candidate; target: ItemKey }>, cluster: ClusterInfo): void {
  const seen = new Map<string, Candidate>();
  for (const { c, target } of targets) {
    if (target.kind === "image") continue;
    const first = seen.get(itemId(target));
    if (first) {
      const both = `${itemLabel(first.manifest)} and ${itemLabel(c.manifest)} would both be restored as ${itemLabel(target)}`;
      const [a, b] = [first.manifest.member, c.manifest.member];
      if (target.kind === "volume" && a !== undefined && b !== undefined && a !== b && first.manifest.project === c.manifest.project) {
        const where = cluster.clustered ? "" : " (this server is not a cluster)";
        throw new UsageError(
          `${both}${where}; nothing was changed: restore one at a time, with --member ${a} or --member ${b} (and --target-name NEW to restore the other beside it)`,
        );
      }
      throw new UsageError(`${both}; add --name, or restore one project at a time`);
    }
    seen.set(itemId(target), c);
  }
}

/** A bare name that matches one kind in several pools or projects is refused. */
function checkAmbiguity(sel: Selection, keys: ItemKey[]): void {
  for (const n of sel.names) {
    for (const kind of KINDS) {
      const hits = keys.filter((k) => k.kind === kind && nameMatches(n, k));
      // Volumes of one name on several members of a cluster are each meant: each goes to its member.
      const distinct = new Set(hits.map((k) => itemId({ ...keyOf(k), member: undefined })));
      if (distinct.size > 1) {
        const hint = kind === "volume" ? "name the volume as POOL/NAME, or add --project" : "add --project";
        throw new UsageError(`${JSON.stringify(n)} matches ${hits.length} ${kind}s: ${hits.map(itemLabel).join(", ")}; ${hint}`);
      }
    }
  }
}

interface Group {
  key: ItemKey;
  versions: Candidate[];
}

function groupByItem(candidates: readonly Candidate[]): Map<string, Group> {
  const map = new Map<string, Group>();
  for (const c of candidates) {
    const m = c.manifest;
    const key = keyOf(m);
    const id = itemId(key);
    const g = map.get(id) ?? { key, versions: [] };
    // --name matches an image by alias too: by any alias any of its versions had.
    if (m.aliases !== undefined && m.aliases.length > 0) g.key.aliases = [...new Set([...(g.key.aliases ?? []), ...m.aliases])];
    g.versions.push(c);
    map.set(id, g);
  }
  return map;
}

function nothingMessage(sel: Selection, candidates: readonly Candidate[]): string {
  const kinds = sel.kinds.map((k) => `${k}s`).join(", ");
  const what = sel.names.length > 0 ? ` named ${sel.names.map((n) => JSON.stringify(n)).join(", ")}` : "";
  const where = `${sel.project !== undefined ? ` in project ${sel.project}` : ""}${sel.member !== undefined ? ` on member ${sel.member}` : ""}`;
  // Say what is there, so a mistyped name or a wrong alias can be corrected without another command.
  const have = [...groupByItem(candidates.filter((c) => sel.kinds.includes(c.manifest.kind))).values()].map((g) => availableLabel(g.key)).sort();
  if (have.length === 0) return `no backup of ${kinds}${what}${where} in the repository`;
  const shown = have.slice(0, 20).join(", ");
  return `no backup of ${kinds}${what}${where} in the repository; it has ${shown}${have.length > 20 ? `, ... (${have.length} in all, see \`incus-backup list\`)` : ""}`;
}

/** An item as `list` shows it: an image by its aliases and short fingerprint. */
function availableLabel(key: ItemKey): string {
  if (key.kind !== "image") return itemLabel(key);
  const fp = key.name.slice(0, 12);
  return `image ${key.project}/${key.aliases?.length ? `${key.aliases.join(",")} (${fp})` : fp}`;
}

/** Whether running the plan would destroy or change something that exists now. */
export function isDestructive(plan: Plan): boolean {
  return plan.steps.some((s) => (s.op === "image" ? s.moveAliases.length > 0 : s.op !== "create"));
}

/**
 * A restore of several items is meant to bring back one point in time: the latest run. Each item
 * comes from its own latest complete version, so an item that failed (or was left out) in that
 * run comes from an older one: these notes name every such item, and the run it comes from.
 */
export function olderRunNotes(plan: Pick<Plan, "steps">, database?: string): string[] {
  const picked: Array<{ label: string; version: string }> = plan.steps.map((s) => ({ label: itemLabel(s.source.manifest), version: s.source.manifest.version }));
  if (database !== undefined) picked.push({ label: "database", version: database });
  if (picked.length < 2) return [];
  const latest = picked.reduce((v, p) => (p.version > v ? p.version : v), "");
  return picked
    .filter((p) => p.version < latest)
    .map((p) => `${p.label} comes from ${p.version}, an older run than ${latest}: that run has no complete backup of it`);
}
