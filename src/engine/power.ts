// Stopping and starting instances the careful way: a clean stop with a bounded wait, then force.

import { InterruptedError } from "../errors";
import type { IncusClient } from "../incus/client";
import { getInstance, updateInstanceState } from "../incus/instances";

/** Seconds an instance gets to shut down cleanly before it is stopped by force. */
export const DEFAULT_STOP_TIMEOUT = 60;

export async function stopInstance(
  c: IncusClient,
  project: string,
  name: string,
  options: { timeout?: number; signal?: AbortSignal } = {},
): Promise<{ forced: boolean }> {
  const signal = options.signal === undefined ? {} : { signal: options.signal };
  try {
    await updateInstanceState(c, project, name, { action: "stop", timeout: options.timeout ?? DEFAULT_STOP_TIMEOUT }, signal);
    return { forced: false };
  } catch (err) {
    if (err instanceof InterruptedError) throw err;
    // The clean stop failed or timed out; it may also have raced with a stop from elsewhere.
    const now = await getInstance(c, project, name, signal);
    if (now.status === "Stopped") return { forced: false };
    await updateInstanceState(c, project, name, { action: "stop", force: true }, signal);
    return { forced: true };
  }
}

export async function startInstance(c: IncusClient, project: string, name: string, signal?: AbortSignal): Promise<void> {
  await updateInstanceState(c, project, name, { action: "start" }, signal === undefined ? {} : { signal });
}
