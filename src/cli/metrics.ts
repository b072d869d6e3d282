// INCUS_BACKUP_METRICS_FILE for the commands that change the repository: the file is rewritten after each of their runs.

import { publishMetrics } from "../engine/metrics";
import type { Reporter } from "../engine/reporter";
import { metricsWriter } from "../local/metrics_file";
import type { Store } from "../repository/store";
import type { CliContext } from "./context";

/** Writes the metrics file if the variable asks for one; a failure is a warning, never the run's. */
export function writeMetrics(ctx: CliContext, store: Store, reporter: Pick<Reporter, "warn">): Promise<void> {
  return publishMetrics(store, metricsWriter(ctx.env), reporter);
}
