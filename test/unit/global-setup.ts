// Vitest global setup of the unit projects: every temp dir the tests make goes under one root of
// this run, and the run fails, naming them, if any is left when it ends.
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const STATE = "tool-state";

export default function setup(): () => void {
  // Both unit projects name this file; the first one to run it owns the root.
  if (process.env.INCUS_BACKUP_UNIT_TMP) return () => {};
  const root = mkdtempSync(join(tmpdir(), "incus-backup-unit-run-"));
  const before = process.env.TMPDIR;
  // Workers (threads and forks) start after this and inherit it; os.tmpdir() reads it each call.
  process.env.TMPDIR = root;
  process.env.INCUS_BACKUP_UNIT_TMP = root;
  // The tool's local state (the install id the repository locks record), never the machine's.
  const stateBefore = process.env.INCUS_BACKUP_STATE_DIR;
  process.env.INCUS_BACKUP_STATE_DIR = join(root, STATE);
  return () => {
    delete process.env.INCUS_BACKUP_UNIT_TMP;
    if (stateBefore === undefined) delete process.env.INCUS_BACKUP_STATE_DIR;
    else process.env.INCUS_BACKUP_STATE_DIR = stateBefore;
    if (before === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = before;
    const left = readdirSync(root).filter((n) => n !== STATE);
    rmSync(root, { recursive: true, force: true });
    if (left.length === 0) return;
    // Vitest reports an error thrown here but still exits 0.
    console.error(`error: the unit tests left ${left.length} temp entr${left.length === 1 ? "y" : "ies"} behind: ${left.slice(0, 5).join(", ")}${left.length > 5 ? ", …" : ""}`);
    process.exitCode = 1;
  };
}
