// `incus-backup init`: make an empty directory a backup repository (the only way one is made).

import { command, flag } from "cmd-ts";
import { takeLock } from "../engine/locking";
import { adoptRepository, describeOwner } from "../engine/ownership";
import { ExitCode } from "../errors";
import type { ServerOwner } from "../repository/store";
import { connect, dirArg, socketArg, storeOf } from "./common";
import { err, out, type CliContext } from "./context";

export function initCommand(ctx: CliContext) {
  return command({
    name: "init",
    description:
      "Make an empty directory, or a new restic repository (--repo restic:LOCATION, with RESTIC_PASSWORD_FILE set), a backup repository. " +
      "Backups, prunes and the service never make one themselves: an empty directory where a repository should be is more often a NAS that is not mounted. " +
      "A repository that exists is left as it is (an existing restic repository is used as it is; its id is restic's).",
    examples: [
      { description: "A new repository on the NAS", command: "incus-backup init --dir=/mnt/nas/sysbackup/incus" },
      { description: "A restic repository off-site", command: "RESTIC_PASSWORD_FILE=/etc/incus-backup/restic-password incus-backup init --repo restic:sftp:backup@nas2:/srv/restic/incus" },
      { description: "Back up a reinstalled server into its old repository again", command: "incus-backup init --adopt --dir=/mnt/nas/sysbackup/incus" },
    ],
    args: {
      ...dirArg,
      ...socketArg,
      adopt: flag({
        long: "adopt",
        description:
          "record this Incus server as the one whose backups the repository holds (backups from any other are refused): for a server that replaces the one the repository was made for, e.g. after restoring it onto a new install",
      }),
      json: flag({ long: "json", description: "print the location, the id, whether this call made it and whose backups it holds, as JSON" }),
    },
    handler: async (a): Promise<number> => {
      // Safe against another init at the same moment: one makes it, the others find it made.
      const store = await storeOf(ctx, a);
      const created = !(await store.isInitialized()) && (await store.initialize());
      // A repository made before repositories had ids gets one now (the service is set up with it).
      const id = await store.ensureId();
      let previous: ServerOwner | undefined;
      if (a.adopt) {
        const server = await connect(ctx, a.socket).server(ctx.signal);
        const lock = await takeLock(store, "incus-backup init --adopt", { info: (t) => err(ctx, t) }, ctx.signal);
        try {
          previous = await adoptRepository(store, server, ctx.now());
        } finally {
          await lock.release();
        }
      }
      const owner = await store.serverOwner();
      if (a.json) {
        out(ctx, JSON.stringify({ location: store.location, id, created, server: owner ?? null, ...(a.adopt ? { previousServer: previous ?? null } : {}) }, null, 2));
        return ExitCode.OK;
      }
      out(ctx, !created ? `${store.location} is an incus-backup repository already (id ${id})` : `initialized a new backup repository in ${store.location} (id ${id})`);
      if (a.adopt && owner) {
        const was = previous === undefined ? "no server was recorded" : previous.fingerprint === owner.fingerprint ? "it did already" : `it held ${describeOwner(previous)}'s`;
        out(ctx, `it holds the backups of this server, ${describeOwner(owner)}, from now on (${was})`);
      }
      return ExitCode.OK;
    },
  });
}
