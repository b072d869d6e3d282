// Notifications: POST a run's summary as JSON to the configured URL; a failure to notify never fails the run.

import { errorMessage } from "../errors";
import { redactUrl } from "../core/settings";

export interface NotifyOptions {
  /** Stops the request when the daemon stops. */
  signal?: AbortSignal;
  /** Gives up after this long (default 15 s): a hanging receiver must not hold up the schedule. */
  timeoutMs?: number;
  userAgent?: string;
  /** Injected in tests; the global fetch (undici) otherwise. */
  fetch?: typeof fetch;
}

/**
 * POSTs `payload` as JSON. Resolves when the receiver answered 2xx; otherwise throws an Error
 * whose message names the receiver by scheme and host only (the path and query of a webhook URL
 * are often its secret).
 */
export async function postJson(url: string, payload: unknown, opts: NotifyOptions = {}): Promise<void> {
  const signals = [AbortSignal.timeout(opts.timeoutMs ?? 15_000)];
  if (opts.signal) signals.push(opts.signal);
  const doFetch = opts.fetch ?? fetch;
  const where = redactUrl(url);
  let res: Response;
  try {
    res = await doFetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "user-agent": opts.userAgent ?? "incus-backup" },
      body: JSON.stringify(payload),
      signal: AbortSignal.any(signals),
    });
  } catch (err) {
    throw new Error(`cannot reach ${where}: ${describeFetchError(err)}`);
  }
  // The body is not needed; reading it frees the connection.
  await res.arrayBuffer().catch(() => undefined);
  if (!res.ok) throw new Error(`${where} answered HTTP ${res.status}`);
}

function describeFetchError(err: unknown): string {
  const e = err as { name?: string; cause?: { code?: string; message?: string } };
  if (e.name === "TimeoutError") return "no answer in time";
  if (e.name === "AbortError") return "stopped";
  // undici puts the useful part (ECONNREFUSED, ENOTFOUND ...) in the cause; its message may
  // contain the address, which is fine, but never the URL's path.
  if (e.cause?.code) return e.cause.code;
  if (e.cause?.message) return e.cause.message;
  return errorMessage(err);
}
