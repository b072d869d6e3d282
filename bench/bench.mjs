#!/usr/bin/env node
// Benchmark: incus-backup against plain `incus export` / `incus import` on the same data, in one run.
//
// It brings up (or reuses) the kept test lab, creates N busybox instances holding SIZE MiB each,
// then alternates A/B runs:
//   backup:  `incus-backup backup --instances --name ...`  vs  a loop of
//            `incus export NAME FILE --compression zstd --instance-only && sync -f FILE`, one after
//            another (the sync makes it as durable as the tool's backup, which fsyncs every file);
//   restore: `incus-backup restore --all --force` onto a server emptied of those instances  vs
//            a loop of `incus import FILE`.
// With --by-hand it also times the same `incus export` commands all started at once: what a tool
// built on the server's exports can at best reach on this machine.
// It prints the median wall times of each, the ratios, and the tool's peak RSS (GNU time).
//
// --data says what the instances hold: `mixed` (default) is half random bytes, half a hex dump of
// random bytes, which costs zstd real work, as a root filesystem's binaries and text do; `cheap` is
// half random bytes, half zeros, which costs zstd next to nothing (media, compressed files, sparse
// images), so the tool's own cost per byte shows.
//
// Usage: node bench/bench.mjs [--instances N] [--size MiB] [--runs R] [--parallel P] [--lab 6.0|7.0]
//        [--data mixed|cheap] [--by-hand] [--keep] [--json FILE]
// Needs the built bundle (npm run build) and what the tests need (root, Incus, see test/lab).

import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundle, labEnv, median, run, tool } from "./lib.mjs";

function parseArgs(argv) {
  const o = { instances: 4, size: 100, runs: 3, parallel: undefined, lab: process.env.INCUS_BACKUP_LAB_VERSION ?? "6.0", data: "mixed", byHand: false, keep: false, json: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === "--instances") o.instances = Number(v());
    else if (a === "--size") o.size = Number(v());
    else if (a === "--runs") o.runs = Number(v());
    else if (a === "--parallel") o.parallel = Number(v());
    else if (a === "--lab") o.lab = v();
    else if (a === "--data") o.data = v();
    else if (a === "--keep") o.keep = true;
    else if (a === "--by-hand") o.byHand = true;
    else if (a === "--json") o.json = v();
    else if (a === "--help" || a === "-h") {
      console.log(readFileHead());
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!(o.instances >= 1 && o.size >= 1 && o.runs >= 1)) throw new Error("--instances, --size and --runs must be positive");
  if (!DATA[o.data]) throw new Error(`--data must be one of ${Object.keys(DATA).join(", ")}`);
  return o;
}

function readFileHead() {
  return "usage: node bench/bench.mjs [--instances N] [--size MiB] [--runs R] [--parallel P] [--lab 6.0|7.0] [--data mixed|cheap] [--by-hand] [--keep] [--json FILE]";
}

