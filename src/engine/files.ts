// Files inside a backup: which version of which instance or volume, its catalog (read from the
// store, or built from the archive on the first listing and kept), and the entries asked for.

import { IntegrityError, NotFoundError, UsageError } from "../errors";
import type { FileEntry } from "../core/manifest";
import { hostToContainer, type IdShift } from "../core/idmap";
import { itemId, itemLabel, keyOf, matches, type Selection } from "../core/selection";
import { pickVersion } from "../core/version";
import type { Store, StoredVersion } from "../repository/store";
import { walkArchive } from "./archive_walk";
import { CatalogWriter, globMatcher, readCatalog, within, type ArchiveKind, type CatalogEntry, type CatalogHeader } from "./catalog";
import type { Reporter } from "./reporter";

export interface FilesSource {
  version: StoredVersion;
  /** The archive in it. */
  file: FileEntry;
  kind: ArchiveKind;
  /** A volume's owners on disk are the host's: this maps them to what the instance sees. */
  shift?: IdShift;
}

/**
 * The version whose files are asked for: one instance or volume (the selection must name exactly
 * one), its latest version or the latest matching `versionPrefix`. Refused: a VM's root disk and a
 * block volume (an image, not files), a damaged pick, nothing matching.
 */
export async function pickSource(store: Store, selection: Selection, versionPrefix: string | undefined): Promise<FilesSource> {
  const kinds = selection.kinds.filter((k): k is ArchiveKind => k === "instance" || k === "volume");
  if (kinds.length !== 1 || selection.kinds.length !== 1) throw new UsageError("give one of --instance or --volume, with --name");
  if (selection.names.length !== 1) throw new UsageError(`give the ${kinds[0]} with one --name`);
  const kind = kinds[0]!;
  const { versions, damaged } = await store.list([kind]);
  let mine = versions.filter((v) => matches(selection, v.manifest));
  let items = new Map(mine.map((v) => [itemId(v.manifest), v.manifest]));
  const name = selection.names[0]!;
  const where = `${selection.project ? ` in project ${selection.project}` : ""}${selection.member ? ` on member ${selection.member}` : ""}`;
  if (items.size === 0) throw new NotFoundError(`there is no backup of ${kind} ${JSON.stringify(name)}${where} (see \`incus-backup list\`)`);
  // Of several items of that name (a cluster's volumes on two members), --version may fit one only.
  if (items.size > 1 && versionPrefix !== undefined) {
    const fitting = new Set(mine.filter((v) => v.manifest.version.startsWith(versionPrefix)).map((v) => itemId(v.manifest)));
    if (fitting.size > 0) {
      mine = mine.filter((v) => fitting.has(itemId(v.manifest)));
      items = new Map(mine.map((v) => [itemId(v.manifest), v.manifest]));
    }
  }
  if (items.size > 1) {
    // One volume name on several members of a cluster: only --member tells them apart.
    const oneName = new Set([...items.values()].map((m) => itemId({ ...keyOf(m), member: undefined }))).size === 1;
    const members = [...items.values()].flatMap((m) => (m.member === undefined ? [] : [m.member])).sort();
    const how = oneName && members.length === items.size ? `--member ${members.join(" or --member ")}` : "POOL/NAME, --project";
    throw new UsageError(`--name ${JSON.stringify(name)} matches ${[...items.values()].map(itemLabel).join(", ")}: name one (${how})`);
  }
  const picked = pickVersion(
    mine.map((v) => v.manifest.version),
    versionPrefix,
  );
  if (picked === undefined) {
    const available = mine.map((v) => v.manifest.version).sort().reverse();
    throw new NotFoundError(`no version of ${itemLabel(mine[0]!.manifest)} matching ${JSON.stringify(versionPrefix)}; available: ${available.slice(0, 20).join(", ")}`);
  }
  const version = mine.find((v) => v.manifest.version === picked)!;
  const key = itemId(version.manifest);
  const newerDamaged = damaged.find((d) => itemId(d.key) === key && d.version > picked && (versionPrefix === undefined || d.version.startsWith(versionPrefix)));
  if (newerDamaged) {
    throw new IntegrityError(`${itemLabel(newerDamaged.key)} version ${newerDamaged.version} is damaged (${newerDamaged.problem})`, {
      hint: "see `incus-backup verify`; name another version with --version",
    });
  }
  const object = (version.manifest.object ?? {}) as { type?: string; content_type?: string };
  const label = itemLabel(version.manifest);
  if (kind === "instance" && object.type === "virtual-machine") {
    throw new UsageError(`${label} is a virtual machine: its root disk is a disk image, whose files this tool cannot read`, {
      hint: `restore the whole VM beside the original (incus-backup restore --instance --name ${version.manifest.name} --target-name ${version.manifest.name}-copy) and copy the files from it; its custom filesystem volumes work with --volume`,
    });
  }
  if (kind === "volume" && object.content_type === "block") {
    throw new UsageError(`${label} is a block volume: it holds a disk image, not files`, {
      hint: `restore the whole volume under another name (--target-name) and attach it to an instance`,
    });
  }
  const file = version.manifest.files.find((f) => f.name.startsWith(`${kind}.tar`));
  if (!file) throw new IntegrityError(`${label} version ${picked} has no ${kind} archive`);
  const shift = kind === "volume" ? hostToContainer((object as { config?: Record<string, string> }).config?.["volatile.idmap.last"]) : undefined;
  return { version, file, kind, ...(shift ? { shift } : {}) };
}

