// Typed errors for everything that can go wrong talking to Incus; each keeps the server's text.

import { AppError, ExitCode, type ExitCodeValue } from "../errors";

/** Any error reported by Incus or met on the way to it. */
export class IncusError extends AppError {
  /** HTTP-like status from the server (error_code or operation status_code), 0 if none. */
  readonly status: number;
  /** The server's own error text, unchanged. */
  readonly serverMessage: string;

  constructor(
    message: string,
    options: { status?: number; serverMessage?: string; exitCode?: ExitCodeValue; hint?: string; cause?: unknown } = {},
  ) {
    super(message, options.exitCode ?? ExitCode.Failure, options);
    this.status = options.status ?? 0;
    this.serverMessage = options.serverMessage ?? message;
  }
}

/** The object asked for does not exist (HTTP 404). */
export class IncusNotFoundError extends IncusError {
  constructor(message: string, serverMessage: string) {
    super(message, { status: 404, serverMessage, exitCode: ExitCode.NotFound });
  }
}

/** The object to create exists already (HTTP 409, or an import that met an existing name). */
export class IncusAlreadyExistsError extends IncusError {
  constructor(message: string, serverMessage: string, status = 409) {
    super(message, { status, serverMessage });
  }
}

/** The server refused the request for lack of permission (HTTP 403). */
export class IncusForbiddenError extends IncusError {
  constructor(message: string, serverMessage: string) {
    super(message, { status: 403, serverMessage, exitCode: ExitCode.IncusUnavailable });
  }
}

export type SocketProblem = "missing" | "forbidden" | "unreachable";

/** The unix socket could not be used at all; the message names the path that was tried. */
export class IncusSocketError extends IncusError {
  readonly socketPath: string;
  readonly problem: SocketProblem;

  constructor(socketPath: string, problem: SocketProblem, cause?: unknown) {
    const text = {
      missing: `Incus socket ${socketPath} does not exist`,
      forbidden: `permission denied on Incus socket ${socketPath}`,
      unreachable: `Incus is not answering on socket ${socketPath}`,
    }[problem];
    const hint = {
      missing: "Is Incus running? Pass --socket PATH or set INCUS_SOCKET if it lives elsewhere.",
      forbidden: "Run as root or as a member of the incus-admin group.",
      unreachable: "Is the Incus daemon running? Check its log.",
    }[problem];
    super(text, { exitCode: ExitCode.IncusUnavailable, hint, cause });
    this.socketPath = socketPath;
    this.problem = problem;
  }
}

/** A background operation ended in failure or was cancelled; the message is the server's. */
export class IncusOperationError extends IncusError {
  readonly operationId: string;

  constructor(message: string, serverMessage: string, operationId: string, status: number) {
    super(message, { status, serverMessage });
    this.operationId = operationId;
  }
}

/** Builds the right error class for an error answer of the API. */
export function errorFromResponse(what: string, status: number, serverMessage: string): IncusError {
  const message = `${what}: ${serverMessage}`;
  if (status === 404) return new IncusNotFoundError(message, serverMessage);
  if (status === 403) return new IncusForbiddenError(message, serverMessage);
  if (status === 409 || /already exists/i.test(serverMessage)) {
    return new IncusAlreadyExistsError(message, serverMessage, status);
  }
  return new IncusError(message, { status, serverMessage });
}
