// Background operations: wait in bounded steps, read progress, detect failure from the body, cancel.

import { InterruptedError } from "../errors";
/**
 * What an operation needs of the client (client.ts's IncusClient has it): two calls, named here
 * so that this module and the client do not import each other.
 */
export interface OperationClient {
  get<T>(path: string, what: string, options?: { query?: Record<string, string | number | boolean | undefined>; signal?: AbortSignal }): Promise<T>;
  list<T>(path: string, what: string, options?: { query?: Record<string, string | number | boolean | undefined>; signal?: AbortSignal }): Promise<T[]>;
  call(method: string, path: string, what: string): Promise<unknown>;
}
import { IncusError, IncusNotFoundError, IncusOperationError, IncusSocketError, errorFromResponse } from "./errors";

/** An Incus operation as the API returns it. */
export interface OperationData {
  id: string;
  class: string;
  description: string;
  status: string;
  status_code: number;
  metadata: Record<string, unknown> | null;
  err: string;
  may_cancel: boolean;
  resources?: Record<string, string[]> | null;
}

export interface WaitOptions {
  signal?: AbortSignal;
  /** Called with the operation's metadata each time a wait step returns (about once a second). */
  onProgress?: (metadata: Record<string, unknown>) => void;
  /** Seconds each wait request may block on the server. */
  stepSeconds?: number;
}

const SUCCESS = 200;
const FAILURE = 400;
const CANCELLED = 401;

/** A background operation started by a call that answered 202. */
export class Operation {
  readonly id: string;
  private last: OperationData;

  constructor(
    private readonly client: OperationClient,
    data: OperationData,
    private readonly what: string,
  ) {
    this.id = data.id;
    this.last = data;
  }

  /** The latest state seen. */
  get data(): OperationData {
    return this.last;
  }

  /**
   * Waits until the operation ends. Each step is a server-side wait of a few seconds, so no HTTP
   * timeout can cut a long operation short. Incus 6.0 answers a wait with HTTP 200 whatever the
   * outcome, so the outcome is read from the body. Throws IncusOperationError on failure and
   * InterruptedError (after asking the server to cancel, if it can) when the signal fires.
   */
  async wait(options: WaitOptions = {}): Promise<OperationData> {
    const step = options.stepSeconds ?? (options.onProgress ? 1 : 20);
    for (;;) {
      if (options.signal?.aborted) {
        await this.cancel().catch(() => undefined);
        throw new InterruptedError();
      }
      let data: OperationData;
      try {
        data = await this.waitStep(step, options.signal);
      } catch (err) {
        if (err instanceof InterruptedError) {
          await this.cancel().catch(() => undefined);
        }
        throw err;
      }
      this.last = data;
      if (options.onProgress && data.metadata) options.onProgress(data.metadata);
      if (data.status_code >= SUCCESS) return this.outcome(data);
    }
  }

  /**
   * One bounded wait. Incus 6.0 answers a wait with an error body instead of the operation when
   * the operation failed (with the failure's text, and HTTP 404 if that text says "not found") or
   * when the wait timed out with the operation still running ("context deadline exceeded"). Either
   * way the operation itself is then read, for its status, error and progress; if it is already
   * forgotten, the wait's error (which carries the server's text) is the answer.
   */
  private async waitStep(step: number, signal: AbortSignal | undefined): Promise<OperationData> {
    const path = `/1.0/operations/${encodeURIComponent(this.id)}`;
    const opts = signal === undefined ? {} : { signal };
    try {
      return await this.client.get<OperationData>(`${path}/wait`, this.what, { query: { timeout: step }, ...opts });
    } catch (err) {
      if (!(err instanceof IncusError) || err instanceof IncusSocketError) throw err;
      try {
        return await this.client.get<OperationData>(path, this.what, opts);
      } catch (readErr) {
        // Finished operations are forgotten a few seconds after they end.
        if (readErr instanceof IncusNotFoundError) throw err;
        throw readErr;
      }
    }
  }

  /** Asks the server to cancel the operation; only some operations can be cancelled. */
  async cancel(): Promise<void> {
    if (!this.last.may_cancel) return;
    await this.client.call("DELETE", `/1.0/operations/${encodeURIComponent(this.id)}`, `Cancel ${this.what}`);
  }

  private outcome(data: OperationData): OperationData {
    if (data.status_code === SUCCESS) return data;
    const serverMessage = data.err || data.status || "unknown error";
    if (data.status_code === CANCELLED) {
      throw new IncusOperationError(`${this.what}: cancelled: ${serverMessage}`, serverMessage, this.id, CANCELLED);
    }
    // Reuse the classification of API errors ("already exists", ...) but keep the operation id.
    const typed = errorFromResponse(this.what, data.status_code === FAILURE ? 0 : data.status_code, serverMessage);
    if (typed.constructor !== IncusError) throw typed;
    throw new IncusOperationError(`${this.what}: ${serverMessage}`, serverMessage, this.id, data.status_code);
  }
}

/** A short human text for an operation's progress metadata, if it carries any. */
export function progressText(metadata: Record<string, unknown>): string | undefined {
  const progress = metadata.progress as { stage?: string; percent?: string; speed?: string } | undefined;
  if (progress && typeof progress === "object") {
    return [progress.stage, progress.percent && `${progress.percent}%`, progress.speed].filter(Boolean).join(" ");
  }
  for (const [key, value] of Object.entries(metadata)) {
    if (key.endsWith("_progress") && typeof value === "string") return value;
  }
  return undefined;
}

/**
 * Background tasks the server is still running, in all projects: what a client that died left
 * going (an import, a stop, a copy). Tokens and websockets are not tasks and are left out.
 */
export async function getRunningTasks(c: OperationClient, opts: { signal?: AbortSignal } = {}): Promise<OperationData[]> {
  const byStatus = await c.get<Record<string, OperationData[] | null> | null>("/1.0/operations", "List operations", {
    query: { recursion: 1, "all-projects": true },
    ...opts,
  });
  return Object.values(byStatus ?? {})
    .flatMap((ops) => ops ?? [])
    .filter((op) => op.class === "task" && op.status_code < SUCCESS);
}
