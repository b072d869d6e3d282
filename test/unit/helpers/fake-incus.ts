// A small fake Incus for engine tests: the parts of IncusClient's surface the engine uses (get,
// list, sync, operation, operationFrom, call, raw, bulk, server, close, socketPath), routed by method and
// path (and the project in the query) to an in-memory model of instances, custom volumes,
// operations and server-side backups. Operations finish at once (the wait returns the finished
// operation), except tasks a test leaves running (runningTask). Faults are injected with fail().
//
// What it models of Incus, because the engine depends on it: a running instance cannot be renamed
// or deleted; a protected one (security.protection.delete) cannot be deleted; a NIC without a MAC
// gets one at start, and a start fails if another instance has the same MAC; a PUT that turns a
// device into a NIC (or a NIC into something else) drops its MAC (volatile.DEV.hwaddr); an upload
// creates nothing until every byte has arrived.

import { execFileSync } from "node:child_process";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { Header } from "tar";
import type { IncusClient, RawRequestOptions, RequestOptions, ServerInfo } from "../../../src/incus/client";
import { IncusError, errorFromResponse } from "../../../src/incus/errors";
import type { Instance } from "../../../src/incus/instances";
import { Operation, type OperationData } from "../../../src/incus/operations";

export interface FakeInstance {
  name: string;
  project: string;
  status: "Running" | "Stopped";
  config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
  profiles: string[];
  ephemeral?: boolean;
}

export interface FakeVolume {
  name: string;
  project: string;
  pool: string;
  /** In a cluster, the member of a local pool's volume: several members may each have one of a name. */
  location?: string;
  /** Stands for the volume's files: a refresh copies it, an import sets it to importedContent. */
  content: string;
}

export interface FakeBackup {
  name: string;
  compression: string;
  data: Buffer;
  expires_at?: string;
}

/** What a fault hits: the server-side action, on the instance or volume it names. */
export type FaultOn = "start" | "stop" | "rename" | "delete" | "import" | "copy" | "backup";

interface Fault {
  on: FaultOn;
  target: string | undefined;
  compression: string | undefined;
  message: string;
  times: number;
}

export interface FakeRequest {
  method: string;
  path: string;
  project: string | undefined;
  /** The member asked for (?target=), if any. */
  target?: string;
  body: unknown;
}

interface Envelope {
  type: "sync" | "async" | "error";
  status_code?: number;
  error_code?: number;
  error?: string;
  metadata?: unknown;
}

type Reply = { status: number; json: Envelope } | { status: number; data: Buffer };

class FakeError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface FakeOperation {
  data: OperationData;
  /** A task left running: its effect happens when it is waited for. */
  pending?: () => void;
}

export class FakeIncus {
  readonly socketPath = "/fake/incus.socket";
  apiExtensions: string[];
  /** Profiles' devices, by profile name. */
  readonly profiles: Record<string, Record<string, Record<string, string>>> = {
    default: {
      root: { type: "disk", path: "/", pool: "default" },
      eth0: { type: "nic", network: "incusbr0", name: "eth0" },
    },
  };
  /** Instances by project/name. */
  readonly instances = new Map<string, FakeInstance>();
  /** Custom volumes by project/pool/name, and @MEMBER for a member's (see FakeVolume.location). */
  readonly volumes = new Map<string, FakeVolume>();
  /** Server-side backups by the path of their instance or volume, then by name. */
  readonly backups = new Map<string, Map<string, FakeBackup>>();
  readonly operations = new Map<string, FakeOperation>();
  /** Every request, in order. */
  readonly requests: FakeRequest[] = [];
  /** What an uploaded instance backup becomes (besides its name and project). */
  imported: Pick<FakeInstance, "config" | "devices" | "profiles"> = { config: {}, devices: {}, profiles: ["default"] };
  importedContent = "restored";
  /** An upload fails before a byte of it is read, as when the socket refuses the connection. */
  refuseUploads = false;
  private faults: Fault[] = [];
  private opCount = 0;
  private macCount = 0;

  constructor(options: { apiExtensions?: string[] } = {}) {
    this.apiExtensions = options.apiExtensions ?? [];
  }

  /** As IncusClient, for the engine. */
  get client(): IncusClient {
    return this as unknown as IncusClient;
  }

  // --- the model, for tests ---