/**
 * The catalog entries of the source that `accept` takes. From the kept catalog when there is a
 * sound one for this very archive; otherwise the archive is read once (decompressed and walked as
 * a tar, its data skipped) and the catalog kept for next time. A catalog that cannot be kept (a
 * read-only repository) costs only a warning. Only the accepted entries are held in memory.
 */
export async function readEntries(
  store: Store,
  src: FilesSource,
  accept: (e: CatalogEntry) => boolean,
  o: { reporter: Reporter; signal?: AbortSignal },
): Promise<{ entries: CatalogEntry[]; header: CatalogHeader; built: boolean; read?: { bytes: number; seconds: number } }> {
  const kept = await store.readCatalog(src.version, src.file);
  if (kept) {
    const entries: CatalogEntry[] = [];
    const header = await readCatalog(kept, src.file.name, src.file.sha256, (e) => {
      if (accept(e)) entries.push(e);
    });
    if (header) return { entries, header, built: false };
    o.reporter.warn(`the file catalog of ${itemLabel(src.version.manifest)} version ${src.version.manifest.version} is damaged or stale: reading the archive again`);
  }
  const writer = new CatalogWriter();
  const entries: CatalogEntry[] = [];
  const walked = await walkArchive(
    store,
    src,
    {
      entry: (e) => {
        writer.add(e);
        if (accept(e)) entries.push(e);
        return false;
      },
    },
    { ...o, step: "reading the archive for its file catalog (once per version)" },
  );
  const { header, kept: saved } = await keepCatalog(store, src, writer, o.reporter);
  return saved ? { entries, header, built: true, read: { bytes: walked.bytes, seconds: walked.seconds } } : { entries, header, built: false };
}

/** Finishes a catalog built while walking the archive and keeps it with the version; one that cannot be kept (a read-only repository) costs only a warning. */
export async function keepCatalog(store: Store, src: FilesSource, writer: CatalogWriter, reporter: Reporter): Promise<{ header: CatalogHeader; kept: boolean }> {
  const { data, header } = await writer.finish(src.file.name, src.file.sha256);
  try {
    await store.saveCatalog(src.version, src.file, data);
    return { header, kept: true };
  } catch (err) {
    reporter.warn(`the file catalog could not be kept, so the next listing reads the archive again: ${(err as Error).message}`);
    return { header, kept: false };
  }
}

/** The listing of PATH (in one snapshot, "" for the item itself), or with a pattern every match under PATH. */
export function listing(path: string, snapshot: string, find?: string): { accept: (e: CatalogEntry) => boolean; select: (accepted: CatalogEntry[]) => CatalogEntry[] | undefined } {
  const prefix = path === "/" ? "/" : `${path}/`;
  const child = (p: string) => p.startsWith(prefix) && p.length > prefix.length && !p.slice(prefix.length).includes("/");
  const test = find === undefined ? undefined : globMatcher(find);
  return {
    accept: (e) => e.snapshot === snapshot && (e.path === path || (test ? within(e.path, path) && test(e.path) : child(e.path))),
    // Undefined: PATH is not in the archive at all.
    select: (accepted) => {
      const self = accepted.find((e) => e.path === path);
      const rest = sortByPath(accepted.filter((e) => e.path !== path));
      if (test) return self === undefined && rest.length === 0 ? undefined : rest;
      if (self !== undefined && self.type !== "dir") return [self];
      return self === undefined && rest.length === 0 ? undefined : rest;
    },
  };
}

function sortByPath(list: CatalogEntry[]): CatalogEntry[] {
  return list.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
