// Planning a restore of the server's configuration (pure): create what is missing, update what
// differs (with a field-level diff), leave alone what the backup does not know.

import { ENTITIES, descriptor, type EntityKind, type EntityRecord } from "./entities";

export interface FieldChange {
  field: string;
  from: string | undefined;
  to: string | undefined;
  /** The value is a secret: show that it changes, never what it is. */
  secret: boolean;
}

export type ConfigAction =
  | { action: "create"; rec: EntityRecord; body: Record<string, unknown>; notes: string[] }
  | { action: "update"; rec: EntityRecord; body: Record<string, unknown>; changes: FieldChange[] }
  | { action: "conflict"; rec: EntityRecord; reason: string };

export interface ConfigPlan {
  actions: ConfigAction[];
  /** Objects identical on both sides. */
  unchanged: number;
  /** Objects on the server that the backup does not have: left alone. */
  extra: EntityRecord[];
  /** Server configuration changes (only when asked for). */
  server?: { changes: FieldChange[]; body: Record<string, unknown> };
}

export interface Snapshot {
  server: { config: Record<string, unknown> };
  entities: EntityRecord[];
}

export interface ConfigPlanOptions {
  /** Only this project's objects (plus missing storage pools, which it may need). */
  project?: string;
  /** Also restore the server configuration (opt-in: addresses and trust settings are host-specific). */
  serverConfig: boolean;
}

/** Keys Incus manages itself; never compared or sent. */
const isVolatile = (key: string) => key.startsWith("volatile.");

/** Pool keys fixed at creation: an existing pool keeps its own. */
const POOL_IMMUTABLE = new Set(["source", "source.wipe", "zfs.pool_name", "lvm.vg_name", "lvm.thinpool_name", "lvm.use_thinpool", "lvm.vg.force_reuse", "ceph.osd.pool_name", "ceph.cluster_name", "cephfs.path"]);

/**
 * Config keys whose values are secrets: trust passwords, S3 and OIDC credentials, tokens; all of
 * cloud-init's data (user-data often carries passwords and keys); and environment variables and
 * user keys named like a password, secret, token or key.
 */
export function isSecretKey(key: string): boolean {
  if (/^cloud-init\./.test(key) || /^user\.(user-data|vendor-data|network-config|meta-data)$/.test(key)) return true;
  if (/^(environment|user)\./.test(key) && /(password|passwd|secret|token|key)/i.test(key)) return true;
  return /(password|passwd|secret|token|credential|private|api[._-]?key|access[._-]?key|secret[._-]?key)/i.test(key);
}

/** A pool `source` the server chose under its own data directory, which a new server cannot reuse. */
export function isServerManagedSource(source: string): boolean {
  return /(^|\/)storage-pools\/[^/]+\/?$/.test(source) || /\/disks\/[^/]+\.img$/.test(source);
}

const recId = (r: Pick<EntityRecord, "kind" | "project" | "parent" | "id">) => [r.kind, r.project, r.parent ?? "", r.id].join("\u0000");

export function planConfig(backup: Snapshot, live: Snapshot, opts: ConfigPlanOptions): ConfigPlan {
  const liveById = new Map(live.entities.map((e) => [recId(e), e]));
  const backupIds = new Set(backup.entities.map(recId));
  const plan: ConfigPlan = { actions: [], unchanged: 0, extra: [] };

  for (const d of ENTITIES) {
    for (const rec of backup.entities.filter((e) => e.kind === d.kind)) {
      if (opts.project !== undefined && !inProject(rec, opts.project)) {
        // A project restore still creates pools it may need, but changes no global object.
        if (!(rec.kind === "storage-pool" && !liveById.has(recId(rec)))) continue;
      }
      const existing = liveById.get(recId(rec));
      if (!existing) {
        plan.actions.push(createAction(rec));
        continue;
      }
      const conflict = d.createOnly.find((f) => f !== "target_integration" && stringify(rec.object[f]) !== stringify(existing.object[f]));
      if (conflict) {
        plan.actions.push({ action: "conflict", rec, reason: `${conflict} is ${show(existing.object[conflict])} on the server but ${show(rec.object[conflict])} in the backup; left alone` });
        continue;
      }
      const changes = diffWritable(rec.kind, rec.object, existing.object);
      if (changes.length === 0) plan.unchanged++;
      else plan.actions.push({ action: "update", rec, body: updateBody(rec.kind, rec.object, existing.object), changes });
    }
  }
  for (const e of live.entities) {
    if (backupIds.has(recId(e)) || descriptor(e.kind).parent) continue;
    if (opts.project !== undefined && !inProject(e, opts.project)) continue;
    plan.extra.push(e);
  }
  if (opts.serverConfig) {
    const changes = diffMaps("config", backup.server.config, live.server.config, () => false);
    if (changes.length > 0) plan.server = { changes, body: { ...backup.server.config } };
  }
  return plan;
}

function inProject(rec: EntityRecord, project: string): boolean {
  return rec.kind === "project" ? rec.id === project : rec.project === project;
}

