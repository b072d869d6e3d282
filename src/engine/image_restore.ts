// Restoring an image: upload it unless the same fingerprint is there, then its settings and aliases.

import { IntegrityError } from "../errors";
import { createImage, createImageAlias, updateImage, updateImageAlias, type Image } from "../incus/images";
import type { Step } from "../core/plan";
import type { RestoreDeps } from "./restore_deps";
import { IMAGE_FILES } from "./server_items";

export async function restoreImage(deps: RestoreDeps, step: Extract<Step, { op: "image" }>, signal: AbortSignal): Promise<void> {
  const { client, reporter } = deps;
  const { project, name: fingerprint } = step.target;
  const m = step.source.manifest;
  const image = m.object as Image;
  if (step.exists) {
    reporter.info(`image ${fingerprint.slice(0, 12)} is already on the server (same fingerprint, same content): not uploaded again`);
  } else {
    reporter.itemStep(step.target, "checking the backup's sha256");
    for (const f of m.files) await deps.store.verifyFile(step.source, f, signal);
    const split = m.options.split === true;
    // Checked just now, in full: upload them as they are.
    const open = async (name: string) => {
      const f = m.files.find((x) => x.name === name);
      if (!f) throw new IntegrityError(`${step.source.location}: the manifest lists no ${name}`);
      return { stream: await deps.store.streamFile(step.source, f, signal), size: f.size };
    };
    const files = split
      ? {
          meta: { ...(await open(IMAGE_FILES.meta)), name: String(m.options.meta_name ?? "metadata.tar") },
          rootfs: {
            ...(await open(IMAGE_FILES.rootfs)),
            name: String(m.options.rootfs_name ?? "rootfs"),
            field: String(m.options.rootfs_field ?? "rootfs"),
          },
        }
      : { meta: { ...(await open(IMAGE_FILES.unified)), name: String(m.options.meta_name ?? `${fingerprint}.tar`) } };
    reporter.itemStep(step.target, "uploading");
    const op = await createImage(client, project, files, image.public ? { "x-incus-public": "true" } : {}, {
      signal,
      onProgress: (done, total) => reporter.itemBytes(step.target, done, total),
    });
    reporter.itemStep(step.target, "adding it on the server");
    const done = await op.wait({ signal });
    const got = (done.metadata as { fingerprint?: string } | null)?.fingerprint;
    if (got !== undefined && got !== fingerprint) {
      throw new IntegrityError(`image ${fingerprint.slice(0, 12)}: the server computed fingerprint ${got.slice(0, 12)} for the restored files`);
    }
    await updateImage(client, project, fingerprint, {
      auto_update: image.auto_update ?? false,
      properties: image.properties ?? {},
      public: image.public ?? false,
      profiles: image.profiles ?? ["default"],
      ...(image.expires_at && !image.expires_at.startsWith("0001-") ? { expires_at: image.expires_at } : {}),
    });
  }
  const descriptions = new Map((image.aliases ?? []).map((a) => [a.name, a.description ?? ""]));
  for (const alias of step.createAliases) {
    await createImageAlias(client, project, { name: alias, description: descriptions.get(alias) ?? "", target: fingerprint });
  }
  for (const { name: alias, from } of step.moveAliases) {
    reporter.info(`image alias ${alias} now points at ${fingerprint.slice(0, 12)} (was ${from.slice(0, 12)})`);
    await updateImageAlias(client, project, { name: alias, description: descriptions.get(alias) ?? "", target: fingerprint });
  }
}
