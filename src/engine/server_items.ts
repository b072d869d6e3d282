// Backups of what lives in the server rather than in a volume: images and the configuration.

import { createHash } from "node:crypto";
import { IntegrityError } from "../errors";
import type { IncusClient } from "../incus/client";
import { getImageFile, getImages, type Image } from "../incus/images";
import type { ItemKey } from "../core/selection";
import type { FileSink } from "../repository/store";
import { manifestFor, type ItemContext } from "./backup_item";
import { DATABASE_FILES, databaseDumps, exportDatabase } from "./database";
import { memberRecords } from "./cluster";

export interface LiveImage extends ItemKey {
  kind: "image";
  image: Image;
}

export interface LiveDatabase extends ItemKey {
  kind: "database";
}

/** File names of an image version: one tarball, or metadata + rootfs for a split image. */
export const IMAGE_FILES = { unified: "image.tarball", meta: "image.metadata", rootfs: "image.rootfs" } as const;

/** Images of one project (or all), leaving out cached ones: they come back from their source. */
export async function liveImages(c: IncusClient, project: string | undefined, signal?: AbortSignal): Promise<LiveImage[]> {
  const list = await getImages(c, project, signal === undefined ? {} : { signal });
  return list
    .filter((i) => !i.cached)
    .map((i) => ({ kind: "image", project: i.project, name: i.fingerprint, aliases: i.aliases.map((a) => a.name), image: i }));
}

/**
 * Downloads an image into a new version. The fingerprint is the sha256 of the image's files
 * (both parts, in order, for a split image), so it is checked on the way: a version never holds
 * an image other than the one it names.
 */
export async function backupImage(ctx: ItemContext, item: LiveImage): Promise<number> {
  const created = ctx.deps.now();
  const writer = await ctx.deps.store.begin(item, ctx.version);
  try {
    const content = createHash("sha256");
    const sinks: FileSink[] = [];
    const parts = await ctx.slots.transfer.use(async () => {
      ctx.deps.reporter.itemStep(item, "downloading");
      try {
        return await getImageFile(
          ctx.deps.client,
          item.project,
          item.name,
          async (part) => {
            const w = await writer.createFile(IMAGE_FILES[part], content);
            sinks.push(w);
            return w;
          },
          { signal: ctx.signal, onProgress: (done, total) => ctx.deps.reporter.itemBytes(item, done, total) },
        );
      } catch (err) {
        // Free the space before the next item may write.
        await writer.abort();
        throw err;
      }
    });
    const fingerprint = content.digest("hex");
    if (fingerprint !== item.name) {
      throw new IntegrityError(`image ${item.name.slice(0, 12)}: the downloaded files hash to ${fingerprint.slice(0, 12)}, not to its fingerprint`);
    }
    const split = parts.rootfs !== undefined;
    for (const s of sinks) writer.addFile(s.entry());
    await writer.commit(
      manifestFor(ctx, item, created, {
        aliases: item.aliases ?? [],
        object: item.image,
        options: {
          split,
          meta_name: parts.meta.name,
          ...(parts.rootfs ? { rootfs_name: parts.rootfs.name, rootfs_field: parts.rootfs.field } : {}),
        },
      }),
      ctx.signal,
    );
    return sinks.reduce((n, s) => n + s.entry().size, 0);
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/**
 * Backs up the server's configuration: a declarative export (what restore uses) and the SQL dumps
 * of both databases (what Incus's documentation tells admins to keep; for experts, not restored).
 */
export async function backupDatabase(ctx: ItemContext, item: LiveDatabase): Promise<number> {
  const created = ctx.deps.now();
  ctx.deps.reporter.itemStep(item, "reading the configuration");
  const snapshot = await exportDatabase(ctx.deps.client, ctx.signal);
  const dumps = await databaseDumps(ctx.deps.client, ctx.signal);
  const members = await memberRecords(ctx.deps.client, ctx.signal);
  for (const m of members ?? []) if (m.error !== undefined) ctx.deps.reporter.warn(`database: member ${m.name} could not be read: ${m.error}`);
  const writer = await ctx.deps.store.begin(item, ctx.version);
  try {
    // Writing into the repository is the transfer phase, whatever its size.
    const files = await ctx.slots.transfer.use(async () => {
      try {
        return [
          await writer.writeFile(DATABASE_FILES.config, JSON.stringify(snapshot, null, 2) + "\n"),
          await writer.writeFile(DATABASE_FILES.global, dumps.global),
          await writer.writeFile(DATABASE_FILES.local, dumps.local),
          ...(members === undefined ? [] : [await writer.writeFile(DATABASE_FILES.members, JSON.stringify({ format: 1, members }, null, 2) + "\n")]),
        ];
      } catch (err) {
        await writer.abort();
        throw err;
      }
    });
    const counts: Record<string, number> = {};
    for (const e of snapshot.entities) counts[e.kind] = (counts[e.kind] ?? 0) + 1;
    // In a cluster, local.sql is the database of the member this tool talks to: the server dumps
    // only its own (GET /internal/sql has no ?target, checked on 6.0), and the manifest says whose.
    // members.json has what every member's own database holds that its API shows.
    const server = await ctx.deps.client.server(ctx.signal);
    const member = server.environment?.server_clustered === true ? server.environment.server_name : undefined;
    await writer.commit(manifestFor(ctx, item, created, { options: {}, object: { counts }, ...(member === undefined ? {} : { member }) }), ctx.signal);
    return files.reduce((n, f) => n + f.size, 0);
  } catch (err) {
    await writer.abort();
    throw err;
  }
}
