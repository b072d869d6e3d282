// Renders engine events on stderr: live lines on a TTY, one plain line per item otherwise.

import type { ItemKey } from "../core/selection";
import { itemId, itemLabel } from "../core/selection";
import type { ItemOutcome, Reporter } from "../engine/reporter";
import { formatBytes, formatDuration } from "./format";
import type { CliContext } from "./context";

interface Active {
  label: string;
  step: string;
  done: number;
  total: number | undefined;
  started: number;
  lastBytes: number;
  lastTime: number;
  rate: number;
}

/** Picks the renderer: live progress only when stderr is a terminal. */
export function reporterFor(ctx: CliContext, verb: string): Reporter {
  if (ctx.env.INCUS_BACKUP_DEBUG) return new LineReporter(ctx, verb, true);
  return ctx.stderr.isTTY ? new TtyReporter(ctx, verb) : new LineReporter(ctx, verb);
}

/** For cron, `incus exec` without a terminal, CI: quiet, one line per finished item. */
export class LineReporter implements Reporter {
  private readonly t0 = Date.now();
  constructor(
    private readonly ctx: CliContext,
    private readonly verb: string,
    /** INCUS_BACKUP_DEBUG: also every step, with the time since the start. */
    private readonly steps = false,
  ) {}
  itemStart(item: ItemKey): void {
    this.step(item, "start");
  }
  itemStep(item: ItemKey, text: string): void {
    this.step(item, text);
  }
  private step(item: ItemKey, text: string): void {
    if (this.steps) this.ctx.stderr.write(`[+${((Date.now() - this.t0) / 1000).toFixed(2)}s] ${itemLabel(item)}: ${text}\n`);
  }
  itemBytes(): void {}
  itemDone(item: ItemKey, o: ItemOutcome): void {
    this.ctx.stderr.write(outcomeLine(this.verb, item, o) + "\n");
  }
  info(text: string): void {
    this.ctx.stderr.write(`${text}\n`);
  }
  warn(text: string): void {
    this.ctx.stderr.write(`warning: ${text}\n`);
  }
}

/** Live lines for the items in progress and one for the whole run, redrawn at most ten times a second. */
export class TtyReporter implements Reporter {
  private readonly active = new Map<string, Active>();
  private drawn = 0;
  private timer: NodeJS.Timeout | undefined;
  private totalItems = 0;
  private totalBytes: number | undefined;
  private doneItems = 0;
  private doneBytes = 0;
  private readonly started = Date.now();

  plan(items: number, bytes: number | undefined): void {
    this.totalItems = items;
    this.totalBytes = bytes;
  }

  constructor(
    private readonly ctx: CliContext,
    private readonly verb: string,
  ) {}

  itemStart(item: ItemKey): void {
    const now = Date.now();
    this.active.set(itemId(item), { label: itemLabel(item), step: "starting", done: 0, total: undefined, started: now, lastBytes: 0, lastTime: now, rate: 0 });
    this.schedule();
  }

  itemStep(item: ItemKey, text: string): void {
    const a = this.active.get(itemId(item));
    if (a) a.step = text;
    this.schedule();
  }

  itemBytes(item: ItemKey, done: number, total: number | undefined): void {
    const a = this.active.get(itemId(item));
    if (!a) return;
    const now = Date.now();
    if (now - a.lastTime >= 500) {
      a.rate = ((done - a.lastBytes) * 1000) / (now - a.lastTime);
      a.lastBytes = done;
      a.lastTime = now;
    }
    a.done = done;
    a.total = total;
    this.schedule();
  }

  itemDone(item: ItemKey, o: ItemOutcome): void {
    this.active.delete(itemId(item));
    this.doneItems++;
    if (o.ok) this.doneBytes += o.bytes ?? 0;
    this.print(outcomeLine(this.verb, item, o));
  }

  itemDrop(item: ItemKey): void {
    this.active.delete(itemId(item));
    this.clear();
    this.draw();
  }

  info(text: string): void {
    this.print(text);
  }

  warn(text: string): void {
    this.print(`warning: ${text}`);
  }

  /** Prints a permanent line above the live block. */
  private print(line: string): void {
    this.clear();
    this.ctx.stderr.write(line + "\n");
    this.draw();
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.clear();
      this.draw();
    }, 100);
    this.timer.unref();
  }

  private clear(): void {
    if (this.drawn > 0) this.ctx.stderr.write(`\x1b[${this.drawn}F\x1b[J`);
    this.drawn = 0;
  }

  /** "2/5 items, 1.2 GiB, 85 MiB/s, about 1m10s left". */
  private summaryLine(): string | undefined {
    if (this.totalItems < 2 || this.active.size === 0) return undefined;
    const moving = [...this.active.values()].reduce((n, a) => n + a.done, 0);
    const bytes = this.doneBytes + moving;
    const seconds = (Date.now() - this.started) / 1000;
    const rate = seconds > 1 ? bytes / seconds : 0;
    let eta = "";
    if (this.totalBytes !== undefined && rate > 0 && this.totalBytes > bytes) {
      eta = `, about ${formatDuration((this.totalBytes - bytes) / rate)} left`;
    }
    return `${this.verb}: ${this.doneItems}/${this.totalItems} items, ${formatBytes(bytes)}${rate > 0 ? `, ${formatBytes(rate)}/s` : ""}${eta}`;
  }

  private draw(): void {
    const width = Math.max(40, (this.ctx.stderr.columns ?? 100) - 1);
    const summary = this.summaryLine();
    if (summary) {
      this.ctx.stderr.write(summary.slice(0, width) + "\n");
      this.drawn++;
    }
    for (const a of this.active.values()) {
      const elapsed = formatDuration((Date.now() - a.started) / 1000);
      let bytes = "";
      if (a.done > 0) {
        const pct = a.total ? ` ${Math.floor((a.done / a.total) * 100)}%` : "";
        const rate = a.rate > 0 ? ` ${formatBytes(a.rate)}/s` : "";
        bytes = ` ${formatBytes(a.done)}${a.total ? `/${formatBytes(a.total)}` : ""}${pct}${rate}`;
      }
      const line = `${a.label}: ${a.step}${bytes} [${elapsed}]`;
      this.ctx.stderr.write(line.slice(0, width) + "\n");
      this.drawn++;
    }
  }
}

export function outcomeLine(verb: string, item: ItemKey, o: ItemOutcome): string {
  if (o.ok) {
    const size = o.bytes === undefined ? "" : ` ${formatBytes(o.bytes)}`;
    return `${verb} ok: ${itemLabel(item)}${size} in ${formatDuration(o.seconds)}${o.note ? ` (${o.note})` : ""}`;
  }
  return `${verb} FAILED: ${itemLabel(item)}: ${o.error}`;
}
