// Entry point: parse the command line, run the command, map every error to one line and an exit code.

import { runSafely } from "cmd-ts";
import { AppError, ExitCode, errorMessage } from "./errors";
import { buildApp } from "./cli/app";
import { checkValueOptions } from "./cli/common";
import type { CliContext } from "./cli/context";

export async function main(argv: string[], ctx: CliContext): Promise<number> {
  try {
    checkValueOptions(argv);
    const result = await runSafely(buildApp(ctx), argv);
    if (result._tag === "error") {
      const { message, exitCode, into } = result.error.config;
      if (exitCode === 0) {
        (into === "stdout" ? ctx.stdout : ctx.stderr).write(message + "\n");
        return ExitCode.OK;
      }
      ctx.stderr.write(`error: ${parseErrorLine(message)}\n`);
      return ExitCode.Usage;
    }
    return await (result.value as unknown as { value: Promise<number> | number }).value;
  } catch (err) {
    return reportError(ctx, err);
  }
}

/** One line for the user; a stack trace only when INCUS_BACKUP_DEBUG is set. */
export function reportError(ctx: CliContext, err: unknown): number {
  if (ctx.env.INCUS_BACKUP_DEBUG && err instanceof Error) ctx.stderr.write(`${err.stack}\n`);
  if (err instanceof AppError) {
    ctx.stderr.write(`error: ${oneLine(err.message)}${err.hint ? ` (${oneLine(err.hint)})` : ""}\n`);
    return err.exitCode;
  }
  ctx.stderr.write(`error: ${oneLine(errorMessage(err))}\n`);
  return ExitCode.Failure;
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, " ").trim();
}

/**
 * cmd-ts reports parse errors over several lines with a caret under the bad token; turn that
 * into "unknown arguments: --bogus (try 'incus-backup backup --help')".
 */
export function parseErrorLine(message: string): string {
  const lines = message.split("\n");
  const hint = lines.find((l) => l.startsWith("hint:"))?.replace(/^hint:\s*for more information,\s*/, "");
  const caretAt = lines.findIndex((l) => /^\s*\^/.test(l));
  let text = lines.filter((l) => l.trim() && !l.startsWith("hint:") && !l.startsWith("error: found")).join(" ");
  if (caretAt > 0) {
    const col = lines[caretAt]!.indexOf("^");
    // The whole word under the caret: for subcommands cmd-ts puts it on the word's second character.
    const above = lines[caretAt - 1]!;
    const token = above.slice(above.lastIndexOf(" ", col) + 1).split(" ")[0] ?? "";
    const reason = lines[caretAt]!.slice(col + 1).trim();
    // Lines under the caret's carry on its reason ("Did you mean backup?").
    const more = lines.slice(caretAt + 1).filter((l) => l.trim() && !l.startsWith("hint:")).map((l) => l.trim()).join(" ");
    text = `${lowerFirst(reason)}${token ? `: ${token}` : ""}${more ? `; ${lowerFirst(more)}` : ""}`;
  }
  return `${oneLine(text)}${hint ? ` (${hint})` : ""}`;
}

function lowerFirst(s: string): string {
  return `${s.charAt(0).toLowerCase()}${s.slice(1)}`;
}
