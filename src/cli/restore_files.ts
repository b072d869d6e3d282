// `incus-backup restore --path P …`: single files and trees out of a backup of an instance or a
// volume, into the running instance (or the volume) or into a directory (--to).

import { mkdir, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { resolve } from "node:path";
import { AppError, ExitCode, NotConfirmedError, UsageError } from "../errors";
import type { Selection } from "../core/selection";
import { itemLabel } from "../core/selection";
import type { IncusClient } from "../incus/client";
import { normalPath, within } from "../engine/catalog";
import { pickSource } from "../engine/files";
import { applyFiles, ownerMode, planFiles, stageFiles, type AppliedFiles, type FileStep, type FileTarget } from "../engine/file_restore";
import { instanceTargetFor, volumeTargetFor } from "../engine/file_targets";
import { DirectoryTarget } from "../local/directory_target";
import { Staging } from "../local/staging";
import { connect, openRepository, type RepoArgs } from "./common";
import { confirm } from "./confirm";
import { out, type CliContext } from "./context";
import { formatBytes } from "./format";
import { reporterFor } from "./progress";

export interface FileRestoreArgs extends RepoArgs {
  selection: Selection;
  version: string | undefined;
  paths: string[];
  to: string | undefined;
  snapshot: string | undefined;
  socket: string | undefined;
  force: boolean;
  dryRun: boolean;
  json: boolean;
}

/** The requested paths, normal and without one inside another. */
export function requestedPaths(texts: readonly string[]): string[] {
  const all = [...new Set(texts.map((t) => normalPath(t, "--path")))].sort();
  return all.filter((p) => !all.some((q) => q !== p && within(p, q)));
}

/** Plan lines beyond this many creations are summed up in one line. */
const SHOWN_CREATES = 20;

export async function restoreFiles(ctx: CliContext, a: FileRestoreArgs): Promise<number> {
  const paths = requestedPaths(a.paths);
  const reporter = reporterFor(ctx, "restore");
  const store = await openRepository(ctx, a);
  const src = await pickSource(store, a.selection, a.version);
  const m = src.version.manifest;
  let client: IncusClient | undefined;
  let root: string | undefined;
  if (a.to !== undefined) {
    root = resolve(a.to);
    await mkdir(root, { recursive: true }).catch((err: unknown) => {
      throw new AppError(`--to ${root}: cannot create it: ${(err as Error).message}`, ExitCode.Failure);
    });
    if (!(await stat(root)).isDirectory()) throw new UsageError(`--to ${root} is not a directory`);
  }
  // Staged in the target directory itself for --to (files are then renamed into place), else in $TMPDIR.
  const staging = await Staging.create(root ?? tmpdir());
  try {
    let target: FileTarget;
    if (root !== undefined) target = new DirectoryTarget(root, staging, reporter);
    else {
      client = connect(ctx, a.socket);
      target = src.kind === "instance" ? await instanceTargetFor(client, m, staging, ctx.signal) : await volumeTargetFor(client, m, staging, ctx.signal);
    }
    const staged = await stageFiles(store, src, paths, a.snapshot ?? "", staging, { reporter, signal: ctx.signal });
    reporter.itemStart(m);
    const steps = await planFiles(target, staged.entries, (n, of) => reporter.itemStep(m, `comparing ${n} of ${of} entries with ${target.label}`)).finally(() => reporter.itemDrop?.(m));
    const from = `${itemLabel(m)} version ${m.version}${a.snapshot ? `, snapshot ${a.snapshot}` : ""}`;
    if (!a.json) printFilePlan(ctx, from, target, steps);
    const replacing = steps.some((s) => s.action === "replace");
    if (a.dryRun) {
      if (a.json) out(ctx, JSON.stringify(filesJson(from, target, steps, undefined), null, 2));
      return ExitCode.OK;
    }
    if (replacing && a.json && !a.force) {
      throw new NotConfirmedError("with --json, a restore that replaces existing files needs --force; nothing was changed", { hint: "see the plan with --dry-run --json" });
    }
    if (replacing) await confirm(ctx, "Replace the existing files marked REPLACE above?", a.force);
    // A live line on a terminal while the files are written (the file API takes a request per entry).
    reporter.itemStart(m);
    const done = await applyFiles(target, steps, {
      signal: ctx.signal,
      progress: (n, of, bytes, ofBytes) => {
        reporter.itemStep(m, `writing ${n} of ${of} entries into ${target.label}`);
        reporter.itemBytes(m, bytes, ofBytes);
      },
    }).finally(() => reporter.itemDrop?.(m));
    if (a.json) out(ctx, JSON.stringify(filesJson(from, target, steps, done), null, 2));
    else out(ctx, `restored ${done.created + done.replaced} entr${done.created + done.replaced === 1 ? "y" : "ies"} into ${target.label} (${done.created} created, ${done.replaced} replaced, ${done.same} left as they are, ${done.skipped} skipped)`);
    return ExitCode.OK;
  } finally {
    await staging.remove();
    await client?.close();
  }
}

function describe(s: FileStep): string {
  const e = s.entry;
  const what = e.type === "file" ? `file ${ownerMode(e)}, ${formatBytes(e.size)}` : e.type === "symlink" ? `symlink to ${e.link ?? "?"}` : `${e.type} ${ownerMode(e)}`;
  return `${e.path} (${what})`;
}

export function printFilePlan(ctx: CliContext, from: string, target: FileTarget, steps: readonly FileStep[]): void {
  out(ctx, `Files from ${from}, into ${target.label}:`);
  const creates = steps.filter((s) => s.action === "create");
  for (const s of creates.slice(0, SHOWN_CREATES)) out(ctx, `  create   ${describe(s)}`);
  if (creates.length > SHOWN_CREATES) out(ctx, `  create   ... and ${creates.length - SHOWN_CREATES} more`);
  for (const s of steps) {
    if (s.action === "replace") out(ctx, `  REPLACE  ${target.where(s.entry.path)}: ${s.why ?? "it differs"}`);
    else if (s.action === "keep" || s.action === "skip") out(ctx, `  ${s.action.padEnd(8)} ${s.entry.path}: ${s.why ?? ""}`);
  }
  const same = steps.filter((s) => s.action === "same").length;
  if (same > 0) out(ctx, `  same     ${same} entr${same === 1 ? "y" : "ies"} already as in the backup`);
  if (steps.every((s) => s.action !== "create" && s.action !== "replace")) out(ctx, "Nothing to restore: the target already has these files as in the backup.");
}

function filesJson(from: string, target: FileTarget, steps: readonly FileStep[], done: AppliedFiles | undefined) {
  return {
    from,
    target: target.label,
    plan: steps.map((s) => ({ path: s.entry.path, where: target.where(s.entry.path), type: s.entry.type, action: s.action, ...(s.why ? { why: s.why } : {}) })),
    ...(done ? { result: done } : {}),
  };
}
