#!/usr/bin/env node
// Runs the integration test files in parallel groups, each group a vitest process with a lab of
// its own (so a test that restarts or fills its lab's Incus disturbs no other group), balanced by
// the files' last measured durations. Output lines carry the group's tag; the exit code is the
// first failing group's.
//
//   node scripts/test-integration.mjs [FILE...]      all integration files, or these
//   INCUS_BACKUP_TEST_GROUPS=N                        N groups (default 4; 1: the files one after another)
//
// test/integration/durations.json holds the seconds each file took: its import, tests and hooks
// (scripts/durations-reporter.mjs). --record writes it after a run that passed
// (node scripts/test-integration.mjs --record); a file not in it counts as 30 s.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const testDir = join(root, "test/integration");
const durationsFile = join(testDir, "durations.json");

const args = process.argv.slice(2);
const record = args.includes("--record");
const chosen = args.filter((a) => !a.startsWith("--"));
const files = (chosen.length > 0 ? chosen.map((f) => relative(root, join(root, f))) : readdirSync(testDir).filter((f) => f.endsWith(".test.ts")).map((f) => `test/integration/${f}`)).sort();

let durations = {};
try {
  durations = JSON.parse(readFileSync(durationsFile, "utf8"));
} catch {
  // none yet: every file counts the same
}
const cost = (f) => durations[f] ?? 30;

// Four groups by default. The suite waits often enough (servers starting, timeouts, a remote kept
// away on purpose, the service's next minute) that more groups than cores fill the gaps: process
// accounting of a three-group run counted 573 CPU-s in 476 s on two cores (60%; the kept lab's
// daemons, still running, are not in it). Full runs on a 2-core machine (2026-12-07, every run of
// the tool a process): 941 s in two groups, 738-743 s in three, 686-700 s in four, 584-712 s in
// five, 607 s in six; two fresh-clone CI runs of five groups each failed a different test under the
// load (an empty answer through `incus exec`, which the helpers now guard against, and an empty
// `list --json`, not explained), so not five. With main() in-process where a run allows it
// (test/integration/helpers/tool.ts) and the durations counting every hook
// (scripts/durations-reporter.mjs), 2026-12-08: 476-480 s in three groups (planned on the older
// figures), 412 s in four.
const DEFAULT_GROUPS = 4;
const wanted = Number(process.env.INCUS_BACKUP_TEST_GROUPS ?? DEFAULT_GROUPS);
const groupCount = Math.max(1, Math.min(Number.isInteger(wanted) && wanted > 0 ? wanted : DEFAULT_GROUPS, files.length));
// Longest first, each into the group with the least so far.
const groups = Array.from({ length: groupCount }, (_, i) => ({ tag: i === 0 ? "" : String(i + 1), files: [], seconds: 0 }));
for (const f of [...files].sort((a, b) => cost(b) - cost(a))) {
  const g = groups.reduce((a, b) => (b.seconds < a.seconds ? b : a));
  g.files.push(f);
  g.seconds += cost(f);
}

// A kept first lab (`npm run lab:up`, or KEEP_LAB=1 before) means a warm inner loop: the other
// groups keep theirs too, so that the next run skips bringing three labs up and down (11 s, and
// 3 s to remove, each, at the start and end of every run). `npm run lab:down` removes them all.
// Unset only: KEEP_LAB=0 and CI still get throwaway labs (global-setup.ts decides the rest).
const keptFirst = () => {
  const r = spawnSync("bash", [join(root, "test/lab/lab.sh"), "pointer"], { encoding: "utf8" });
  return r.status === 0 && existsSync(r.stdout.trim());
};
const keepAll = process.env.KEEP_LAB === undefined && process.env.CI !== "true" && groupCount > 1 && keptFirst();

const TAIL_LINES = 80;
const reports = mkdtempSync(join(tmpdir(), "ibk-test-groups-"));
const started = Date.now();
const label = (g) => `[group ${g.tag || "1"}]`;
for (const g of groups) console.log(`${label(g)} ${g.files.length} file(s), about ${Math.round(g.seconds)} s: ${g.files.map((f) => f.replace("test/integration/", "")).join(" ")}`);

