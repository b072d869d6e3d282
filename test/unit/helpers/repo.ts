// Temporary directories and hand-built repository versions for the tests that touch the disk.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ItemKey } from "../../../src/core/selection";
import type { Manifest } from "../../../src/core/manifest";
import { DirectoryStore } from "../../../src/repository/directory";
import type { StoredVersion } from "../../../src/repository/store";

const made: string[] = [];

/** A new empty directory, removed after the current test. */
export async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "incus-backup-unit-"));
  made.push(dir);
  return dir;
}

/** A new directory made a repository, as `incus-backup init` makes one; removed after the current test. */
export async function repoDir(): Promise<string> {
  const dir = await tempDir();
  await (await DirectoryStore.open(dir, { create: true })).repo.ensureId();
  return dir;
}

/**
 * Removes the directories tempDir made. test/unit/setup.ts calls it after each test of every
 * file: a hook registered here would run in the first file that imports this module only, as the
 * unit project shares modules between files (isolate: false).
 */
export async function removeTempDirs(): Promise<void> {
  for (const d of made.splice(0)) await rm(d, { recursive: true, force: true });
}

export const web: ItemKey = { kind: "instance", project: "default", name: "web" };
export const data: ItemKey = { kind: "volume", project: "default", pool: "fast", name: "data" };

/** The manifest fields a backup writes, for an item and version. */
export function manifestFields(key: ItemKey, version: string, extra: Partial<Manifest> = {}): Omit<Manifest, "files"> {
  return {
    format: 1,
    kind: key.kind,
    project: key.project,
    ...(key.pool === undefined ? {} : { pool: key.pool }),
    name: key.name,
    // A volume keyed by its member records it, as a backup of a cluster's local volume does.
    ...(key.member === undefined ? {} : { member: key.member }),
    version,
    created: "2025-09-14T03:00:02.123Z",
    tool: { name: "incus-backup", version: "test" },
    server: { name: "unit" },
    options: { compression: "zstd" },
    ...(key.kind === "instance" ? { status: "Running" } : {}),
    ...extra,
  };
}

/** Writes one complete version the way a backup does: archive, manifest, SHA256SUMS, rename. */
export async function writeVersion(repo: DirectoryStore, key: ItemKey, version: string, archive: string | Buffer = `${key.name} ${version}`): Promise<StoredVersion> {
  const w = await repo.begin(key, version);
  await w.writeFile(`${key.kind}.tar.zst`, archive);
  return w.commit(manifestFields(key, version));
}
