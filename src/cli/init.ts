// `incus-backup init`: make an empty directory a backup repository (the only way one is made).

import { command, flag } from "cmd-ts";
import { ExitCode } from "../errors";
import { backupDir, dirArg } from "./common";
import { out, type CliContext } from "./context";
import { openStore } from "../repository/open";

export function initCommand(ctx: CliContext) {
  return command({
    name: "init",
    description:
      "Make an empty directory a backup repository, with a random id. Backups, prunes and the service never make one themselves: " +
      "an empty directory where a repository should be is more often a NAS that is not mounted. A repository that exists is left as it is.",
    examples: [{ description: "A new repository on the NAS", command: "incus-backup init --dir=/mnt/nas/sysbackup/incus" }],
    args: { ...dirArg, json: flag({ long: "json", description: "print the location, the id and whether this call made it, as JSON" }) },
    handler: async (a): Promise<number> => {
      const dir = backupDir(ctx, a.dir);
      // Safe against another init at the same moment: one makes it, the others find it made.
      const store = await openStore(dir, { create: false });
      const created = !(await store.isInitialized()) && (await store.initialize());
      // A repository made before repositories had ids gets one now (the service is set up with it).
      const id = await store.ensureId();
      if (a.json) out(ctx, JSON.stringify({ location: store.location, id, created }, null, 2));
      else out(ctx, !created ? `${store.location} is an incus-backup repository already (id ${id})` : `initialized a new backup repository in ${store.location} (id ${id})`);
      return ExitCode.OK;
    },
  });
}
