// The executable: wires the process (streams, environment, signals) to main() and exits with its code.

import { main } from "./main";
import type { CliContext } from "./cli/context";

const controller = new AbortController();
let signalled = 0;
// SIGPWR is what Incus sends to a container's init when it stops it.
for (const sig of ["SIGINT", "SIGTERM", "SIGPWR"] as const) {
  process.on(sig, () => {
    signalled++;
    if (signalled > 1) process.exit(130);
    process.stderr.write(`\n${sig}: stopping after cleaning up (again to quit at once)\n`);
    controller.abort();
  });
}

const ctx: CliContext = {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
  signal: controller.signal,
  now: () => new Date(),
  argv: ["incus-backup", ...process.argv.slice(2)],
};

// If the event loop ever runs dry while the command is still waiting on something, that is a bug:
// say so plainly instead of Node's silent exit 13 ("unsettled top-level await").
let settled = false;
process.on("beforeExit", () => {
  if (settled) return;
  process.stderr.write("error: internal error: the command stopped making progress (please report this, with INCUS_BACKUP_DEBUG=1 output)\n");
  process.exit(1);
});

const code = await main(process.argv.slice(2), ctx);
settled = true;
process.stdout.write("", () => process.exit(code));
