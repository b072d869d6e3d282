// The connection to Incus: undici over the unix socket, response parsing and error mapping.

import type { Readable } from "node:stream";
import type { Agent, Dispatcher } from "undici";
// Only the agent and the request method, not the package root: the root also loads fetch,
// WebSocket, caches and mocks, which cost every start of the tool ~35 ms and are never used.
// package-lock.json pins undici; test/unit/incus/undici-parts.test.ts fails if these files move.
import AgentClass from "undici/lib/dispatcher/agent.js";
import dispatcherRequest from "undici/lib/api/api-request.js";
import { InterruptedError } from "../errors";
import { bulkRequest, type BulkResponse } from "./bulk";
import { IncusError, IncusSocketError, errorFromResponse } from "./errors";
import { Operation, type OperationData } from "./operations";

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  /** A JSON body. */
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

export interface RawRequestOptions {
  query?: Query;
  headers?: Record<string, string>;
  /** A streamed body (uploads). */
  body?: Readable;
  signal?: AbortSignal;
  /** Milliseconds to wait for response headers; 0 = no limit (uploads: the server answers after the last byte). */
  headersTimeout?: number;
  /** Milliseconds the body may stay idle; 0 = no limit. */
  bodyTimeout?: number;
}

/** The envelope of every Incus API answer. */
interface Envelope {
  type: "sync" | "async" | "error";
  status_code?: number;
  error_code?: number;
  error?: string;
  operation?: string;
  metadata?: unknown;
}

/** A response to a raw request, with its status, headers and an unread body stream. */
export type RawResponse = Dispatcher.ResponseData;

/** Default limits for ordinary calls: generous, but a hung daemon still ends in an error. */
const DEFAULT_HEADERS_TIMEOUT = 120_000;
const DEFAULT_BODY_TIMEOUT = 120_000;

/**
 * A client for one Incus server. Resource modules (instances.ts, storage_volumes.ts, ...) are
 * plain functions taking it as their first argument, named like the methods of Incus's Go client.
 */
export class IncusClient {
  readonly socketPath: string;
  private readonly agent: Agent;
  private serverCache: Promise<ServerInfo> | undefined;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
    // Timeouts are set per request instead: transfers and operation waits need other limits.
    this.agent = new AgentClass({ connect: { socketPath }, headersTimeout: 0, bodyTimeout: 0 });
  }

  /** Closes idle connections so the process can exit. */
  async close(): Promise<void> {
    await this.agent.close();
  }

  /** GET returning the sync answer's metadata. */
  async get<T>(path: string, what: string, options: RequestOptions = {}): Promise<T> {
    const env = await this.call("GET", path, what, options);
    return env.metadata as T;
  }

  /** GET of a collection; some servers answer an empty one with null. */
  async list<T>(path: string, what: string, options: RequestOptions = {}): Promise<T[]> {
    return (await this.get<T[] | null>(path, what, options)) ?? [];
  }

  /** A call answered synchronously; returns its metadata. */
  async sync<T>(method: string, path: string, what: string, options: RequestOptions = {}): Promise<T> {
    const env = await this.call(method, path, what, options);
    if (env.type === "async") {
      // Some endpoints answer async on some servers; wait so callers see one behaviour.
      const op = new Operation(this, env.metadata as OperationData, what);
      const done = await op.wait(options.signal === undefined ? {} : { signal: options.signal });
      return done.metadata as T;
    }
    return env.metadata as T;
  }

  /** A call answered with a background operation (HTTP 202). */
  async operation(method: string, path: string, what: string, options: RequestOptions = {}): Promise<Operation> {
    const env = await this.call(method, path, what, options);
    return this.operationFrom(env, what);
  }

  /** Turns an async envelope (from call or from a raw upload) into an Operation. */
  operationFrom(env: unknown, what: string): Operation {
    const e = env as Envelope;
    if (e.type !== "async" || typeof e.metadata !== "object" || e.metadata === null) {
      throw new IncusError(`${what}: expected a background operation, got a "${e.type}" answer`);
    }
    return new Operation(this, e.metadata as OperationData, what);
  }

  /** Any JSON call; returns the parsed envelope, throwing typed errors for error answers. */
  async call(method: string, path: string, what: string, options: RequestOptions = {}): Promise<Envelope> {
    const headers: Record<string, string> = { ...options.headers };
    let body: string | undefined;
    if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers["content-type"] = "application/json";
    }
    const res = await this.raw(method, path, what, {
      ...(options.query === undefined ? {} : { query: options.query }),
      headers,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
      headersTimeout: DEFAULT_HEADERS_TIMEOUT,
      bodyTimeout: DEFAULT_BODY_TIMEOUT,
    }, body);
    return readEnvelope(res, what);
  }

  /**
   * A request whose body is streamed or whose answer is not JSON (downloads). The caller owns
   * the response body and must consume or destroy it. Error answers are turned into typed errors.
   */
  async raw(
    method: string,
    path: string,
    what: string,
    options: RawRequestOptions = {},
    textBody?: string,
  ): Promise<RawResponse> {
    let res: RawResponse;
    try {
      res = await dispatcherRequest.call(this.agent, {
        origin: "http://incus",
        path: `${path}${queryString(options.query)}`,
        method: method as Dispatcher.HttpMethod,
        headers: { "user-agent": "incus-backup", ...options.headers },
        body: textBody ?? options.body ?? null,
        signal: options.signal ?? null,
        headersTimeout: options.headersTimeout ?? DEFAULT_HEADERS_TIMEOUT,
        bodyTimeout: options.bodyTimeout ?? DEFAULT_BODY_TIMEOUT,
      });
    } catch (err) {
      throw this.translateTransportError(err, what, options.signal);
    }
    if (res.statusCode >= 400) {
      const env = await readEnvelope(res, what).catch((e: unknown) => e);
      if (env instanceof Error) throw env;
      throw errorFromResponse(what, res.statusCode, `HTTP ${res.statusCode}`);
    }
    return res;
  }

  /**
   * A transfer of a backup file (a GET, a POST whose answer is the data, or an upload in
   * options.body): on a connection of its own through the lean client of bulk.ts, which costs a
   * fraction of undici's CPU per byte. The caller owns the answer's body. Error answers are
   * turned into typed errors, as by raw().
   */
  async bulk(method: "GET" | "POST", path: string, what: string, options: RawRequestOptions = {}, textBody?: string): Promise<BulkResponse> {
    let res: BulkResponse;
    try {
      res = await bulkRequest(this.socketPath, {
        method,
        path: `${path}${queryString(options.query)}`,
        headers: options.headers ?? {},
        ...(textBody === undefined ? {} : { body: textBody }),
        ...(options.body === undefined ? {} : { upload: options.body }),
        ...(options.signal === undefined ? {} : { signal: options.signal }),
        headersTimeout: options.headersTimeout ?? DEFAULT_HEADERS_TIMEOUT,
        bodyTimeout: options.bodyTimeout ?? DEFAULT_BODY_TIMEOUT,
      });
    } catch (err) {
      throw this.translateTransportError(err, what, options.signal);
    }
    if (res.statusCode >= 400) {
      const text = await readText(res.body).catch(() => "");
      throw envelopeError(res.statusCode, text, what) ?? errorFromResponse(what, res.statusCode, `HTTP ${res.statusCode}`);
    }
    return res;
  }

  /** Server information (GET /1.0), fetched once per client. */
  server(signal?: AbortSignal): Promise<ServerInfo> {
    this.serverCache ??= this.get<ServerInfo>("/1.0", "Get server", signal === undefined ? {} : { signal });
    this.serverCache.catch(() => (this.serverCache = undefined));
    return this.serverCache;
  }

  private translateTransportError(err: unknown, what: string, signal: AbortSignal | undefined): Error {
    if (signal?.aborted) return new InterruptedError();
    const code = transportCode(err);
    if (code === "ENOENT" || code === "ENOTDIR") return new IncusSocketError(this.socketPath, "missing", err);
    if (code === "EACCES" || code === "EPERM") return new IncusSocketError(this.socketPath, "forbidden", err);
    if (code === "ECONNREFUSED" || code === "ENOTSOCK") return new IncusSocketError(this.socketPath, "unreachable", err);
    const broken = brokenConnection(err);
    if (broken) return new IncusError(`${what}: ${broken}`, { cause: err });
    const message = err instanceof Error ? err.message : String(err);
    return new IncusError(`${what}: ${message}`, { cause: err });
  }
}

