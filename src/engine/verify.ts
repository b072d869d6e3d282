// Checks backups: every file against its manifest (size, sha256) and, deeply, that archives read to the end.

import { createHash } from "node:crypto";
import { IntegrityError, RepositoryError, errorMessage } from "../errors";
import { itemId, matches, type ItemKey, type Selection } from "../core/selection";
import type { DamagedVersion, Store, StoredVersion } from "../repository/store";
import { readArchive } from "./archive";
import { IMAGE_FILES } from "./server_items";
import { DATABASE_FILES } from "./database";
import type { Reporter } from "./reporter";

export interface VerifyResult {
  item: ItemKey;
  version: string;
  location: string;
  ok: boolean;
  problems: string[];
  bytes: number;
  /**
   * Nothing was found wrong with the backup, but it could not be checked on this machine (a
   * decompressor is missing): a repository problem (exit 8), not an integrity one (9).
   */
  uncheckable?: boolean;
}

/**
 * The verify command: checks the selected versions (those matching `version`, a prefix, if given).
 * A failure of a version that is gone by the end (a prune removed it while it was read) is not
 * damage, and is left out.
 */
export async function verifyRun(
  store: Store,
  opts: { selection: Selection; version?: string; deep: boolean; readData?: string; reporter: Reporter },
  signal: AbortSignal,
): Promise<VerifyResult[]> {
  if (store.checkStructure) {
    // restic check: the repository's own structure (and a share of its data, if asked) first.
    opts.reporter.info(`checking the repository's structure${opts.readData ? ` and reading ${opts.readData === "all" ? "all" : opts.readData} of its data` : ""} (${store.location})`);
    const problems = await store.checkStructure(opts.readData, signal);
    if (problems.length > 0) throw new IntegrityError(problems.join("; "));
  }
  const listing = await store.list(opts.selection.kinds);
  const pick = (key: ItemKey, v: string) => matches(opts.selection, key) && (opts.version === undefined || v.startsWith(opts.version));
  const versions = listing.versions.filter((v) => pick(v.manifest, v.manifest.version));
  const damaged = listing.damaged.filter((d) => pick(d.key, d.version));
  const results = await verifyVersions(store, versions, damaged, { deep: opts.deep, reporter: opts.reporter, signal });
  if (results.every((r) => r.ok)) return results;
  const now = await store.list(opts.selection.kinds);
  const still = new Set([...now.versions.map((v) => `${itemId(v.manifest)}@${v.manifest.version}`), ...now.damaged.map((d) => `${itemId(d.key)}@${d.version}`)]);
  return results.filter((r) => r.ok || still.has(`${itemId(r.item)}@${r.version}`));
}

/** Verifies each version; damaged ones (no usable manifest) are failures too. Never throws per item. */
export async function verifyVersions(
  store: Store,
  versions: StoredVersion[],
  damaged: DamagedVersion[],
  options: { deep: boolean; reporter: Reporter; signal: AbortSignal },
): Promise<VerifyResult[]> {
  const results: VerifyResult[] = damaged.map((d) => ({ item: d.key, version: d.version, location: d.location, ok: false, problems: [d.problem], bytes: 0 }));
  for (const d of results) options.reporter.itemDone(d.item, { ok: false, error: `${d.version}: ${d.problems[0]}`, seconds: 0 });
  for (const v of versions) {
    if (options.signal.aborted) break;
    const item = v.manifest;
    const t0 = Date.now();
    options.reporter.itemStart(item);
    const problems: string[] = [];
    let uncheckable = false;
    for (const f of v.manifest.files) {
      options.reporter.itemStep(item, `checking ${f.name}`);
      try {
        // A store that checked its own structure needs the data read only when asked to (--deep).
        if (store.checkStructure && !options.deep) await store.checkFileSize(v, f);
        else await store.verifyFile(v, f, options.signal);
      } catch (err) {
        problems.push(errorMessage(err));
      }
    }
    if (options.deep && problems.length === 0 && !options.signal.aborted) {
      options.reporter.itemStep(item, "reading the archive to the end");
      try {
        const p = await deepCheck(store, v, options.signal);
        if (p) problems.push(p);
      } catch (err) {
        problems.push(errorMessage(err));
        uncheckable = err instanceof RepositoryError;
      }
    }
    const ok = problems.length === 0;
    const seconds = (Date.now() - t0) / 1000;
    results.push({ item, version: v.manifest.version, location: v.location, ok, problems, bytes: v.size, ...(uncheckable ? { uncheckable } : {}) });
    options.reporter.itemDone(item, ok ? { ok, seconds, bytes: v.size, note: v.manifest.version } : { ok, seconds, error: `${v.manifest.version}: ${problems.join("; ")}` });
  }
  return results;
}

/** The kind-specific deep check; returns a problem or undefined. */
async function deepCheck(store: Store, v: StoredVersion, signal: AbortSignal): Promise<string | undefined> {
  const m = v.manifest;
  if (m.kind === "instance" || m.kind === "volume") {
    const archive = m.files.find((f) => f.name.startsWith(`${m.kind}.`));
    if (!archive) return `no ${m.kind} archive in the manifest`;
    // Its sha256 was checked just before: read it as it is.
    const check = await readArchive(await store.streamFile(v, archive, signal), `${v.location}/${archive.name}`, signal);
    if (check.indexName === undefined) return `${archive.name} has no backup/index.yaml`;
    if (check.indexName !== m.name) return `${archive.name} holds a backup of "${check.indexName}", not of "${m.name}"`;
    return undefined;
  }
  if (m.kind === "image") {
    const names = m.options.split === true ? [IMAGE_FILES.meta, IMAGE_FILES.rootfs] : [IMAGE_FILES.unified];
    const hash = createHash("sha256");
    for (const n of names) {
      const file = m.files.find((f) => f.name === n);
      if (!file) return `${n} is not in the manifest`;
      for await (const chunk of await store.streamFile(v, file, signal)) hash.update(chunk as Buffer);
    }
    const fp = hash.digest("hex");
    return fp === m.name ? undefined : `the image files hash to ${fp.slice(0, 12)}, not to the fingerprint ${m.name.slice(0, 12)}`;
  }
  const config = m.files.find((f) => f.name === DATABASE_FILES.config);
  if (!config) return `${DATABASE_FILES.config} is not in the manifest`;
  const text = (await store.readSmallFile(v, config)).toString("utf8");
  try {
    const snap = JSON.parse(text) as { format?: unknown; entities?: unknown };
    if (snap.format !== 1 || !Array.isArray(snap.entities)) return `${DATABASE_FILES.config} is not a configuration export`;
  } catch {
    return `${DATABASE_FILES.config} is not valid JSON`;
  }
  return undefined;
}
