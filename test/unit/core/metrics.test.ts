// The metrics file's text, read back with a real Prometheus text-format parser: items, runs, escaping.

import { describe, expect, it } from "vitest";
import { escapeLabel, renderMetrics, type ListedVersion, type MetricsFacts, type RecordedRun } from "../../../src/core/metrics";
import type { ItemKey } from "../../../src/core/selection";
import { parseMetrics, sample } from "../helpers/prometheus";

const web: ItemKey = { kind: "instance", project: "default", name: "web" };
/** How an instance's manifest names it: with its root disk's pool, which its run record entry has not. */
const webListed: ItemKey = { ...web, pool: "fast" };
const data: ItemKey = { kind: "volume", project: "default", pool: "fast", name: "data" };
const db: ItemKey = { kind: "database", project: "", name: "server" };
const t = (iso: string) => Date.parse(iso) / 1000;

const v = (key: ItemKey, version: string, created: string, size: number): ListedVersion => ({ key, version, created, size });

const runs: RecordedRun[] = [
  {
    version: "20250912-030000",
    status: "ok",
    started: "2025-09-12T03:00:00Z",
    finished: "2025-09-12T03:05:00Z",
    items: [
      { label: "database", ok: true, bytes: 10, seconds: 1, key: db },
      { label: "volume default/fast/data", ok: true, bytes: 500, seconds: 40, key: data },
      { label: "instance default/web", ok: true, bytes: 1000, seconds: 120, key: web },
    ],
  },
  {
    version: "20250913-030000",
    status: "partial",
    started: "2025-09-13T03:00:00Z",
    finished: "2025-09-13T03:04:00Z",
    // A record of an older version: labels only.
    items: [
      { label: "database", ok: true, bytes: 11, seconds: 2 },
      { label: "volume default/fast/data", ok: false },
      { label: "instance default/web", ok: true, bytes: 1100, seconds: 100 },
    ],
  },
  {
    version: "20250914-030000",
    status: "partial",
    started: "2025-09-14T03:00:00Z",
    finished: "2025-09-14T03:02:00Z",
    items: [
      { label: "database", ok: true, bytes: 12, seconds: 3, key: db },
      { label: "volume default/fast/data", ok: false, key: data },
      { label: "instance default/web", ok: true, bytes: 1200, seconds: 90, key: web },
      // Never backed up: known from its record only.
      { label: "instance default/new", ok: false, key: { kind: "instance", project: "default", name: "new" } },
    ],
  },
];

const facts: MetricsFacts = {
  readable: true,
  runs,
  versions: [
    v(db, "20250912-030000", "2025-09-12T03:00:00Z", 10),
    v(db, "20250914-030000", "2025-09-14T03:00:00Z", 12),
    v(data, "20250912-030000", "2025-09-12T03:00:30Z", 500),
    v(webListed, "20250913-030000", "2025-09-13T03:01:00Z", 1100),
    v(webListed, "20250914-030000", "2025-09-14T03:01:00Z", 1200),
  ],
  lastRun: runs[2]!,
  lastPrune: { finished: "2025-09-14T03:02:30Z", removed: 3 },
};

describe("renderMetrics", () => {
  it("per item: the newest version's start, duration and size, and the failures since the last run that backed it up", () => {
    const m = parseMetrics(renderMetrics(facts));
    const webL = { kind: "instance", project: "default", name: "web" };
    expect(sample(m, "incus_backup_item_last_success_timestamp_seconds", webL)).toBe(t("2025-09-14T03:01:00Z"));
    expect(sample(m, "incus_backup_item_last_success_duration_seconds", webL)).toBe(90);
    expect(sample(m, "incus_backup_item_last_success_bytes", webL)).toBe(1200);
    expect(sample(m, "incus_backup_item_consecutive_failures", webL)).toBe(0);
    // The volume failed twice since 12 September: once in a record with its key, once by its label.
    const dataL = { kind: "volume", project: "default", pool: "fast", name: "data" };
    expect(sample(m, "incus_backup_item_last_success_timestamp_seconds", dataL)).toBe(t("2025-09-12T03:00:30Z"));
    expect(sample(m, "incus_backup_item_last_success_duration_seconds", dataL)).toBe(40);
    expect(sample(m, "incus_backup_item_consecutive_failures", dataL)).toBe(2);
    expect(sample(m, "incus_backup_item_last_success_bytes", { kind: "database", name: "server" })).toBe(12);
    // No version yet: failures only.
    const newL = { kind: "instance", name: "new" };
    expect(sample(m, "incus_backup_item_consecutive_failures", newL)).toBe(1);
    expect(sample(m, "incus_backup_item_last_success_timestamp_seconds", newL)).toBeUndefined();
    // Only volumes have a pool label.
    expect(m.get("incus_backup_item_last_success_bytes")!.metrics.map((s) => Object.keys(s.labels ?? {}).sort().join(","))).toEqual([
      "kind,name,project",
      "kind,name,project",
      "kind,name,pool,project",
    ]);
  });

  it("per run: the last run's status as one of five, its times and items; the repository's size; the last prune", () => {
    const m = parseMetrics(renderMetrics(facts));
    for (const status of ["ok", "partial", "failed", "interrupted", "running"]) {
      expect(sample(m, "incus_backup_last_run_status", { status })).toBe(status === "partial" ? 1 : 0);
    }
    expect(sample(m, "incus_backup_last_run_start_timestamp_seconds")).toBe(t("2025-09-14T03:00:00Z"));
    expect(sample(m, "incus_backup_last_run_end_timestamp_seconds")).toBe(t("2025-09-14T03:02:00Z"));
    expect(sample(m, "incus_backup_last_run_items", { result: "ok" })).toBe(2);
    expect(sample(m, "incus_backup_last_run_items", { result: "failed" })).toBe(2);
    expect(sample(m, "incus_backup_repository_size_bytes")).toBe(10 + 12 + 500 + 1100 + 1200);
    expect(sample(m, "incus_backup_repository_versions")).toBe(5);
    expect(sample(m, "incus_backup_repository_readable")).toBe(1);
    expect(sample(m, "incus_backup_last_prune_end_timestamp_seconds")).toBe(t("2025-09-14T03:02:30Z"));
    expect(sample(m, "incus_backup_last_prune_removed_versions")).toBe(3);
  });

  it("every family has HELP and TYPE gauge and the incus_backup_ prefix; a service run without a record has no item counts", () => {
    const failedEarly = { ...facts, lastRun: { status: "failed" as const, started: "2025-09-15T03:00:00Z", finished: "2025-09-15T03:00:01Z" } };
    const m = parseMetrics(renderMetrics(failedEarly));
    for (const f of m.values()) {
      expect(f.name).toMatch(/^incus_backup_[a-z_]+$/);
      expect(f.help.length).toBeGreaterThan(10);
      expect(f.type).toBe("GAUGE");
    }
    expect(sample(m, "incus_backup_last_run_status", { status: "failed" })).toBe(1);
    expect(m.has("incus_backup_last_run_items")).toBe(false);
  });

  it("a repository that could not be read: readable 0 and nothing else", () => {
    const m = parseMetrics(renderMetrics({ readable: false, runs: [], versions: [], lastRun: null, lastPrune: null }));
    expect([...m.keys()]).toEqual(["incus_backup_repository_readable"]);
    expect(sample(m, "incus_backup_repository_readable")).toBe(0);
  });

  it("escapes label values: a backslash, a double quote and a line feed come back as they were", () => {
    const odd = 'we"ird\\na\nme';
    const key: ItemKey = { kind: "image", project: "default", name: odd };
    const text = renderMetrics({ ...facts, versions: [v(key, "20250914-030000", "2025-09-14T03:00:00Z", 5)] });
    expect(text).toContain(`name="${escapeLabel(odd)}"`);
    expect(escapeLabel(odd)).toBe('we\\"ird\\\\na\\nme');
    const m = parseMetrics(text);
    expect(sample(m, "incus_backup_item_last_success_bytes", { name: odd })).toBe(5);
  });
});

