// Fault injection for the reliability suite (issue 6): stop the built tool at an exact point and
// kill it there, without a hook in the product.
//
// - `FaultProxy`: a unix socket between the tool and Incus that sees every HTTP request line. It
//   can hold a request back (the server never gets it), or let part of a response or upload
//   through and hold the rest. The test then kills the tool, or restarts incusd, at that moment.
// - `pauseAt`: an environment for the tool that loads pause-preload.cjs, which stops it at one
//   file-system step (a rename, an open, ...) and prints a marker.
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { apiGet } from "../../lab/lab";
import type { RunningTool, ToolResult } from "./tool";

const here = dirname(fileURLToPath(import.meta.url));

export interface SeenRequest {
  /** Order of arrival, from 1. */
  id: number;
  conn: number;
  method: string;
  /** Path with the query string. */
  path: string;
}

export type RequestMatch = (r: SeenRequest) => boolean;

/** `METHOD path-regexp`, e.g. `req("POST", /^\/1\.0\/instances\/web\/backups/)`. */
export function req(method: string, path: RegExp): RequestMatch {
  return (r) => r.method === method && path.test(r.path);
}

interface Rule {
  match: RequestMatch;
  nth: number;
  seen: number;
  /** "request": hold the request itself; "response"/"upload": hold after `bytes` of the response/request; "observe": hold nothing. */
  what: "request" | "response" | "upload" | "observe";
  bytes: number;
  resolve: (r: SeenRequest) => void;
}

interface Conn {
  id: number;
  client: Socket;
  upstream: Socket;
  /** Everything from here on is held back, in each direction. */
  holdUp: Buffer[] | undefined;
  holdDown: Buffer[] | undefined;
  tail: string;
  /** Armed by a rule: how much more may pass before holding. */
  upload?: Watch;
  response?: Watch;
}

/** Bytes still allowed through before holding, and the rule to resolve then. */
interface Watch {
  left: number;
  rule: Rule;
  req: SeenRequest;
}

const REQUEST_LINE = /(GET|POST|PUT|PATCH|DELETE|HEAD) (\/[^ \r\n]*) HTTP\/1\.1\r\n/g;

export class FaultProxy {
  readonly requests: SeenRequest[] = [];
  private rules: Rule[] = [];
  private readonly conns = new Set<Conn>();
  private nextConn = 1;

  private constructor(
    readonly path: string,
    private readonly dir: string,
    private readonly target: string,
    private readonly server: Server,
  ) {}

  /** A proxy to the Incus socket `target`, listening on a new socket in a temp dir. */
  static async start(target: string): Promise<FaultProxy> {
    const dir = await mkdtemp(join(tmpdir(), "ibk-proxy-"));
    const path = join(dir, "incus.sock");
    let proxy: FaultProxy | undefined;
    const server = createServer((client) => proxy!.accept(client));
    proxy = new FaultProxy(path, dir, target, server);
    server.listen(path);
    await once(server, "listening");
    return proxy;
  }

  /** Resolves when the nth request matching is sent; it is held back: the server never sees it. */
  holdRequest(match: RequestMatch, nth = 1): Promise<SeenRequest> {
    return this.arm("request", match, nth, 0);
  }

  /** Resolves once `bytes` of the response to the nth matching request went through; the rest is held. */
  holdResponseAfter(match: RequestMatch, bytes: number, nth = 1): Promise<SeenRequest> {
    return this.arm("response", match, nth, bytes);
  }

  /** Resolves once `bytes` of the nth matching request (line, headers, body) went through; the rest is held. */
  holdUploadAfter(match: RequestMatch, bytes: number, nth = 1): Promise<SeenRequest> {
    return this.arm("upload", match, nth, bytes);
  }

  /** Resolves when the nth matching request is sent, holding nothing back. */
  observe(match: RequestMatch, nth = 1): Promise<SeenRequest> {
    return this.arm("observe", match, nth, 0);
  }

  /** Forgets armed rules and lets held data through. */
  release(): void {
    this.rules = [];
    for (const c of this.conns) {
      const up = c.holdUp;
      const down = c.holdDown;
      c.holdUp = undefined;
      c.holdDown = undefined;
      c.upload = undefined;
      c.response = undefined;
      for (const b of up ?? []) c.upstream.write(b);
      for (const b of down ?? []) c.client.write(b);
    }
  }

