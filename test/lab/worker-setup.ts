// Vitest setup file of the integration project, run in each worker before its test file: the
// tests' temp files (os.tmpdir(), for this process and every process it starts: the tool, restic,
// the incus CLI) go into the lab's temp dir (global-setup.ts), not the machine's /tmp.
import { inject } from "vitest";

process.env.TMPDIR = inject("labTmp");
