// Two test projects: `unit` (pure logic, no Incus, seconds) and `integration` (the real tool
// against a real Incus inside the throwaway lab that test/lab/global-setup.ts brings up).
import { availableParallelism } from "node:os";
import { defineConfig } from "vitest/config";

const UNIT_IN_PROCESSES = ["test/unit/repository/directory-umask.test.ts"];

export default defineConfig({
  test: {
    // Removing the lab can take a few seconds; without this, vitest exits before it finishes.
    teardownTimeout: 60_000,
    // Vitest leaves one core to itself by default: on a 2-core machine the unit files then ran one
    // after another (15.3 s); on both cores they take 10.4 s. The integration project runs one file
    // at a time whatever this says.
    maxWorkers: Math.max(2, availableParallelism()),
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          exclude: UNIT_IN_PROCESSES,
          setupFiles: ["test/unit/setup.ts"],
          globalSetup: ["test/unit/global-setup.ts"],
          // Worker threads start faster than forked processes; the unit tests share no globals
          // that isolation would have to reset.
          pool: "threads",
          isolate: false,
        },
      },
      {
        // Tests that need a process of their own (process.umask cannot be set in a worker thread).
        test: {
          name: "unit-process",
          include: UNIT_IN_PROCESSES,
          setupFiles: ["test/unit/setup.ts"],
          globalSetup: ["test/unit/global-setup.ts"],
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/lab/global-setup.ts"],
          setupFiles: ["test/lab/worker-setup.ts"],
          testTimeout: 300_000,
          hookTimeout: 600_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
