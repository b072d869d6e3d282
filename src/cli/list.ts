// `incus-backup list`: what the backup directory holds, as a table or as JSON.

import { command, flag } from "cmd-ts";
import { ExitCode } from "../errors";
import { KINDS, itemId, matches } from "../core/selection";
import type { StoredVersion } from "../repository/store";
import { dirArg, openRepository, selectionOf, selectorArgs } from "./common";
import { err, out, type CliContext } from "./context";
import { formatBytes, table } from "./format";

export function listCommand(ctx: CliContext) {
  return command({
    name: "list",
    description: "List the backups: one row per item, or one per version with --name. Unfinished backups never show.",
    examples: [
      { description: "Everything", command: "incus-backup list --dir=/mnt/nas/sysbackup/incus" },
      { description: "Instances only", command: "incus-backup list --instances --dir=/mnt/nas/sysbackup/incus" },
      { description: "Every version of one instance, as JSON", command: "incus-backup list --instance --name web --json" },
    ],
    args: {
      ...selectorArgs("read"),
      ...dirArg,
      json: flag({ long: "json", description: "print a JSON array of versions" }),
    },
    handler: async (a): Promise<number> => {
      const selection = selectionOf(a, KINDS, true);
      const repo = await openRepository(ctx, a);
      const { versions, damaged } = await repo.list(selection.kinds);
      const chosen = versions.filter((v) => matches(selection, v.manifest));
      for (const d of damaged) err(ctx, `warning: damaged backup at ${d.location}: ${d.problem} (run \`incus-backup verify\`)`);
      if (a.json) {
        out(ctx, JSON.stringify(chosen.map(jsonRow), null, 2));
        return ExitCode.OK;
      }
      // What the last run found but left out (excluded, ephemeral) has no backups to list: say so.
      if (a.names.length === 0 && (selection.kinds.includes("instance") || selection.kinds.includes("volume"))) {
        const last = (await repo.listRuns().catch(() => [])).at(-1);
        const kinds = selection.kinds.filter((k) => k === "instance" || k === "volume");
        for (const x of last?.skipped ?? []) {
          if (kinds.some((k) => x.label.startsWith(`${k} ${selection.project === undefined ? "" : `${selection.project}/`}`))) err(ctx, `not backed up by the last run (${last!.version}): ${x.label}: ${x.reason}`);
        }
      }
      if (chosen.length === 0) {
        err(ctx, "no backups found");
        return ExitCode.OK;
      }
      // A cluster's backups say which member each item was on.
      const clustered = chosen.some((v) => v.manifest.member !== undefined);
      const member = (v: StoredVersion) => (clustered ? [v.manifest.member ?? "-"] : []);
      if (a.names.length > 0) {
        const rows = sortEntries(chosen).map((v) => [
          v.manifest.kind,
          v.manifest.project,
          displayName(v),
          ...member(v),
          v.manifest.version,
          v.manifest.created.replace(/\.\d+Z$/, "Z"),
          formatBytes(v.size),
        ]);
        out(ctx, table(["TYPE", "PROJECT", "NAME", ...(clustered ? ["MEMBER"] : []), "VERSION", "CREATED", "SIZE"], rows));
        return ExitCode.OK;
      }
      const groups = new Map<string, StoredVersion[]>();
      for (const v of sortEntries(chosen)) {
        const id = itemId(v.manifest);
        groups.set(id, [...(groups.get(id) ?? []), v]);
      }
      const rows = [...groups.values()].map((g) => {
        const latest = g[g.length - 1]!;
        return [
          latest.manifest.kind,
          latest.manifest.project,
          displayName(latest),
          ...member(latest),
          String(g.length),
          latest.manifest.version,
          formatBytes(g.reduce((n, v) => n + v.size, 0)),
        ];
      });
      out(ctx, table(["TYPE", "PROJECT", "NAME", ...(clustered ? ["MEMBER"] : []), "VERSIONS", "LATEST", "SIZE"], rows));
      return ExitCode.OK;
    },
  });
}

function displayName(v: StoredVersion): string {
  const m = v.manifest;
  if (m.kind === "volume") return `${m.pool}/${m.name}`;
  if (m.kind === "image") return m.aliases?.length ? `${m.aliases.join(",")} (${m.name.slice(0, 12)})` : m.name.slice(0, 12);
  if (m.kind === "database") return "-";
  return m.name;
}

function sortEntries(list: StoredVersion[]): StoredVersion[] {
  return [...list].sort(
    (x, y) =>
      x.manifest.kind.localeCompare(y.manifest.kind) ||
      x.manifest.project.localeCompare(y.manifest.project) ||
      displayName(x).localeCompare(displayName(y)) ||
      // A cluster's volumes of one name: each member's versions together.
      (x.manifest.kind === "volume" ? (x.manifest.member ?? "").localeCompare(y.manifest.member ?? "") : 0) ||
      x.manifest.version.localeCompare(y.manifest.version),
  );
}

function jsonRow(v: StoredVersion) {
  const m = v.manifest;
  const main = m.files.find((f) => f.name.startsWith(`${m.kind}.`)) ?? m.files[0];
  return {
    type: m.kind,
    project: m.project,
    ...(m.pool === undefined ? {} : { pool: m.pool }),
    name: m.name,
    ...(m.aliases === undefined ? {} : { aliases: m.aliases }),
    ...(m.member === undefined ? {} : { member: m.member }),
    version: m.version,
    created: m.created,
    size: v.size,
    sha256: main?.sha256 ?? null,
    files: m.files,
    path: v.location,
  };
}
