// Stopping and starting instances the careful way: a clean stop with a bounded wait, then force.

import { InterruptedError } from "../errors";
import type { IncusClient } from "../incus/client";
import { getInstance, updateInstanceState } from "../incus/instances";
import { Operation, getRunningTasks } from "../incus/operations";

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

/** How long a run waits for what the server is still doing on an instance (after a dead or failed run). */
const SETTLE_MS = 5 * 60_000;

/**
 * Waits for the server's tasks on these instances or volumes to end. A run killed (or cut off)
 * while it waited for an import, a stop, a backup or a copy leaves the server doing it; deciding
 * before it ends would, say, start an instance that is still stopping or being backed up, or miss
 * an import that creates the temporary copy a moment later.
 */
export async function waitForServerTasks(c: IncusClient, names: string[]): Promise<void> {
  const touches = (op: { resources?: Record<string, string[]> | null }) =>
    Object.values(op.resources ?? {})
      .flat()
      .some((url) => names.includes(decodeURIComponent(url.split("?")[0]!.split("/").pop() ?? "")));
  const deadline = Date.now() + SETTLE_MS;
  for (const data of (await getRunningTasks(c)).filter(touches)) {
    const op = new Operation(c, data, `wait for the server: ${data.description}`);
    // Its outcome does not matter here (an upload cut off fails): only that it is over.
    await op.wait({ signal: AbortSignal.timeout(Math.max(1000, deadline - Date.now())) }).catch(() => undefined);
  }
}