  addInstance(i: Partial<FakeInstance> & { name: string }): FakeInstance {
    const inst: FakeInstance = { project: "default", status: "Stopped", config: {}, devices: {}, profiles: ["default"], ...structuredClone(i) };
    this.instances.set(`${inst.project}/${inst.name}`, inst);
    return inst;
  }

  addVolume(v: Partial<FakeVolume> & { name: string }): FakeVolume {
    const vol: FakeVolume = { project: "default", pool: "default", content: "original", ...v };
    this.volumes.set(`${vol.project}/${vol.pool}/${vol.name}${vol.location === undefined ? "" : `@${vol.location}`}`, vol);
    return vol;
  }

  instance(name: string, project = "default"): FakeInstance | undefined {
    return this.instances.get(`${project}/${name}`);
  }

  volume(name: string, pool = "default", project = "default"): FakeVolume | undefined {
    return this.volumes.get(`${project}/${pool}/${name}`);
  }

  /** Names of the instances of a project, sorted. */
  instanceNames(project = "default"): string[] {
    return [...this.instances.values()].filter((i) => i.project === project).map((i) => i.name).sort();
  }

  /** The instance as the API shows it (with the expanded devices and config). */
  view(i: FakeInstance): Instance {
    return {
      name: i.name,
      project: i.project,
      type: "container",
      status: i.status,
      status_code: i.status === "Running" ? 103 : 102,
      description: "",
      architecture: "x86_64",
      config: { ...i.config },
      devices: structuredClone(i.devices),
      expanded_config: { ...i.config },
      expanded_devices: this.expanded(i),
      ephemeral: i.ephemeral === true,
      stateful: false,
      profiles: [...i.profiles],
      created_at: "2025-01-01T00:00:00Z",
    };
  }

  /**
   * The next `times` requests for `on` (on the instance or volume named `target`, or on any) fail
   * with `message`; for "backup", only those asking for `compression` when it is given. Checks
   * (compression) fail the request; actions fail their operation, as Incus does.
   */
  fail(on: FaultOn, target: string | undefined, message: string, options: { times?: number; compression?: string } = {}): void {
    this.faults.push({ on, target, compression: options.compression, message, times: options.times ?? 1 });
  }

  /** Leaves a task running on the server (what a run that died left going); `effect` happens when it ends. */
  runningTask(description: string, resources: Record<string, string[]>, effect: () => void): string {
    const op = this.newOperation(description, resources);
    this.operations.set(op.id, { data: op, pending: effect });
    return op.id;
  }

  /** "METHOD path" of each request, optionally only those matching. */
  calls(match?: RegExp): string[] {
    return this.requests.map((r) => `${r.method} ${r.path}`).filter((s) => match === undefined || match.test(s));
  }

  // --- IncusClient's surface ---

  async close(): Promise<void> {}

  async server(): Promise<ServerInfo> {
    return { api_extensions: [...this.apiExtensions], api_version: "1.0", environment: { server_name: "fake", server_version: "6.0.4" } };
  }

  async get<T>(path: string, what: string, options: RequestOptions = {}): Promise<T> {
    return (await this.call("GET", path, what, options)).metadata as T;
  }

  async list<T>(path: string, what: string, options: RequestOptions = {}): Promise<T[]> {
    return (await this.get<T[] | null>(path, what, options)) ?? [];
  }

  async sync<T>(method: string, path: string, what: string, options: RequestOptions = {}): Promise<T> {
    const env = await this.call(method, path, what, options);
    if (env.type !== "async") return env.metadata as T;
    const done = await this.operationFrom(env, what).wait(options.signal === undefined ? {} : { signal: options.signal });
    return done.metadata as T;
  }

  async operation(method: string, path: string, what: string, options: RequestOptions = {}): Promise<Operation> {
    return this.operationFrom(await this.call(method, path, what, options), what);
  }

  operationFrom(env: unknown, what: string): Operation {
    const e = env as Envelope;
    if (e.type !== "async" || typeof e.metadata !== "object" || e.metadata === null) {
      throw new IncusError(`${what}: expected a background operation, got a "${e.type}" answer`);
    }
    return new Operation(this, e.metadata as OperationData, what);
  }

  async call(method: string, path: string, what: string, options: RequestOptions = {}): Promise<Envelope> {
    const reply = await this.handle(method, path, options.query ?? {}, options.body, undefined, options.headers ?? {});
    if (!("json" in reply)) throw new IncusError(`${what}: the server sent a reply that is not JSON`);
    if (reply.json.type === "error") throw errorFromResponse(what, reply.json.error_code ?? reply.status, reply.json.error ?? "");
    return reply.json;
  }

