// `incus-backup init`: make an empty directory a backup repository (the only way one is made).

import { command, flag } from "cmd-ts";
import { ExitCode } from "../errors";
import { dirArg, storeOf } from "./common";
import { out, type CliContext } from "./context";

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
    ],
    args: { ...dirArg, json: flag({ long: "json", description: "print the location, the id and whether this call made it, as JSON" }) },
    handler: async (a): Promise<number> => {
      // Safe against another init at the same moment: one makes it, the others find it made.
      const store = await storeOf(ctx, a);
      const created = !(await store.isInitialized()) && (await store.initialize());
      // A repository made before repositories had ids gets one now (the service is set up with it).
      const id = await store.ensureId();
      if (a.json) out(ctx, JSON.stringify({ location: store.location, id, created }, null, 2));
      else out(ctx, !created ? `${store.location} is an incus-backup repository already (id ${id})` : `initialized a new backup repository in ${store.location} (id ${id})`);
      return ExitCode.OK;
    },
  });
}
