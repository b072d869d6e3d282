#!/usr/bin/env node
// Benchmark: single files out of a backup, incus-backup against zstd and GNU tar on the same
// archive, in one run.
//
// It brings up (or reuses) the kept test lab, creates a busybox instance holding SIZE MiB (half
// random, half compressible text, under /srv/big) and a tree of small files under /etc/app, backs
// it up once into a directory repository, then alternates A/B runs on that version's archive:
//   first listing:    `incus-backup files /` with no catalog kept  vs  `zstd -dc FILE | tar -t`;
//   repeated listing: `incus-backup files /` with the catalog kept (target: under a second);
//   one small file:   `incus-backup restore --path /etc/app/config.yml --to DIR`  vs
//                     `zstd -dc FILE | tar -x -C DIR backup/container/rootfs/etc/app/config.yml`,
//                     without a catalog (the tool reads the whole archive, and keeps the catalog)
//                     and with one (it stops after the file).
// It prints the median wall times, the ratios and the tool's peak RSS.
//
// Usage: node bench/files.mjs [--size MiB] [--runs R] [--lab 6.0|7.0] [--json FILE]
// Needs the built bundle (npm run build) and what the tests need (root, Incus, see test/lab).

import { mkdtempSync, mkdirSync, rmSync, writeFileSync, existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundle, labEnv, median, run, tool } from "./lib.mjs";

function parseArgs(argv) {
  const o = { size: 1024, runs: 3, lab: process.env.INCUS_BACKUP_LAB_VERSION ?? "6.0", json: undefined };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === "--size") o.size = Number(v());
    else if (a === "--runs") o.runs = Number(v());
    else if (a === "--lab") o.lab = v();
    else if (a === "--json") o.json = v();
    else if (a === "--help" || a === "-h") {
      console.log("usage: node bench/files.mjs [--size MiB] [--runs R] [--lab 6.0|7.0] [--json FILE]");
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!(o.size >= 1 && o.runs >= 1)) throw new Error("--size and --runs must be positive");
  return o;
}