  async raw(method: string, path: string, what: string, options: RawRequestOptions = {}, textBody?: string) {
    const body = textBody === undefined ? undefined : (JSON.parse(textBody) as unknown);
    const reply = await this.handle(method, path, options.query ?? {}, body, options.body, options.headers ?? {});
    if ("json" in reply && reply.json.type === "error") throw errorFromResponse(what, reply.json.error_code ?? reply.status, reply.json.error ?? "");
    const data = "json" in reply ? Buffer.from(JSON.stringify(reply.json)) : reply.data;
    const chunks: Buffer[] = [];
    for (let i = 0; i < data.length; i += 16 << 10) chunks.push(data.subarray(i, i + (16 << 10)));
    const stream = Object.assign(Readable.from(chunks, { objectMode: false }), {
      text: async () => data.toString("utf8"),
      json: async () => JSON.parse(data.toString("utf8")) as unknown,
    });
    return {
      statusCode: reply.status,
      headers: { "content-type": "json" in reply ? "application/json" : "application/octet-stream", "content-length": String(data.length) },
      body: stream,
    };
  }

  /** Transfers of backup files: the same answers as raw(). */
  async bulk(method: "GET" | "POST", path: string, what: string, options: RawRequestOptions = {}, textBody?: string) {
    if (this.refuseUploads && method === "POST" && options.body !== undefined) {
      await new Promise((r) => setTimeout(r, 10));
      throw Object.assign(new Error(`connect ECONNREFUSED ${this.socketPath}`), { code: "ECONNREFUSED" });
    }
    return this.raw(method, path, what, options, textBody);
  }

  // --- routing ---

  private async handle(method: string, path: string, query: Record<string, unknown>, body: unknown, upload: Readable | undefined, headers: Record<string, string>): Promise<Reply> {
    const project = typeof query.project === "string" ? query.project : undefined;
    this.requests.push({ method, path, project, ...(typeof query.target === "string" ? { target: query.target } : {}), body });
    // The server keeps an upload whole before it acts on it; a body that fails fails the request.
    const uploaded = upload === undefined ? undefined : await readAll(upload);
    try {
      return this.route(method, path, query, project ?? "default", body, uploaded, headers);
    } catch (err) {
      if (!(err instanceof FakeError)) throw err;
      return { status: err.status, json: { type: "error", error_code: err.status, error: err.message } };
    }
  }

  private route(method: string, path: string, query: Record<string, unknown>, project: string, body: unknown, upload: Buffer | undefined, headers: Record<string, string>): Reply {
    const b = (body ?? {}) as Record<string, unknown>;
    let m: RegExpExecArray | null;
    if ((m = /^\/1\.0\/operations(?:\/([^/]+)(\/wait)?)?$/.exec(path))) return this.routeOperations(method, m[1] && decodeURIComponent(m[1]));
    if (path === "/1.0/instances") {
      if (method === "GET") {
        const all = query["all-projects"] === true;
        return ok([...this.instances.values()].filter((i) => all || i.project === project).map((i) => this.view(i)));
      }
      if (method === "POST" && upload) return this.importInstance(project, headers["x-incus-name"] ?? "imported");
    }
    if ((m = /^\/1\.0\/instances\/([^/]+)(\/.*)?$/.exec(path))) {
      const name = decodeURIComponent(m[1]!);
      const rest = m[2] ?? "";
      const owner = `/1.0/instances/${name}?project=${project}`;
      if (rest.startsWith("/backups")) return this.routeBackups(method, rest, owner, name, b, headers, () => this.mustInstance(project, name));
      return this.routeInstance(method, rest, this.mustInstance(project, name), b);
    }
    if ((m = /^\/1\.0\/storage-pools\/([^/]+)\/volumes\/custom(?:\/([^/]+))?(\/.*)?$/.exec(path))) {
      const pool = decodeURIComponent(m[1]!);
      if (m[2] === undefined) {
        if (method === "POST" && upload) return this.importVolume(project, pool, headers["x-incus-name"] ?? "imported");
        if (method === "POST") return this.copyVolume(project, pool, b);
      } else {
        const name = decodeURIComponent(m[2]);
        const rest = m[3] ?? "";
        const target = typeof query.target === "string" ? query.target : undefined;
        const key = this.volumeKey(project, pool, name, target);
        const must = () => this.volumes.get(key) ?? notFound("Storage volume not found");
        const owner = `/1.0/storage-pools/${pool}/volumes/custom/${name}?project=${project}`;
        if (rest.startsWith("/backups")) return this.routeBackups(method, rest, owner, name, b, headers, must);
        if (method === "GET") {
          const v = must();
          return ok({ name: v.name, type: "custom", pool: v.pool, project: v.project, description: "", config: {}, content_type: "filesystem", used_by: [] });
        }
        if (method === "DELETE") {
          must();
          this.volumes.delete(key);
          return ok({});
        }
      }
    }
    throw new FakeError(400, `the fake Incus does not know ${method} ${path}`);
  }