function createAction(rec: EntityRecord): ConfigAction {
  const d = descriptor(rec.kind);
  const notes: string[] = [];
  const body: Record<string, unknown> = { [d.idField]: rec.id };
  for (const f of d.createOnly) if (rec.object[f] !== undefined && rec.object[f] !== "") body[f] = rec.object[f];
  for (const f of d.writable) if (rec.object[f] !== undefined) body[f] = rec.object[f];
  const config = { ...((rec.object.config ?? {}) as Record<string, string>) };
  for (const k of Object.keys(config)) if (isVolatile(k)) delete config[k];
  if (rec.kind === "storage-pool" && typeof config.source === "string" && isServerManagedSource(config.source)) {
    notes.push(`source ${config.source} was the old server's own directory; the new pool gets a fresh one`);
    delete config.source;
  }
  if ("config" in body) body.config = config;
  return { action: "create", rec, body, notes };
}

/** The PUT body: the backup's writable fields, keeping the server's volatile (and fixed pool) keys. */
function updateBody(kind: EntityKind, wanted: Record<string, unknown>, current: Record<string, unknown>): Record<string, unknown> {
  const d = descriptor(kind);
  const body: Record<string, unknown> = {};
  for (const f of d.writable) body[f] = wanted[f] ?? current[f];
  if (d.writable.includes("config")) {
    const keep = (k: string) => isVolatile(k) || (kind === "storage-pool" && POOL_IMMUTABLE.has(k));
    const cur = (current.config ?? {}) as Record<string, string>;
    const want = (wanted.config ?? {}) as Record<string, string>;
    const config: Record<string, string> = {};
    for (const [k, v] of Object.entries(want)) if (!keep(k)) config[k] = v;
    for (const [k, v] of Object.entries(cur)) if (keep(k)) config[k] = v;
    body.config = config;
  }
  return body;
}

/** Field-level differences in the writable fields, ignoring what the server manages itself. */
export function diffWritable(kind: EntityKind, wanted: Record<string, unknown>, current: Record<string, unknown>): FieldChange[] {
  const d = descriptor(kind);
  const out: FieldChange[] = [];
  const ignoreKey = (k: string) => isVolatile(k) || (kind === "storage-pool" && POOL_IMMUTABLE.has(k));
  for (const f of d.writable) {
    if (f === "config") out.push(...diffMaps("config", wanted.config, current.config, ignoreKey));
    else if (f === "devices") out.push(...diffDevices(wanted.devices, current.devices));
    else if (stringify(wanted[f] ?? emptyOf(current[f])) !== stringify(current[f] ?? emptyOf(wanted[f]))) {
      out.push({ field: f, from: show(current[f]), to: show(wanted[f]), secret: false });
    }
  }
  return out;
}

function diffMaps(prefix: string, wanted: unknown, current: unknown, ignore: (k: string) => boolean): FieldChange[] {
  const w = (wanted ?? {}) as Record<string, unknown>;
  const c = (current ?? {}) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(w), ...Object.keys(c)])].filter((k) => !ignore(k)).sort();
  const out: FieldChange[] = [];
  for (const k of keys) {
    const from = c[k] === undefined ? undefined : String(c[k]);
    const to = w[k] === undefined ? undefined : String(w[k]);
    if (from !== to) out.push({ field: `${prefix}.${k}`, from, to, secret: isSecretKey(k) });
  }
  return out;
}

function diffDevices(wanted: unknown, current: unknown): FieldChange[] {
  const w = (wanted ?? {}) as Record<string, Record<string, string>>;
  const c = (current ?? {}) as Record<string, Record<string, string>>;
  const out: FieldChange[] = [];
  for (const dev of [...new Set([...Object.keys(w), ...Object.keys(c)])].sort()) {
    if (!w[dev]) out.push({ field: `devices.${dev}`, from: deviceText(c[dev]!), to: undefined, secret: false });
    else if (!c[dev]) out.push({ field: `devices.${dev}`, from: undefined, to: deviceText(w[dev]), secret: false });
    else out.push(...diffMaps(`devices.${dev}`, w[dev], c[dev], () => false));
  }
  return out;
}

function deviceText(d: Record<string, string>): string {
  return Object.entries(d)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

function emptyOf(v: unknown): unknown {
  if (Array.isArray(v)) return [];
  if (typeof v === "string") return "";
  return v;
}

/** Canonical JSON (sorted keys), so key order never counts as a difference. */
export function stringify(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) =>
    val && typeof val === "object" && !Array.isArray(val)
      ? Object.fromEntries(Object.entries(val as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)))
      : val,
  ) ?? "undefined";
}

function show(v: unknown): string {
  if (v === undefined || v === null) return "(none)";
  if (typeof v === "string") return v === "" ? '""' : v;
  const s = stringify(v);
  return s.length > 120 ? `${s.slice(0, 117)}...` : s;
}

/** Whether a plan changes anything that exists now. */
export function configIsDestructive(plan: ConfigPlan): boolean {
  return plan.actions.some((a) => a.action === "update") || (plan.server?.changes.length ?? 0) > 0;
}