/** The subset of GET /1.0 the tool uses. */
export interface ServerInfo {
  api_extensions?: string[];
  api_version?: string;
  auth?: string;
  config?: Record<string, unknown>;
  environment?: {
    server_name?: string;
    server_version?: string;
    server_clustered?: boolean;
    /** The server's (a cluster's: the cluster's) certificate: what names it across renames. */
    certificate_fingerprint?: string;
    kernel_version?: string;
    storage?: string;
    architectures?: string[];
    [key: string]: unknown;
  };
}

async function readEnvelope(res: RawResponse, what: string): Promise<Envelope> {
  const text = await res.body.text();
  const err = envelopeError(res.statusCode, text, what);
  if (err) throw err;
  return JSON.parse(text) as Envelope;
}

/** The error an answer stands for (an error envelope, an error status, or not JSON); undefined if none. */
function envelopeError(statusCode: number, text: string, what: string): IncusError | undefined {
  let env: Envelope;
  try {
    env = JSON.parse(text) as Envelope;
  } catch {
    const snippet = text.trim().slice(0, 200) || `HTTP ${statusCode}`;
    if (statusCode >= 400) return errorFromResponse(what, statusCode, snippet);
    return new IncusError(`${what}: the server sent a reply that is not JSON: ${snippet}`);
  }
  if (env.type === "error" || statusCode >= 400) {
    const status = env.error_code ?? statusCode;
    return errorFromResponse(what, status, env.error ?? `HTTP ${statusCode}`);
  }
  return undefined;
}

/** A small body as text (an answer in JSON; at most 1 MiB is kept). */
export async function readText(body: AsyncIterable<Buffer>): Promise<string> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const b of body) {
    if (n < 1 << 20) parts.push(b);
    n += b.length;
  }
  return Buffer.concat(parts).toString("utf8");
}

function queryString(query: Query | undefined): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined) continue;
    params.set(key, String(value));
  }
  const s = params.toString();
  return s ? `?${s}` : "";
}

/** The errno-like code of a connection error, looking through undici's wrapping. */
function transportCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && !code.startsWith("UND_ERR")) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * A connection Incus closed in the middle of a request or a transfer (a daemon restart or stop), in
 * words a user can act on; undefined for other errors. undici alone says "other side closed".
 */
export function brokenConnection(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; depth < 4 && e; depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === "UND_ERR_SOCKET" || code === "ECONNRESET" || code === "EPIPE") {
      return `Incus closed the connection (${(e as Error).message}); did the daemon restart or stop?`;
    }
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Escapes one path segment of an API URL. */
export function seg(value: string): string {
  return encodeURIComponent(value);
}

/** The `signal` field of an options object, or nothing: keeps exactOptionalPropertyTypes happy. */
export function signalOf(opts: { signal?: AbortSignal | undefined }): { signal?: AbortSignal } {
  return opts.signal === undefined ? {} : { signal: opts.signal };
}