  private routeOperations(method: string, id: string | undefined): Reply {
    if (id === undefined) {
      const ops = [...this.operations.values()].map((o) => o.data);
      return ok({ running: ops.filter((o) => o.status_code < 200), success: ops.filter((o) => o.status_code === 200), failure: ops.filter((o) => o.status_code >= 400) });
    }
    const op = this.operations.get(id) ?? notFound("Operation not found");
    if (method === "DELETE") return ok({});
    if (op.pending) {
      const effect = op.pending;
      delete op.pending;
      this.finish(op.data, effect);
    }
    return ok(structuredClone(op.data));
  }

  private routeInstance(method: string, rest: string, i: FakeInstance, b: Record<string, unknown>): Reply {
    const where = { instances: [`/1.0/instances/${i.name}?project=${i.project}`] };
    if (rest === "" && method === "GET") return ok(this.view(i));
    if (rest === "/snapshots" && method === "GET") return ok([]);
    if (rest === "/state" && method === "PUT") {
      const action = String(b.action);
      return this.async(`${action} instance`, where, () => {
        if (action === "start") this.start(i);
        else if (action === "stop") {
          if (i.status === "Stopped") throw new FakeError(400, "The instance is already stopped");
          this.fault("stop", i.name);
          i.status = "Stopped";
        } else throw new FakeError(400, `the fake Incus cannot ${action}`);
      });
    }
    if (rest === "" && method === "POST") {
      const to = String(b.name);
      return this.async("Renaming instance", where, () => {
        if (i.status !== "Stopped") throw new FakeError(400, "Renaming of running instance not allowed");
        if (this.instances.has(`${i.project}/${to}`)) throw new FakeError(409, `Instance "${to}" already exists`);
        this.fault("rename", i.name);
        this.instances.delete(`${i.project}/${i.name}`);
        i.name = to;
        this.instances.set(`${i.project}/${to}`, i);
      });
    }
    if (rest === "" && method === "DELETE") {
      return this.async("Deleting instance", where, () => {
        if (i.status !== "Stopped") throw new FakeError(400, "Instance is running");
        if (i.config["security.protection.delete"] === "true") throw new FakeError(400, "Instance is protected from being deleted");
        this.fault("delete", i.name);
        this.instances.delete(`${i.project}/${i.name}`);
      });
    }
    if (rest === "" && method === "PUT") {
      return this.async("Updating instance", where, () => {
        const before = this.expanded(i);
        i.config = { ...(b.config as Record<string, string>) };
        i.devices = structuredClone(b.devices as Record<string, Record<string, string>>);
        i.profiles = [...(b.profiles as string[])];
        const after = this.expanded(i);
        // A device that became a NIC, or stopped being one, loses its volatile MAC.
        for (const dev of new Set([...Object.keys(before), ...Object.keys(after)])) {
          if ((before[dev]?.type === "nic") !== (after[dev]?.type === "nic")) delete i.config[`volatile.${dev}.hwaddr`];
        }
      });
    }
    if (rest === "" && method === "PATCH") {
      return this.async("Updating instance", where, () => {
        for (const [k, v] of Object.entries((b.config ?? {}) as Record<string, string>)) {
          if (v === "") delete i.config[k];
          else i.config[k] = v;
        }
      });
    }
    throw new FakeError(400, `the fake Incus does not know ${method} /1.0/instances/${i.name}${rest}`);
  }

