// What a restore's steps share: the server, the store, the reporter, and the slots of its two phases.

import type { IncusClient } from "../incus/client";
import type { Store } from "../repository/store";
import { Semaphore } from "./pool";
import type { Reporter } from "./reporter";

export interface RestoreDeps {
  client: IncusClient;
  store: Store;
  reporter: Reporter;
  now: () => Date;
  /** Seconds an instance gets to shut down cleanly before it is forced (restore --stop-timeout). */
  stopTimeout?: number;
  /** In a cluster: the member this tool talks to, where Incus puts an uploaded instance. */
  connectedMember?: string;
  /** Slots for the two phases of an item (see executePlan); unlimited when absent. */
  slots?: { transfer: Semaphore; make: Semaphore };
}

const UNLIMITED = { transfer: new Semaphore(Infinity), make: new Semaphore(Infinity) };

export function slotsOf(deps: RestoreDeps): { transfer: Semaphore; make: Semaphore } {
  return deps.slots ?? UNLIMITED;
}

/** The stop options of a restore's stops: its --stop-timeout, if given. */
export function stopOptions(deps: RestoreDeps): { timeout?: number } {
  return deps.stopTimeout === undefined ? {} : { timeout: deps.stopTimeout };
}
