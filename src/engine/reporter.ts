// How engines report progress without printing: the CLI renders these events for a TTY or a log.

import type { ItemKey } from "../core/selection";

export type ItemOutcome =
  | { ok: true; bytes?: number; seconds: number; note?: string }
  | { ok: false; error: string; seconds: number };

export interface Reporter {
  /** How much work is ahead: the number of items and, when it can be estimated, the bytes. */
  plan?(items: number, bytes: number | undefined): void;
  /** Work on an item began. */
  itemStart(item: ItemKey): void;
  /** A step of an item's work ("creating server-side backup", "importing", ...). */
  itemStep(item: ItemKey, text: string): void;
  /** Bytes moved for an item so far, and the total when known. */
  itemBytes(item: ItemKey, done: number, total: number | undefined): void;
  itemDone(item: ItemKey, outcome: ItemOutcome): void;
  /** Work on an item ended in an error that the caller reports itself (one line, at the end): forget it without a line of its own. */
  itemDrop?(item: ItemKey): void;
  /** A notice worth a line of its own. */
  info(text: string): void;
  warn(text: string): void;
}

/** A reporter that drops everything (tests, library use). */
export const silentReporter: Reporter = {
  itemStart() {},
  itemStep() {},
  itemBytes() {},
  itemDone() {},
  info() {},
  warn() {},
};
