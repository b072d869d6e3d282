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

const code = await main(process.argv.slice(2), ctx);
process.stdout.write("", () => process.exit(code));
