// Plain-text formatting: sizes, durations and aligned tables.

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  // Compare with what rounding will show, so 1048575 reads "1.0 MiB", not "1024 KiB", and
  // 99.96 KiB reads "100 KiB", not "100.0 KiB". Rates are fractional: bytes are rounded too.
  while (v >= 1023.5 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(n)} B` : `${v.toFixed(v >= 99.95 ? 0 : 1)} ${units[u]}`;
}

export function formatDuration(seconds: number): string {
  // Round before splitting into units, so 119.6 s reads "2m00s", not "1m60s", and 59.96 s not "60.0s".
  if (Math.round(seconds * 10) < 600) return `${seconds.toFixed(1)}s`;
  const total = Math.round(seconds);
  const m = Math.floor(total / 60);
  const s = total % 60;
  if (m < 60) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
}

/** An aligned table with a header row; columns are separated by two spaces. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

/** An item as the --json outputs name it: type, project, pool (volumes), name, and a volume's member where it is part of its key. */
export function itemJson(k: { kind: string; project: string; pool?: string; name: string; member?: string }): { type: string; project: string; pool?: string; name: string; member?: string } {
  const member = k.kind === "volume" ? k.member : undefined;
  return { type: k.kind, project: k.project, ...(k.pool === undefined ? {} : { pool: k.pool }), name: k.name, ...(member === undefined ? {} : { member }) };
}