  /**
   * After the tool holding them was killed: its held connections are cut and what was held is
   * dropped, never sent. (Released instead, a held request could still reach Incus if the proxy has
   * not yet seen the dead client's connection close, and the kill would have come after it.)
   */
  dropHeld(): void {
    this.rules = [];
    for (const c of this.conns) {
      if (!c.holdUp && !c.holdDown) continue;
      c.holdUp = undefined;
      c.holdDown = undefined;
      c.client.destroy();
      c.upstream.destroy();
    }
  }

  /** Cuts every connection (a daemon that went away), dropping what was held. */
  cutAll(): void {
    for (const c of this.conns) {
      c.client.destroy();
      c.upstream.destroy();
    }
  }

  async close(): Promise<void> {
    this.rules = [];
    this.cutAll();
    await new Promise<void>((r) => this.server.close(() => r()));
    await rm(this.dir, { recursive: true, force: true });
  }

  private arm(what: Rule["what"], match: RequestMatch, nth: number, bytes: number): Promise<SeenRequest> {
    return new Promise((resolve) => this.rules.push({ what, match, nth, seen: 0, bytes, resolve }));
  }

  private accept(client: Socket): void {
    const upstream = createConnection(this.target);
    const c: Conn = { id: this.nextConn++, client, upstream, holdUp: undefined, holdDown: undefined, tail: "" };
    this.conns.add(c);
    const end = () => {
      this.conns.delete(c);
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end).on("close", end);
    upstream.on("error", end);
    // A server that closes after its answer (as Incus does when asked to): its last bytes reach
    // the client before the end, as through any proxy; destroying at once would drop those still
    // queued here. What is held back goes with the connection.
    upstream.on("close", () => {
      if (c.holdDown || upstream.errored) return end();
      this.conns.delete(c);
      client.end();
    });
    client.on("data", (chunk: Buffer) => this.fromClient(c, chunk));
    upstream.on("data", (chunk: Buffer) => this.fromServer(c, chunk));
  }

  private fromClient(c: Conn, chunk: Buffer): void {
    if (c.holdUp) {
      c.holdUp.push(chunk);
      return;
    }
    // Request lines in this chunk (one may have started in the previous one).
    const text = c.tail + chunk.toString("latin1");
    const offset = c.tail.length;
    c.tail = text.slice(-300);
    let cut: number | undefined;
    for (const m of text.matchAll(REQUEST_LINE)) {
      const endsAt = m.index + m[0].length;
      if (endsAt <= offset) continue;
      const r: SeenRequest = { id: this.requests.length + 1, conn: c.id, method: m[1]!, path: m[2]! };
      this.requests.push(r);
      const at = Math.max(0, m.index - offset);
      c.upload = undefined;
      for (const rule of this.rules) {
        if (!rule.match(r) || ++rule.seen !== rule.nth) continue;
        this.rules = this.rules.filter((x) => x !== rule);
        if (rule.what === "request") {
          cut ??= at;
          rule.resolve(r);
        } else if (rule.what === "observe") {
          rule.resolve(r);
        } else if (rule.what === "response") {
          c.response = { left: rule.bytes, rule, req: r };
        } else {
          // Counted from the request line: the bytes before it in this chunk are not its own.
          c.upload = { left: rule.bytes + at, rule, req: r };
        }
      }
      if (cut !== undefined) break;
    }
    if (cut !== undefined) {
      c.upstream.write(chunk.subarray(0, cut));
      c.holdUp = [chunk.subarray(cut)];
      return;
    }
    if (c.upload) {
      const held = countThrough(c.upload, chunk, (b) => c.upstream.write(b));
      if (held) {
        c.upload = undefined;
        c.holdUp = held;
      }
      return;
    }
    c.upstream.write(chunk);
  }

  private fromServer(c: Conn, chunk: Buffer): void {
    if (c.holdDown) {
      c.holdDown.push(chunk);
      return;
    }
    if (c.response) {
      const held = countThrough(c.response, chunk, (b) => c.client.write(b));
      if (held) {
        c.response = undefined;
        c.holdDown = held;
      }
      return;
    }
    c.client.write(chunk);
  }
}

/**
 * Lets a chunk through a counted watch. Once the watch's bytes are through, resolves its rule and
 * returns the rest of the chunk, to be held back; until then, undefined.
 */
