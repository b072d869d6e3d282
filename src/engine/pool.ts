import { availableParallelism } from "node:os";

// A bounded pool: runs a task per item with at most N at a time, and starts no new task once aborted.

export async function runPool<T>(
  items: readonly T[],
  concurrency: number,
  signal: AbortSignal,
  task: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length && !signal.aborted) {
      const item = items[next++]!;
      await task(item);
    }
  };
  const n = Math.max(1, Math.min(concurrency, items.length));
  await Promise.all(Array.from({ length: n }, worker));
}

/**
 * Items worked on at once unless told otherwise: one per CPU, at most 4. Backups and restores
 * are mostly compression and copying on the server; more than that only makes them contend.
 */
export function defaultParallel(cpus = availableParallelism()): number {
  return Math.max(1, Math.min(4, cpus));
}
