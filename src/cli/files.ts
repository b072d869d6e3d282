// `incus-backup files`: what a version of an instance or volume holds, like `ls -l`, without restoring it.

import { command, flag, option, optional, positional, string } from "cmd-ts";
import { ExitCode, NotFoundError } from "../errors";
import { itemLabel } from "../core/selection";
import { listing, pickSource, readEntries } from "../engine/files";
import { modeString, normalPath, type CatalogEntry } from "../engine/catalog";
import { checkVersionArg, dirArg, openRepository, selectionOf, selectorArgs } from "./common";
import { err, out, type CliContext } from "./context";
import { reporterFor } from "./progress";
import { formatBytes } from "./format";

export function filesCommand(ctx: CliContext) {
  const sel = selectorArgs("read");
  return command({
    name: "files",
    description:
      "List the files in a backup of an instance or volume, as the instance sees them (like ls -l). The first listing of a version reads its archive once and keeps a catalog beside it; later ones read only the catalog.",
    examples: [
      { description: "What was in /etc/nginx", command: "incus-backup files --instance --name web /etc/nginx" },
      { description: "One file, in an older version", command: "incus-backup files --instance --name web --version 20250914 /etc/nginx/nginx.conf" },
      { description: "Search the whole version", command: "incus-backup files --instance --name web --find '*.conf'" },
      { description: "A custom volume", command: "incus-backup files --volume --name default/dockge-data /" },
    ],
    args: {
      instances: sel.instances,
      instance: sel.instance,
      volumes: sel.volumes,
      volume: sel.volume,
      names: sel.names,
      project: sel.project,
      member: sel.member,
      ...dirArg,
      version: option({ long: "version", type: optional(string), description: "YYYYMMDD-HHMMSS or a prefix of it (the latest match wins); default: the latest" }),
      snapshot: option({ long: "snapshot", type: optional(string), description: "list a snapshot kept in the backup (backup --snapshots) instead of the item itself" }),
      find: option({ long: "find", type: optional(string), description: "every entry under PATH whose name matches this glob (*, ?, [..]; with a slash, the whole path; ** crosses directories)" }),
      json: flag({ long: "json", description: "print a JSON array, one object per entry" }),
      path: positional({ type: optional(string), displayName: "PATH", description: "a directory (its entries are listed) or a file; default /" }),
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(
        { ...a, all: false, images: false, image: false, database: false, config: false },
        ["instance", "volume"],
        false,
      );
      const version = checkVersionArg(a.version);
      const path = normalPath(a.path ?? "/", "PATH");
      const snapshot = a.snapshot ?? "";
      const store = await openRepository(ctx, a);
      const src = await pickSource(store, selection, version);
      const label = `${itemLabel(src.version.manifest)} version ${src.version.manifest.version}`;
      const want = listing(path, snapshot, a.find);
      const reporter = reporterFor(ctx, "catalog");
      const { entries, header, read } = await readEntries(store, src, want.accept, { reporter });
      if (snapshot && !header.snapshots.includes(snapshot)) {
        throw new NotFoundError(
          `${label} holds no snapshot ${JSON.stringify(snapshot)}; ${header.snapshots.length ? `it holds: ${header.snapshots.join(", ")}` : "it was made without --snapshots"}`,
        );
      }
      const shown = want.select(entries);
      if (shown === undefined) throw new NotFoundError(`${path} is not in ${label}${snapshot ? ` (snapshot ${snapshot})` : ""}`);
      if (read) {
        reporter.info(
          `read the archive once (${formatBytes(read.bytes)} in ${read.seconds.toFixed(1)} s) and kept its file catalog of ${header.entries} entries: later listings of this version read only that`,
        );
      }
      if (a.json) {
        out(ctx, JSON.stringify(shown.map(jsonEntry), null, 2));
        return ExitCode.OK;
      }
      if (shown.length === 0) {
        err(ctx, a.find === undefined ? `${path} is empty in ${label}` : `nothing under ${path} matches ${JSON.stringify(a.find)} in ${label}`);
        return ExitCode.OK;
      }
      for (const line of longListing(shown)) out(ctx, line);
      return ExitCode.OK;
    },
  });
}

function jsonEntry(e: CatalogEntry) {
  return {
    path: e.path,
    type: e.type,
    mode: `0${e.mode.toString(8).padStart(3, "0")}`,
    uid: e.uid,
    gid: e.gid,
    ...(e.user === undefined ? {} : { user: e.user }),
    ...(e.group === undefined ? {} : { group: e.group }),
    size: e.size,
    mtime: new Date(e.mtime * 1000).toISOString(),
    ...(e.link === undefined ? {} : { link: e.link }),
  };
}

/** `ls -l` columns: mode, owner, group, size, time (UTC), path, and where a link points. */
export function longListing(entries: readonly CatalogEntry[]): string[] {
  const rows = entries.map((e) => [
    modeString(e),
    e.user ?? String(e.uid),
    e.group ?? String(e.gid),
    String(e.size),
    new Date(e.mtime * 1000).toISOString().slice(0, 16).replace("T", " "),
    e.path + (e.type === "dir" && e.path !== "/" ? "/" : "") + (e.type === "symlink" ? ` -> ${e.link ?? ""}` : e.type === "hardlink" ? ` => ${e.link ?? ""}` : ""),
  ]);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => [r[0]!.padEnd(widths[0]!), r[1]!.padEnd(widths[1]!), r[2]!.padEnd(widths[2]!), r[3]!.padStart(widths[3]!), r[4]!, r[5]!].join(" "));
}