function countThrough(watch: Watch, chunk: Buffer, write: (b: Buffer) => void): Buffer[] | undefined {
  if (chunk.length < watch.left) {
    watch.left -= chunk.length;
    write(chunk);
    return undefined;
  }
  write(chunk.subarray(0, watch.left));
  watch.rule.resolve(watch.req);
  return [chunk.subarray(watch.left)];
}

/** Environment for `startTool` that stops the tool at one file-system step (see pause-preload.cjs). */
export function pauseAt(spec: { op: "rename" | "open" | "link" | "rm" | "unlink" | "mkdir"; when: "before" | "after"; match: RegExp; nth?: number }): Record<string, string> {
  return {
    NODE_OPTIONS: `--require ${join(here, "pause-preload.cjs")}`,
    IBK_TEST_PAUSE: JSON.stringify({ op: spec.op, when: spec.when, match: spec.match.source, nth: spec.nth ?? 1 }),
  };
}

/** Waits until the tool's stderr matches, failing with its output if it ends first or takes too long. */
export async function waitForStderr(run: RunningTool, pattern: RegExp, timeoutMs = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!pattern.test(run.output().stderr)) {
    if (run.child.exitCode !== null || run.child.signalCode !== null) {
      const o = run.output();
      throw new Error(`the tool ended (exit ${run.child.exitCode}) before ${pattern}:\nstdout: ${o.stdout}\nstderr: ${o.stderr}`);
    }
    if (Date.now() - t0 > timeoutMs) throw new Error(`no ${pattern} within ${timeoutMs} ms:\n${run.output().stderr}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Races a point being reached against the tool ending, so a run that never gets there fails clearly. */
export async function reached<T>(run: RunningTool, point: Promise<T>, what: string, timeoutMs = 60_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const ended = run.done.then((r: ToolResult) => {
    throw new Error(`the tool ended (exit ${r.code}) before ${what}:\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  });
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} not reached within ${timeoutMs} ms:\n${run.output().stderr}`)), timeoutMs);
  });
  try {
    return await Promise.race([point, ended, late]);
  } finally {
    clearTimeout(timer);
    ended.catch(() => undefined);
  }
}

/** SIGKILLs the tool and waits for it to be gone. */
export async function killTool(run: RunningTool): Promise<ToolResult> {
  run.child.kill("SIGKILL");
  const r = await run.done;
  if (r.signal !== "SIGKILL") throw new Error(`the tool ended by itself (exit ${r.code}) before it was killed:\n${r.stderr}`);
  return r;
}

export interface ServerBackup {
  /** instance NAME or volume POOL/NAME, in PROJECT. */
  of: string;
  name: string;
  expires_at: string;
}

/** Every server-side backup of every instance and custom volume, in all projects. */
export async function serverBackups(socket: string): Promise<ServerBackup[]> {
  const q = async <T>(path: string) => (await apiGet(path, { socket })) as T;
  const out: ServerBackup[] = [];
  for (const i of await q<Array<{ name: string; project: string }>>("/1.0/instances?recursion=1&all-projects=true")) {
    for (const b of await q<ServerBackup[]>(`/1.0/instances/${i.name}/backups?recursion=1&project=${i.project}`)) {
      out.push({ of: `instance ${i.project}/${i.name}`, name: b.name, expires_at: b.expires_at });
    }
  }
  for (const p of await q<string[]>("/1.0/storage-pools")) {
    const pool = p.split("/").pop()!;
    for (const v of await q<Array<{ name: string; project: string; type: string }>>(`/1.0/storage-pools/${pool}/volumes/custom?recursion=1&all-projects=true`)) {
      for (const b of await q<ServerBackup[]>(`/1.0/storage-pools/${pool}/volumes/custom/${v.name}/backups?recursion=1&project=${v.project}`)) {
        out.push({ of: `volume ${v.project}/${pool}/${v.name}`, name: b.name, expires_at: b.expires_at });
      }
    }
  }
  return out;
}

/** Server-side backups that would stay forever: no expiry, or one more than two days ahead. */
export function nonExpiring(backups: ServerBackup[], now = Date.now()): ServerBackup[] {
  return backups.filter((b) => {
    const t = Date.parse(b.expires_at);
    return !(t > now && t < now + 48 * 3600_000);
  });
}
