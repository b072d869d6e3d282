// Cron schedules in a time zone: the next run, and whether a run was missed while nothing ran.

import { CronExpressionParser, type CronExpression } from "cron-parser";
import { UsageError } from "../errors";
import { checkTimeZone } from "./retention";

export interface Schedule {
  /** The cron expression as given. */
  expression: string;
  /** IANA time zone the expression is read in. */
  tz: string;
  /** The first scheduled time strictly after `after`. */
  next(after: Date): Date;
  /** The last scheduled time strictly before `before`, if there is one. */
  prev(before: Date): Date | undefined;
}

/**
 * Parses a cron expression (5 fields, or 6 with seconds first, or @daily and the like) read in
 * the time zone `tz`: "0 3 * * *" is 03:00 wall-clock time there, on summer and winter time
 * alike. A time that a DST change skips runs at the same wall-clock time after the jump; a
 * repeated one runs once. Throws a UsageError naming `what` (the setting) when it is invalid.
 */
export function parseSchedule(expression: string, tz: string, what = "schedule"): Schedule {
  const zone = checkTimeZone(tz);
  const text = expression.trim();
  if (text === "") throw new UsageError(`${what} is empty: give a cron expression such as "0 3 * * *"`);
  const parse = (currentDate: Date): CronExpression => CronExpressionParser.parse(text, { currentDate, tz: zone });
  try {
    // An expression that never fires ("0 0 30 2 *") fails here rather than in the daemon.
    parse(new Date(Date.UTC(2000, 0, 1))).next();
  } catch (err) {
    throw new UsageError(`${what} ${JSON.stringify(expression)} is not a valid cron expression: ${(err as Error).message}`);
  }
  return {
    expression: text,
    tz: zone,
    next: (after) => parse(after).next().toDate(),
    prev: (before) => {
      try {
        return parse(before).prev().toDate();
      } catch {
        return undefined;
      }
    },
  };
}

/**
 * The scheduled time to catch up on at start-up, like anacron: the latest scheduled time after
 * `coveredUntil` (up to when the daemon ran, or finished its last run) and before `now`, if
 * any. Only one run catches up, however many were missed. With no record at all (a first
 * start) nothing was missed.
 */
export function missedRun(schedule: Schedule, coveredUntil: Date | undefined, now: Date): Date | undefined {
  if (coveredUntil === undefined) return undefined;
  const last = schedule.prev(now);
  return last !== undefined && last.getTime() > coveredUntil.getTime() ? last : undefined;
}