  private routeBackups(method: string, rest: string, owner: string, name: string, b: Record<string, unknown>, headers: Record<string, string>, must: () => unknown): Reply {
    must();
    const backups = this.backups.get(owner) ?? new Map<string, FakeBackup>();
    this.backups.set(owner, backups);
    const m = /^\/backups(?:\/([^/]+)(\/export)?)?$/.exec(rest);
    if (!m) throw new FakeError(400, `the fake Incus does not know ${rest}`);
    if (m[1] === undefined && method === "POST") {
      const compression = String(b.compression_algorithm ?? "gzip");
      this.fault("backup", name, compression);
      if (!(compression in COMPRESSORS)) throw new FakeError(400, `Unsupported compression algorithm "${compression}"`);
      if (this.apiExtensions.includes("direct_backup") && headers.accept === "application/octet-stream") {
        return { status: 200, data: backupArchive(name, compression) };
      }
      const backupName = String(b.name);
      return this.async("Backing up", { backups: [`${owner.split("?")[0]}/backups/${backupName}`] }, () => {
        backups.set(backupName, { name: backupName, compression, data: backupArchive(name, compression), ...(typeof b.expires_at === "string" ? { expires_at: b.expires_at } : {}) });
      });
    }
    const backup = backups.get(decodeURIComponent(m[1] ?? "")) ?? notFound("Backup not found");
    if (m[2] && method === "GET") return { status: 200, data: backup.data };
    if (!m[2] && method === "DELETE") return this.async("Deleting backup", {}, () => backups.delete(backup.name));
    throw new FakeError(400, `the fake Incus does not know ${method} ${rest}`);
  }

  private importInstance(project: string, name: string): Reply {
    return this.async("Creating instance from backup", { instances: [`/1.0/instances/${name}?project=${project}`] }, () => {
      this.fault("import", name);
      if (this.instances.has(`${project}/${name}`)) throw new FakeError(409, `Instance "${name}" already exists`);
      this.addInstance({ name, project, status: "Stopped", ...structuredClone(this.imported) });
    });
  }

  private importVolume(project: string, pool: string, name: string): Reply {
    return this.async("Creating volume from backup", { storage_volumes: [`/1.0/storage-pools/${pool}/volumes/custom/${name}?project=${project}`] }, () => {
      this.fault("import", name);
      if (this.volumes.has(`${project}/${pool}/${name}`)) throw new FakeError(409, `Volume "${name}" already exists`);
      this.addVolume({ name, project, pool, content: this.importedContent });
    });
  }

  private copyVolume(project: string, pool: string, b: Record<string, unknown>): Reply {
    const target = String(b.name);
    const source = (b.source ?? {}) as { name?: string; refresh?: boolean };
    return this.async("Copying storage volume", { storage_volumes: [`/1.0/storage-pools/${pool}/volumes/custom/${target}?project=${project}`] }, () => {
      this.fault("copy", target);
      const from = this.volume(String(source.name), pool, project) ?? notFound("Storage volume not found");
      const to = this.volume(target, pool, project);
      if (to && !source.refresh) throw new FakeError(409, `Volume "${target}" already exists`);
      if (to) to.content = from.content;
      else this.addVolume({ name: target, project, pool, content: from.content });
    });
  }

  /**
   * Which volume a request means: with ?target=, that member's; without, the only one of its name,
   * as Incus finds it on whichever member has it. Where several members have one, Incus refuses to guess.
   */
  private volumeKey(project: string, pool: string, name: string, target: string | undefined): string {
    const base = `${project}/${pool}/${name}`;
    if (target !== undefined) return `${base}@${target}`;
    if (this.volumes.has(base)) return base;
    const onMembers = [...this.volumes.keys()].filter((k) => k.startsWith(`${base}@`));
    if (onMembers.length > 1) throw new FakeError(400, `Storage volume "${name}" exists on several cluster members: pick one with target`);
    return onMembers[0] ?? base;
  }

  // --- behaviour ---

  private start(i: FakeInstance): void {
    if (i.status === "Running") throw new FakeError(400, "The instance is already running");
    this.fault("start", i.name);
    const nics = Object.entries(this.expanded(i)).filter(([, d]) => d.type === "nic");
    for (const [dev, d] of nics) {
      const key = `volatile.${dev}.hwaddr`;
      if (!d.hwaddr && !i.config[key]) i.config[key] = `00:16:3e:f0:00:${(++this.macCount).toString(16).padStart(2, "0")}`;
    }
    for (const [dev, d] of nics) {
      const mac = d.hwaddr || i.config[`volatile.${dev}.hwaddr`];
      for (const other of this.instances.values()) {
        if (other !== i && this.macs(other).includes(mac!)) throw new FakeError(400, `Failed to start device "${dev}": MAC address "${mac}" already defined on another NIC`);
      }
    }
    i.status = "Running";
  }