/** The second half of each instance's data (the first is random bytes): a shell pipeline writing MIB MiB to stdout. */
const DATA = {
  // A hex dump of random bytes compresses about 2:1 and costs the compressor real work. (A
  // repeated line would compress at memory speed and hide the cost of compression.)
  mixed: (mib) => `dd if=/dev/urandom bs=1M count=${mib} 2>/dev/null | od -An -tx1 -v | head -c ${mib * 1048576}`,
  // Zeros: next to nothing for zstd, so what is left is moving the bytes.
  cheap: (mib) => `dd if=/dev/zero bs=1M count=${mib} 2>/dev/null`,
};

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (!existsSync(bundle)) throw new Error("no dist/incus-backup.mjs: run `npm run build` first");
  const env = labEnv(o.lab);
  const incus = (...args) => run("incus", args, env);
  const server = JSON.parse((await incus("query", "/1.0")).out);
  const tag = Math.random().toString(36).slice(2, 7);
  const names = Array.from({ length: o.instances }, (_, i) => `bench-${tag}-${i}`);
  const work = mkdtempSync(join(tmpdir(), "ibk-bench-"));
  const log = (s) => process.stderr.write(`${s}\n`);
  log(`lab ${o.lab} (Incus ${server.environment.server_version}), ${o.instances} x ${o.size} MiB of ${o.data} data, ${o.runs} runs, work dir ${work}`);

  try {
    for (const n of names) {
      await incus("launch", "busybox", n);
      const half = Math.max(1, Math.floor(o.size / 2));
      await incus("exec", n, "--", "sh", "-c", `dd if=/dev/urandom of=/root/random bs=1M count=${half} 2>/dev/null && ${DATA[o.data](o.size - half)} > /root/second && sync`);
      await incus("stop", n);
    }
    const nameArgs = names.flatMap((n) => ["--name", n]);
    const par = o.parallel === undefined ? [] : ["--parallel", String(o.parallel)];
    const results = { toolBackup: [], exportLoop: [], exportAtOnce: [], toolRestore: [], importLoop: [], rss: [] };
    // What the tool does for each item, by hand: the export, then the file made durable.
    const exportDurably = async (n, file) => {
      await incus("export", n, file, "--compression", "zstd", "--instance-only");
      await run("sync", ["-f", file], env);
    };
    const deleteAll = async () => {
      for (const n of names) await incus("delete", "--force", n);
    };

    for (let r = 0; r < o.runs; r++) {
      const repo = join(work, `repo-${r}`);
      const exp = join(work, `export-${r}`);
      spawnSync("mkdir", ["-p", repo, exp]);
      // Made a repository first, untimed (`incus export` needs no such step either).
      await run(process.execPath, [bundle, "init", "--dir", repo], env);
      const toolFirst = r % 2 === 0;
      const doTool = async () => {
        const t = await tool(env, ["backup", "--instances", ...nameArgs, ...par, "--dir", repo]);
        results.toolBackup.push(t.seconds);
        results.rss.push(t.rssMiB);
        log(`run ${r + 1}: incus-backup backup ${t.seconds.toFixed(2)} s, peak RSS ${t.rssMiB.toFixed(0)} MiB`);
      };
      const doExport = async () => {
        const t0 = performance.now();
        for (const n of names) await exportDurably(n, join(exp, `${n}.tar.zst`));
        const s = (performance.now() - t0) / 1000;
        results.exportLoop.push(s);
        log(`run ${r + 1}: incus export loop ${s.toFixed(2)} s`);
      };
      const doAtOnce = async () => {
        const dir = join(work, `by-hand-${r}`);
        spawnSync("mkdir", ["-p", dir]);
        const t0 = performance.now();
        await Promise.all(names.map((n) => exportDurably(n, join(dir, `${n}.tar.zst`))));
        const s = (performance.now() - t0) / 1000;
        results.exportAtOnce.push(s);
        log(`run ${r + 1}: incus export, all at once ${s.toFixed(2)} s`);
        rmSync(dir, { recursive: true, force: true });
      };
      // The tool and the loop alternate; the exports by hand take each place in turn.
      const order = toolFirst ? [doTool, doExport] : [doExport, doTool];
      if (o.byHand) order.splice(r % 3, 0, doAtOnce);
      for (const step of order) await step();

      const doRestore = async () => {
        await deleteAll();
        const t = await tool(env, ["restore", "--instances", ...nameArgs, ...par, "--force", "--no-start", "--dir", repo]);
        results.toolRestore.push(t.seconds);
        results.rss.push(t.rssMiB);
        log(`run ${r + 1}: incus-backup restore ${t.seconds.toFixed(2)} s, peak RSS ${t.rssMiB.toFixed(0)} MiB`);
      };
      const doImport = async () => {
        await deleteAll();
        const t0 = performance.now();
        for (const f of readdirSync(exp)) await incus("import", join(exp, f));
        const s = (performance.now() - t0) / 1000;
        results.importLoop.push(s);
        log(`run ${r + 1}: incus import loop ${s.toFixed(2)} s`);
      };
      if (toolFirst) {
        await doRestore();
        await doImport();
      } else {
        await doImport();
        await doRestore();
      }
      rmSync(repo, { recursive: true, force: true });
      rmSync(exp, { recursive: true, force: true });
    }

    const row = (label, a, b) => {
      const ma = median(a);
      const mb = median(b);
      return { label, tool: ma, incus: mb, ratio: ma / mb };
    };
    const rows = [row("backup", results.toolBackup, results.exportLoop), row("restore", results.toolRestore, results.importLoop)];
    const peak = Math.max(...results.rss);
    const summary = {
      lab: o.lab,
      incus: server.environment.server_version,
      data: o.data,
      instances: o.instances,
      sizeMiB: o.size,
      runs: o.runs,
      parallel: o.parallel ?? null,
      rows,
      peakRssMiB: peak,
      raw: results,
    };
    console.log(`\nincus-backup vs incus, ${o.instances} x ${o.size} MiB of ${o.data} data, Incus ${server.environment.server_version}, median of ${o.runs} alternating runs`);
    console.log("              incus-backup   incus loop   ratio");
    for (const x of rows) console.log(`${x.label.padEnd(12)}  ${x.tool.toFixed(2).padStart(10)} s  ${x.incus.toFixed(2).padStart(9)} s   ${x.ratio.toFixed(2)}`);
    if (o.byHand) {
      const m = median(results.exportAtOnce);
      summary.exportAtOnce = m;
      console.log(`by hand: the ${o.instances} exports all at once ${m.toFixed(2)} s, ${(m / rows[0].incus).toFixed(2)} of the loop (the best a tool built on them can do here)`);
    }
    console.log(`peak RSS of incus-backup: ${peak.toFixed(0)} MiB`);
    if (o.json) writeFileSync(o.json, JSON.stringify(summary, null, 2) + "\n");
  } finally {
    if (!o.keep) {
      for (const n of names) await incus("delete", "--force", n).catch(() => undefined);
    }
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench: ${err.message}`);
  process.exit(1);
});