const sh = (cmd, env) => run("sh", ["-c", cmd], env);

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (!existsSync(bundle)) throw new Error("no dist/incus-backup.mjs: run `npm run build` first");
  const env = labEnv(o.lab);
  const incus = (...args) => run("incus", args, env);
  const server = JSON.parse((await incus("query", "/1.0")).out);
  const name = `bench-files-${Math.random().toString(36).slice(2, 7)}`;
  const work = mkdtempSync(join(tmpdir(), "ibk-bench-files-"));
  const repo = join(work, "repo");
  const log = (s) => process.stderr.write(`${s}\n`);
  log(`lab ${o.lab} (Incus ${server.environment.server_version}), one instance of ${o.size} MiB, ${o.runs} runs, work dir ${work}`);
  try {
    await incus("launch", "busybox", name);
    const half = Math.max(1, Math.floor(o.size / 2));
    await incus(
      "exec", name, "--", "sh", "-c",
      `mkdir -p /srv/big /etc/app && dd if=/dev/urandom of=/srv/big/random bs=1M count=${half} 2>/dev/null && ` +
        `dd if=/dev/urandom bs=1M count=${o.size - half} 2>/dev/null | od -An -tx1 -v | head -c ${(o.size - half) * 1048576} > /srv/big/text && ` +
        `for d in $(seq 1 40); do mkdir -p /srv/tree/$d; for f in $(seq 1 50); do echo "$d $f" > /srv/tree/$d/$f.txt; done; done && ` +
        `echo 'listen: 8080' > /etc/app/config.yml && sync`,
    );
    mkdirSync(repo);
    await run(process.execPath, [bundle, "init", `--dir=${repo}`], env);
    await run(process.execPath, [bundle, "backup", "--instance", "--name", name, `--dir=${repo}`], env);
    const versionDir = join(repo, "instances", "default", name);
    const version = readdirSync(versionDir).find((v) => /^\d{8}-\d{6}$/.test(v));
    const archive = join(versionDir, version, readdirSync(join(versionDir, version)).find((f) => /^instance\.tar\./.test(f) && !f.endsWith(".catalog.gz")));
    const catalog = `${archive}.catalog.gz`;
    const entries = Number((await sh(`zstd -dc '${archive}' | tar -t | wc -l`, env)).out.trim());
    log(`archive ${archive} (${entries} tar entries)`);
    const target = "backup/container/rootfs/etc/app/config.yml";
    const r = { firstTool: [], tarList: [], repeatTool: [], extractFirst: [], extractKept: [], tarExtract: [], rss: [] };
    const files = ["files", "--instance", "--name", name, `--dir=${repo}`, "/"];
    const extract = (to) => ["restore", "--instance", "--name", name, `--dir=${repo}`, "--path", "/etc/app/config.yml", "--to", to];
    for (let i = 0; i < o.runs; i++) {
      rmSync(catalog, { force: true });
      const a = await tool(env, files);
      r.firstTool.push(a.seconds);
      r.rss.push(a.rssMiB);
      r.tarList.push((await sh(`zstd -dc '${archive}' | tar -t >/dev/null`, env)).seconds);
      r.repeatTool.push((await tool(env, files)).seconds);
      rmSync(catalog, { force: true });
      const to1 = mkdtempSync(join(work, "x-"));
      r.extractFirst.push((await tool(env, extract(to1))).seconds);
      const to2 = mkdtempSync(join(work, "x-"));
      r.extractKept.push((await tool(env, extract(to2))).seconds);
      const to3 = mkdtempSync(join(work, "x-"));
      r.tarExtract.push((await sh(`zstd -dc '${archive}' | tar -x -C '${to3}' '${target}'`, env)).seconds);
      for (const d of [to1, to2, to3]) rmSync(d, { recursive: true, force: true });
      log(`run ${i + 1}: list ${a.seconds.toFixed(2)} s / tar -t ${r.tarList.at(-1).toFixed(2)} s, again ${r.repeatTool.at(-1).toFixed(2)} s; ` +
        `one file ${r.extractFirst.at(-1).toFixed(2)} s (no catalog) / ${r.extractKept.at(-1).toFixed(2)} s (catalog) / tar -x ${r.tarExtract.at(-1).toFixed(2)} s`);
    }
    const m = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, median(v)]));
    const result = {
      lab: o.lab,
      server: server.environment.server_version,
      sizeMiB: o.size,
      runs: o.runs,
      tarEntries: entries,
      seconds: m,
      ratios: {
        firstListing: m.firstTool / m.tarList,
        extractNoCatalog: m.extractFirst / m.tarExtract,
        extractWithCatalog: m.extractKept / m.tarExtract,
      },
      peakRssMiB: Math.max(...r.rss),
    };
    console.log(`files, ${o.size} MiB version, ${entries} entries, Incus ${result.server}, medians of ${o.runs}:`);
    console.log(`  first listing      ${m.firstTool.toFixed(2)} s / zstd -dc | tar -t ${m.tarList.toFixed(2)} s = ${result.ratios.firstListing.toFixed(2)}`);
    console.log(`  repeated listing   ${m.repeatTool.toFixed(2)} s`);
    console.log(`  one small file     ${m.extractFirst.toFixed(2)} s without a catalog, ${m.extractKept.toFixed(2)} s with one / zstd -dc | tar -x ${m.tarExtract.toFixed(2)} s = ${result.ratios.extractNoCatalog.toFixed(2)} and ${result.ratios.extractWithCatalog.toFixed(2)}`);
    console.log(`  peak RSS of the tool ${result.peakRssMiB.toFixed(0)} MiB`);
    if (o.json) writeFileSync(o.json, JSON.stringify(result, null, 2));
  } finally {
    await incus("delete", "--force", name).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench: ${e.message}`);
  process.exit(1);
});