  /** The MACs an instance holds: its NICs' hwaddr or volatile hwaddr. */
  macs(i: FakeInstance): string[] {
    return Object.entries(this.expanded(i))
      .filter(([, d]) => d.type === "nic")
      .map(([dev, d]) => d.hwaddr || i.config[`volatile.${dev}.hwaddr`])
      .filter((m): m is string => !!m);
  }

  private expanded(i: FakeInstance): Record<string, Record<string, string>> {
    const out: Record<string, Record<string, string>> = {};
    for (const p of i.profiles) Object.assign(out, structuredClone(this.profiles[p] ?? {}));
    return { ...out, ...structuredClone(i.devices) };
  }

  /** Throws the message of the first fault that matches, once. */
  private fault(on: FaultOn, target: string, compression?: string): void {
    const f = this.faults.find((x) => x.on === on && x.times > 0 && (x.target === undefined || x.target === target) && (x.compression === undefined || x.compression === compression));
    if (!f) return;
    f.times--;
    throw new FakeError(400, f.message);
  }

  private newOperation(description: string, resources: Record<string, string[]>): OperationData {
    return { id: `op-${++this.opCount}`, class: "task", description, status: "Running", status_code: 103, metadata: null, err: "", may_cancel: false, resources };
  }

  /** An action as a background operation that finishes at once: succeeds, or fails with the action's error. */
  private async(description: string, resources: Record<string, string[]>, effect: () => void): Reply {
    const op = this.newOperation(description, resources);
    const started = structuredClone(op);
    this.operations.set(op.id, { data: op });
    this.finish(op, effect);
    return { status: 202, json: { type: "async", status_code: 100, metadata: started } };
  }

  private finish(op: OperationData, effect: () => void): void {
    try {
      effect();
      Object.assign(op, { status: "Success", status_code: 200 });
    } catch (err) {
      if (!(err instanceof FakeError)) throw err;
      Object.assign(op, { status: "Failure", status_code: 400, err: err.message });
    }
  }

  private mustInstance(project: string, name: string): FakeInstance {
    return this.instances.get(`${project}/${name}`) ?? notFound("Instance not found");
  }
}

function ok(metadata: unknown): Reply {
  return { status: 200, json: { type: "sync", status_code: 200, metadata: structuredClone(metadata) } };
}

function notFound(message: string): never {
  throw new FakeError(404, message);
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Buffer));
  return Buffer.concat(chunks);
}

// --- archives ---

/** A complete tar of these files (node-tar's headers, two zero blocks at the end). */
export function tarOf(files: Array<[path: string, content: string]>): Buffer {
  const blocks: Buffer[] = [];
  for (const [path, content] of files) {
    const data = Buffer.from(content);
    const header = Buffer.alloc(512);
    new Header({ path, size: data.length, type: "File", mode: 0o644, mtime: new Date(0) }).encode(header, 0);
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

/** How the fake server compresses, by compression_algorithm (pzstd: real pzstd, with its skippable headers). */
const COMPRESSORS: Record<string, (tar: Buffer) => Buffer> = {
  gzip: (tar) => gzipSync(tar),
  zstd: (tar) => execFileSync("zstd", ["-q", "-c"], { input: tar }),
  pzstd: (tar) => execFileSync("pzstd", ["-q", "-c", "-p", "2"], { input: tar }),
  none: (tar) => tar,
};

const archives = new Map<string, Buffer>();

/** What Incus would send for a backup of `name`: backup/index.yaml first, then some data, compressed. */
export function backupArchive(name: string, compression: string): Buffer {
  const key = `${compression}\u0000${name}`;
  let a = archives.get(key);
  if (!a) {
    const compress = COMPRESSORS[compression];
    if (!compress) throw new Error(`no compressor ${compression}`);
    a = compress(tarOf([["backup/index.yaml", `name: ${name}\nbackend: dir\n`], ["backup/container/rootfs/etc/hostname", `${name}\n`]]));
    archives.set(key, a);
  }
  return a;
}