const results = await Promise.all(
  groups.map(
    (g) =>
      new Promise((resolve) => {
        const report = join(reports, `group-${g.tag || "1"}.json`);
        const child = spawn(
          process.execPath,
          [join(root, "node_modules/vitest/vitest.mjs"), "run", "--project", "integration", "--reporter=default", `--reporter=${join(root, "scripts/durations-reporter.mjs")}`, ...g.files],
          {
            cwd: root,
            // Each group keeps its own lab; the first one is the lab `npm run lab:up` keeps.
            // Colours only where they are seen: the lines are relayed through a pipe.
            env: { ...process.env, INCUS_BACKUP_LAB_GROUP: g.tag, IBK_DURATIONS_OUT: report, ...(keepAll ? { KEEP_LAB: "1" } : {}), ...(process.stdout.isTTY ? { FORCE_COLOR: "1" } : { NO_COLOR: "1" }) },
            stdio: ["ignore", "pipe", "pipe"],
          },
        );
        // The group's last lines, shown again at the end if it fails: with groups side by side, a
        // group that failed early has its reason far up in the log, above the other group's output.
        g.tail = [];
        const keep = (l) => {
          g.tail.push(l);
          if (g.tail.length > TAIL_LINES) g.tail.shift();
        };
        const relay = (stream, out) => {
          let rest = "";
          stream.setEncoding("utf8").on("data", (d) => {
            const lines = (rest + d).split("\n");
            rest = lines.pop();
            for (const l of lines) {
              keep(l);
              out.write(groupCount > 1 ? `${label(g)} ${l}\n` : `${l}\n`);
            }
          });
          stream.on("end", () => {
            if (!rest) return;
            keep(rest);
            out.write(`${label(g)} ${rest}\n`);
          });
        };
        relay(child.stdout, process.stdout);
        relay(child.stderr, process.stderr);
        child.on("close", (code, signal) => resolve({ g, code: code ?? (signal ? 128 : 1), report }));
      }),
  ),
);

const seconds = {};
const tests = [];
for (const r of results) {
  try {
    const json = JSON.parse(readFileSync(r.report, "utf8"));
    for (const [f, t] of Object.entries(json.files)) seconds[relative(root, f)] = Math.round(t * 10) / 10;
    for (const t of json.tests) tests.push({ ...t, file: relative(testDir, t.file) });
  } catch {
    // a group that did not get to write its report failed, and says so above
  }
}
rmSync(reports, { recursive: true, force: true });

console.log(`\nintegration: ${groupCount} group(s) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
for (const r of results) {
  const mine = r.g.files.reduce((n, f) => n + (seconds[f] ?? 0), 0);
  console.log(`  ${label(r.g)} exit ${r.code}, ${r.g.files.length} file(s), ${mine.toFixed(1)} s of tests`);
}
// Where the time goes (issue 21): every file, slowest first, and the slowest tests.
console.log("\nseconds per file:");
for (const [f, t] of Object.entries(seconds).sort(([, a], [, b]) => b - a)) console.log(`  ${t.toFixed(1).padStart(7)}  ${f.replace("test/integration/", "")}`);
console.log("slowest tests:");
for (const t of tests.sort((a, b) => b.seconds - a.seconds).slice(0, 25)) console.log(`  ${t.seconds.toFixed(1).padStart(7)}  ${t.file}: ${t.name}`);
for (const r of results.filter((x) => x.code !== 0 && groupCount > 1)) {
  console.log(`\n${label(r.g)} failed (exit ${r.code}); its last ${r.g.tail.length} lines again:`);
  for (const l of r.g.tail) console.log(`${label(r.g)} ${l}`);
}
const failed = results.find((r) => r.code !== 0);
if (record && !failed) {
  const sorted = Object.fromEntries(Object.entries({ ...durations, ...seconds }).filter(([f]) => files.includes(f) || !chosen.length).sort(([a], [b]) => a.localeCompare(b)));
  writeFileSync(durationsFile, JSON.stringify(sorted, null, 2) + "\n");
  console.log(`recorded the durations in ${relative(root, durationsFile)}`);
}
process.exit(failed ? failed.code : 0);