describe("a cluster's volumes of one name on two members", () => {
  const vd = { kind: "volume" as const, project: "default", pool: "local", name: "vd" };
  const on = (member: string): ItemKey => ({ ...vd, member });
  it("are two series with a member label; a record from before volumes were keyed by member joins by the entry's member", () => {
    const facts: MetricsFacts = {
      readable: true,
      runs: [
        // Older: the key without the member, the member beside it.
        { version: "20250913-030000", status: "partial", started: "2025-09-13T03:00:00Z", items: [{ label: "volume default/local/vd", ok: false, key: vd, member: "node2" }] },
        {
          version: "20250914-030000",
          status: "partial",
          started: "2025-09-14T03:00:00Z",
          items: [
            { label: "volume default/local/vd on node1", ok: true, bytes: 5, seconds: 7, key: on("node1"), member: "node1" },
            { label: "volume default/local/vd on node2", ok: false, key: on("node2"), member: "node2" },
          ],
        },
      ],
      versions: [v(on("node1"), "20250914-030000", "2025-09-14T03:00:10Z", 5), v(on("node2"), "20250912-030000", "2025-09-12T03:00:10Z", 6)],
      lastRun: null,
      lastPrune: null,
      drills: [{ key: on("node2"), ok: true, finished: "2025-09-14T04:00:00Z", seconds: 2 }],
    };
    const m = parseMetrics(renderMetrics(facts));
    expect(sample(m, "incus_backup_item_last_success_duration_seconds", { member: "node1" })).toBe(7);
    expect(sample(m, "incus_backup_item_consecutive_failures", { member: "node1" })).toBe(0);
    expect(sample(m, "incus_backup_item_last_success_bytes", { member: "node2" })).toBe(6);
    expect(sample(m, "incus_backup_item_consecutive_failures", { member: "node2" })).toBe(2);
    expect(m.get("incus_backup_item_consecutive_failures")!.metrics.map((s) => s.labels)).toEqual([
      { kind: "volume", project: "default", pool: "local", name: "vd", member: "node1" },
      { kind: "volume", project: "default", pool: "local", name: "vd", member: "node2" },
    ]);
    expect(sample(m, "incus_backup_item_last_drill_success", { member: "node2" })).toBe(1);
  });
});

describe("restore drills in the metrics", () => {
  it("give each drilled item its last drill's result, time and duration", () => {
    const facts: MetricsFacts = {
      readable: true,
      runs: [],
      versions: [],
      lastRun: null,
      lastPrune: null,
      drills: [
        { key: web, ok: true, finished: "2025-09-14T04:00:00Z", seconds: 12.5 },
        { key: data, ok: false, finished: "2025-09-14T04:01:00Z", seconds: 3 },
      ],
    };
    const f = parseMetrics(renderMetrics(facts));
    expect(sample(f, "incus_backup_item_last_drill_success", { kind: "instance", name: "web" })).toBe(1);
    expect(sample(f, "incus_backup_item_last_drill_success", { kind: "volume", pool: "fast", name: "data" })).toBe(0);
    expect(sample(f, "incus_backup_item_last_drill_timestamp_seconds", { name: "web" })).toBe(t("2025-09-14T04:00:00Z"));
    expect(sample(f, "incus_backup_item_last_drill_duration_seconds", { name: "data" })).toBe(3);
  });
});
