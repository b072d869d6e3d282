// The tool's error kinds and the one table that maps them to process exit codes.

/**
 * Exit codes, documented in the README. Scripts and cron wrappers rely on them, so a code never
 * changes meaning once released.
 */
export const ExitCode = {
  /** Everything asked for was done. */
  OK: 0,
  /** A failure that has no more specific code (including bugs). */
  Failure: 1,
  /** Bad command line: unknown flag, conflicting selectors, invalid name or version syntax. */
  Usage: 2,
  /** Some items succeeded and some failed; the summary names them. */
  Partial: 3,
  /** The Incus socket is missing, refuses connections, or denies access. */
  IncusUnavailable: 4,
  /** An item, version or fingerprint that is not there (in the repository or in Incus). */
  NotFound: 5,
  /** A destructive action was not confirmed (answer "no", or no TTY and no --force). */
  NotConfirmed: 6,
  /** The repository is locked by another run. */
  Locked: 7,
  /** The backup directory is missing, not writable, full, or not an incus-backup repository. */
  Repository: 8,
  /** A backup file does not match its manifest (size or sha256), or cannot be read back. */
  Integrity: 9,
  /** `status` only: the last backup run failed, was partial or interrupted, or died. */
  LastRunFailed: 10,
  /** `status` only: no successful run since a scheduled time that is past its grace period. */
  Overdue: 11,
  /** `status` only: the service stopped, its process is gone, or it never started on this repository. */
  ServiceNotRunning: 12,
  /** `status` only: the last restore drill of an item failed (`incus-backup drill`). */
  DrillFailed: 13,
  /** Interrupted by SIGINT or SIGTERM. */
  Interrupted: 130,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error the user can act on: its message is printed as one line, without a stack trace. */
export class AppError extends Error {
  readonly exitCode: ExitCodeValue;
  /** A second line telling the user what to do about it. */
  readonly hint: string | undefined;

  constructor(message: string, exitCode: ExitCodeValue, options?: { hint?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.exitCode = exitCode;
    this.hint = options?.hint;
  }
}

export class UsageError extends AppError {
  constructor(message: string, options?: { hint?: string }) {
    super(message, ExitCode.Usage, options);
  }
}

export class NotFoundError extends AppError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, ExitCode.NotFound, options);
  }
}

export class NotConfirmedError extends AppError {
  constructor(message: string, options?: { hint?: string }) {
    super(message, ExitCode.NotConfirmed, options);
  }
}

export class RepositoryError extends AppError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, ExitCode.Repository, options);
  }
}

export class IntegrityError extends AppError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super(message, ExitCode.Integrity, options);
  }
}

export class LockedError extends AppError {
  constructor(message: string, options?: { hint?: string }) {
    super(message, ExitCode.Locked, options);
  }
}

/** The lock this run held was taken over or removed: the run stops before its next write. */
export class LockLostError extends LockedError {}

/** Raised when the run was interrupted through its AbortSignal (Ctrl-C, SIGTERM, SIGPWR). */
export class InterruptedError extends AppError {
  constructor(message = "interrupted") {
    super(message, ExitCode.Interrupted);
  }
}

/** Throws InterruptedError if the signal has fired; call between steps of long work. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new InterruptedError();
}

/** The message of anything thrown, for logs and summaries. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Errors of the repository's disk rather than of the item: a full or read-only disk, a quota. */
const DISK_ERRORS = new Set(["ENOSPC", "EDQUOT", "EROFS", "EIO"]);

/**
 * The exit code an error deserves on its own: the tool's errors carry theirs; a disk error that
 * reached here unwrapped (a write to a backup file) is a repository problem; anything else fails.
 */
export function exitCodeOf(err: unknown): ExitCodeValue {
  if (err instanceof AppError) return err.exitCode;
  for (let e: unknown = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && DISK_ERRORS.has(code)) return ExitCode.Repository;
  }
  return ExitCode.Failure;
}

/**
 * The exit code of a run of several items: 0 if none failed, 3 if some did, and if all failed,
 * the code they share (a full disk: 8, corrupt backups: 9), or 1.
 */
export function runExitCode(results: ReadonlyArray<{ ok: boolean; exitCode?: ExitCodeValue }>, extraFailures = 0, extraOk = 0): ExitCodeValue {
  const failed = results.filter((r) => !r.ok);
  if (failed.length + extraFailures === 0) return ExitCode.OK;
  if (results.length - failed.length + extraOk > 0) return ExitCode.Partial;
  const codes = new Set(failed.map((f) => f.exitCode ?? ExitCode.Failure));
  return codes.size === 1 && extraFailures === 0 ? [...codes][0]! : ExitCode.Failure;
}
