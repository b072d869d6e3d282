// Which Incus server's backups a repository holds. Items are kept by project and name, so two
// servers backing up into one repository would mix their `default/web`: the first backup records
// its server (by certificate fingerprint), and backups from any other are refused. Restores from
// a repository are allowed anywhere (that is disaster recovery); a server that replaces the old
// one takes the repository over explicitly, with `init --adopt`.

import { RepositoryError } from "../errors";
import type { ServerInfo } from "../incus/client";
import type { ServerOwner, Store } from "../repository/store";

/** This server as an owner record, or undefined if it does not say its certificate. */
export function ownerFor(server: ServerInfo, now: Date): ServerOwner | undefined {
  const fingerprint = server.environment?.certificate_fingerprint;
  if (typeof fingerprint !== "string" || fingerprint === "") return undefined;
  return { fingerprint, name: server.environment?.server_name ?? "?", since: now.toISOString() };
}

export function describeOwner(o: Pick<ServerOwner, "name" | "fingerprint">): string {
  return `${o.name} (certificate ${o.fingerprint.slice(0, 12)})`;
}

/**
 * Before a backup writes anything: records this server as the repository's if none is recorded
 * (a new repository, or one from before owners were recorded), passes if it is this server's, and
 * refuses with RepositoryError (exit 8) if it is another's. The caller holds the lock.
 */
export async function claimRepository(store: Store, server: ServerInfo, now: Date): Promise<"claimed" | "ours" | "unknown"> {
  const me = ownerFor(server, now);
  if (me === undefined) return "unknown";
  const owner = await store.serverOwner();
  if (owner === undefined) {
    await store.setServerOwner(me);
    return "claimed";
  }
  if (owner.fingerprint === me.fingerprint) return "ours";
  throw new RepositoryError(
    `${store.location} holds the backups of Incus server ${describeOwner(owner)}, not of this server, ${describeOwner(me)}: two servers' backups never share a repository; nothing was written`,
    { hint: "give this server a repository of its own; if it replaces that server (restored onto a new install), take the repository over with `incus-backup init --adopt`" },
  );
}

/** `init --adopt`: the repository holds this server's backups from now on. Returns the previous owner. The caller holds the lock. */
export async function adoptRepository(store: Store, server: ServerInfo, now: Date): Promise<ServerOwner | undefined> {
  const me = ownerFor(server, now);
  if (me === undefined) throw new RepositoryError("this Incus server does not say its certificate fingerprint: cannot record it as the repository's");
  const before = await store.serverOwner();
  if (before?.fingerprint !== me.fingerprint) await store.setServerOwner(me);
  return before;
}
