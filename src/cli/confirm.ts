// Asking before a destructive act: a y/N prompt on a terminal, a refusal without one.

import { createInterface } from "node:readline";
import { NotConfirmedError } from "../errors";
import type { CliContext } from "./context";

/**
 * Resolves when the user agreed; throws NotConfirmedError otherwise. With --force it does not ask.
 * Without a terminal on stdin (cron, scripts, `incus exec` without -t) it refuses, naming --force,
 * because a silent yes would destroy data and a silent no would look like success.
 */
export async function confirm(ctx: CliContext, question: string, force: boolean): Promise<void> {
  if (force) return;
  if (!ctx.stdin.isTTY) {
    throw new NotConfirmedError("this would replace existing data and there is no terminal to ask; nothing was changed", {
      hint: "re-run with --force to proceed, or with --dry-run to see the plan",
    });
  }
  const rl = createInterface({ input: ctx.stdin, output: ctx.stderr, terminal: true });
  const answer = await new Promise<string>((resolve) => {
    rl.question(`${question} [y/N] `, resolve);
    rl.once("close", () => resolve(""));
    ctx.signal.addEventListener("abort", () => rl.close(), { once: true });
  });
  rl.close();
  if (!/^y(es)?$/i.test(answer.trim())) throw new NotConfirmedError("not confirmed; nothing was changed");
}
