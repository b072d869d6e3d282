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

/** At most `size` holders at a time; the others wait in line. */
export class Semaphore {
  private held = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly size: number) {}

  async use<T>(fn: () => Promise<T>): Promise<T> {
    if (this.held >= this.size) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.held++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next in line, so `held` stays the same.
      if (next) next();
      else this.held--;
    }
  }
}
