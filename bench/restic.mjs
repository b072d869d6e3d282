#!/usr/bin/env node
// Benchmark of the restic backend against plain `incus export` / `incus import`, in one run.
//
// N busybox instances of SIZE MiB each (half random, half a hex dump; with --mix cheap half random,
// half zeros) are backed up into a local restic repository RUNS times, about CHANGE % of every
// instance rewritten between runs; each backup is timed against a loop of
// `incus export NAME --compression zstd --instance-only` of the same instances in the same state.
// Then the instances are deleted and restored from the last version, against a loop of
// `incus import` of the last exports. It reports the times and ratios, how much each backup added
// to the repository (against one full backup), the peak RSS of the tool and of restic (sampled),
// and the fixed cost of one tiny item.
//
// With --by-hand it also times the same pipeline by hand, in the same runs: `incus export NAME FIFO
// --compression none` read by `restic backup --stdin` (into a repository of its own), and for the
// restore `restic dump` into a FIFO read by `incus import`, one instance after the other: what a
// tool built on these calls can at best reach on this machine.
//
// --compression sets RESTIC_COMPRESSION for every restic process of the run, the tool's and the
// by-hand pipeline's (restic's default is auto: zstd on every new blob, most of the CPU of a first
// backup).
//
// Usage: node bench/restic.mjs [--instances N] [--size MiB] [--runs R] [--change PCT] [--mix mixed|cheap]
//        [--compression auto|off|max] [--restic BINARY] [--lab 6.0|7.0] [--by-hand] [--json FILE]
// Needs the built bundle (npm run build), restic, and what the tests need (root, Incus, see test/lab).

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bundle, labEnv, run } from "./lib.mjs";

function parseArgs(argv) {
  const o = { instances: 2, size: 600, runs: 7, change: 5, mix: "mixed", compression: "auto", restic: "restic", lab: process.env.INCUS_BACKUP_LAB_VERSION ?? "6.0", byHand: false, json: undefined };
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
    else if (a === "--change") o.change = Number(v());
    else if (a === "--mix") o.mix = v();
    else if (a === "--compression") o.compression = v();
    else if (a === "--restic") o.restic = v();
    else if (a === "--lab") o.lab = v();
    else if (a === "--json") o.json = v();
    else if (a === "--by-hand") o.byHand = true;
    else throw new Error(`unknown argument ${a} (see the comment at the top of bench/restic.mjs)`);
  }
  if (!(o.instances >= 1 && o.size >= 10 && o.runs >= 2 && o.change > 0 && o.change < 50)) throw new Error("--instances >= 1, --size >= 10, --runs >= 2, 0 < --change < 50");
  if (!["mixed", "cheap"].includes(o.mix)) throw new Error("--mix is mixed or cheap");
  if (!["auto", "off", "max"].includes(o.compression)) throw new Error("--compression is auto, off or max");
  return o;
}

/** Peak RSS (MiB) of the tool's node process and of the restic processes it starts, sampled every 100 ms. */
function rssSampler(pid) {
  const peak = { tool: 0, restic: 0 };
  let stopped = false;
  const sample = () => {
    if (stopped) return;
    const r = spawnSync("ps", ["-eo", "pid=,ppid=,rss=,comm="], { encoding: "utf8" });
    for (const line of r.stdout.split("\n")) {
      const [p, pp, rss, comm] = line.trim().split(/\s+/);
      const mib = Number(rss) / 1024;
      if (Number(p) === pid) peak.tool = Math.max(peak.tool, mib);
      else if (Number(pp) === pid && comm === "restic") peak.restic = Math.max(peak.restic, mib);
    }
    setTimeout(sample, 100);
  };
  sample();
  return {
    stop() {
      stopped = true;
      return peak;
    },
  };
}

/** Runs the tool; its time and the sampled peaks. */
function timedTool(env, args) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [bundle, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
    const sampler = rssSampler(child.pid);
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    child.stdout.resume();
    child.on("error", reject);
    child.on("close", (code) => {
      const peak = sampler.stop();
      const seconds = (performance.now() - t0) / 1000;
      if (code === 0) resolve({ seconds, ...peak });
      else reject(new Error(`incus-backup ${args.join(" ")}: exit ${code}: ${err.trim()}`));
    });
  });
}

const du = (path) => Number(spawnSync("du", ["-sb", path], { encoding: "utf8" }).stdout.split(/\s/)[0]);
const mib = (b) => b / 1048576;

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (!existsSync(bundle)) throw new Error("no dist/incus-backup.mjs: run `npm run build` first");
  const labenv = labEnv(o.lab);
  const work = mkdtempSync(join(tmpdir(), "ibk-bench-restic-"));
  writeFileSync(join(work, "password"), `bench-${Math.random()}\n`, { mode: 0o600 });
  const repoPath = join(work, "repo");
  const env = {
    ...labenv,
    RESTIC_PASSWORD_FILE: join(work, "password"),
    RESTIC_CACHE_DIR: join(work, "cache"),
    INCUS_BACKUP_STATE_DIR: join(work, "state"),
    INCUS_BACKUP_RESTIC: o.restic,
    RESTIC_COMPRESSION: o.compression,
  };
  const repo = `restic:${repoPath}`;
  const incus = (...args) => run("incus", args, labenv);
  const server = JSON.parse((await incus("query", "/1.0")).out);
  const resticVersion = /restic (\S+)/.exec((await run(o.restic, ["version"], env)).out)?.[1];
  const tag = Math.random().toString(36).slice(2, 7);
  const names = Array.from({ length: o.instances }, (_, i) => `benchr-${tag}-${i}`);
  const tiny = `benchr-${tag}-tiny`;
  const log = (s) => process.stderr.write(`${s}\n`);
  log(`lab ${o.lab} (Incus ${server.environment.server_version}), restic ${resticVersion}, ${o.instances} x ${o.size} MiB (${o.mix}), restic compression ${o.compression}, ${o.runs} runs, ${o.change}% changed between runs, work dir ${work}`);

  const half = Math.floor(o.size / 2);
  const other = o.size - half;
  try {
    for (const n of names) {
      await incus("launch", "busybox", n);
      const second =
        o.mix === "cheap"
          ? `dd if=/dev/zero of=/root/other bs=1M count=${other} 2>/dev/null`
          : `dd if=/dev/urandom bs=1M count=${other} 2>/dev/null | od -An -tx1 -v | head -c ${other * 1048576} > /root/other`;
      await incus("exec", n, "--", "sh", "-c", `dd if=/dev/urandom of=/root/random bs=1M count=${half} 2>/dev/null && ${second} && sync`);
      await incus("stop", n);
    }
    await incus("launch", "busybox", tiny);
    await incus("stop", tiny);
    await run(process.execPath, [bundle, "init", `--repo=${repo}`], env);
    const handRepo = join(work, "by-hand");
    const handEnv = { ...env, RESTIC_REPOSITORY: handRepo };
    if (o.byHand) await run(o.restic, ["init"], handEnv);
    // By hand: each instance exported uncompressed into a FIFO that restic reads, one after the other.
    const byHand = async () => {
      const t0 = performance.now();
      for (const n of names) {
        const fifo = join(work, "fifo");
        rmSync(fifo, { force: true });
        spawnSync("mkfifo", [fifo]);
        await Promise.all([incus("export", n, fifo, "--compression", "none", "--instance-only"), run("sh", ["-c", `exec "$0" backup --stdin --stdin-filename ${n}.tar --host bench <"$1" >/dev/null`, o.restic, fifo], handEnv)]);
      }
      return (performance.now() - t0) / 1000;
    };
    const nameArgs = names.flatMap((n) => ["--name", n]);

    // Rewrites about o.change % of each instance: equal parts of both files, at random places.
    const change = async () => {
      const each = Math.max(1, Math.round((o.size * o.change) / 100 / 2));
      for (const n of names) {
        await incus("start", n);
        const at = (size) => Math.floor(Math.random() * Math.max(1, size - each));
        const text = o.mix === "cheap" ? `dd if=/dev/zero bs=1M count=${each} 2>/dev/null | tr '\\0' 'z'` : `dd if=/dev/urandom bs=1M count=${each} 2>/dev/null | od -An -tx1 -v | head -c ${each * 1048576}`;
        await incus(
          "exec", n, "--", "sh", "-c",
          `dd if=/dev/urandom of=/root/random bs=1M count=${each} seek=${at(half)} conv=notrunc 2>/dev/null && ${text} | dd of=/root/other bs=1M seek=${at(other)} conv=notrunc iflag=fullblock 2>/dev/null && sync`,
        );
        await incus("stop", n);
      }
    };

    const runs = [];
    let full = 0;
    let exportBytes = 0;
    for (let r = 0; r < o.runs; r++) {
      if (r > 0) await change();
      const exp = join(work, "export");
      rmSync(exp, { recursive: true, force: true });
      spawnSync("mkdir", ["-p", exp]);
      const before = du(repoPath);
      const doTool = async () => timedTool(env, ["backup", "--instances", ...nameArgs, `--repo=${repo}`]);
      const doLoop = async () => {
        const t0 = performance.now();
        for (const n of names) await incus("export", n, join(exp, `${n}.tar.zst`), "--compression", "zstd", "--instance-only");
        return (performance.now() - t0) / 1000;
      };
      // Alternate which goes first (the page cache favours the second).
      let t, loop;
      if (r % 2 === 0) {
        t = await doTool();
        loop = await doLoop();
      } else {
        loop = await doLoop();
        t = await doTool();
      }
      const hand = o.byHand ? await byHand() : undefined;
      const added = du(repoPath) - before;
      if (r === 0) full = added;
      exportBytes = du(exp);
      runs.push({ run: r + 1, tool: t.seconds, loop, ratio: t.seconds / loop, ...(hand === undefined ? {} : { byHand: hand }), addedMiB: mib(added), addedOfFull: added / full, toolRssMiB: t.tool, resticRssMiB: t.restic });
      log(`run ${r + 1}: backup ${t.seconds.toFixed(2)} s vs export loop ${loop.toFixed(2)} s (${(t.seconds / loop).toFixed(2)})${hand === undefined ? "" : `, by hand ${hand.toFixed(2)} s (${(hand / loop).toFixed(2)})`}, added ${mib(added).toFixed(1)} MiB (${((100 * added) / full).toFixed(1)}% of the first), RSS tool ${t.tool.toFixed(0)} MiB, restic ${t.restic.toFixed(0)} MiB`);
    }
    const repoBytes = du(repoPath);

    // Restore of the last version against `incus import` of the last exports.
    const deleteAll = async () => {
      for (const n of names) await incus("delete", "--force", n);
    };
    await deleteAll();
    const rt = await timedTool(env, ["restore", "--instances", ...nameArgs, "--force", "--no-start", `--repo=${repo}`]);
    await deleteAll();
    const t0 = performance.now();
    for (const f of readdirSync(join(work, "export"))) await incus("import", join(work, "export", f));
    const importLoop = (performance.now() - t0) / 1000;
    let handRestore;
    if (o.byHand) {
      await deleteAll();
      const snaps = JSON.parse((await run(o.restic, ["snapshots", "--json", "--latest", "1"], handEnv)).out);
      const t2 = performance.now();
      for (const n of names) {
        const snap = snaps.find((x) => x.paths[0] === `/${n}.tar`);
        const fifo = join(work, "fifo");
        rmSync(fifo, { force: true });
        spawnSync("mkfifo", [fifo]);
        await Promise.all([run("sh", ["-c", `exec "$0" dump ${snap.id} /${n}.tar >"$1"`, o.restic, fifo], handEnv), incus("import", fifo)]);
      }
      handRestore = (performance.now() - t2) / 1000;
    }
    log(`restore ${rt.seconds.toFixed(2)} s vs import loop ${importLoop.toFixed(2)} s (${(rt.seconds / importLoop).toFixed(2)}), RSS tool ${rt.tool.toFixed(0)} MiB, restic ${rt.restic.toFixed(0)} MiB`);

    // The fixed cost of an item: one tiny (1 MiB) instance.
    const tinyTool = await timedTool(env, ["backup", "--instances", "--name", tiny, `--repo=${repo}`]);
    const t1 = performance.now();
    await incus("export", tiny, join(work, "tiny.tar.zst"), "--compression", "zstd", "--instance-only");
    const tinyExport = (performance.now() - t1) / 1000;

    const next = runs.slice(1);
    const avg = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const summary = {
      lab: o.lab,
      incus: server.environment.server_version,
      restic: resticVersion,
      instances: o.instances,
      sizeMiB: o.size,
      mix: o.mix,
      compression: o.compression,
      changePct: o.change,
      runs,
      first: runs[0],
      nextAvg: { ratio: avg(next.map((x) => x.ratio)), addedOfFull: avg(next.map((x) => x.addedOfFull)) },
      repositoryMiB: mib(repoBytes),
      repositoryOfFull: repoBytes / full,
      directoryBackendOfFull: (o.runs * exportBytes) / full,
      restore: { tool: rt.seconds, importLoop, ratio: rt.seconds / importLoop, ...(handRestore === undefined ? {} : { byHand: handRestore }) },
      peakRssMiB: { tool: Math.max(rt.tool, ...runs.map((x) => x.toolRssMiB)), restic: Math.max(rt.restic, ...runs.map((x) => x.resticRssMiB)) },
      tinyItem: { tool: tinyTool.seconds, export: tinyExport },
    };
    console.log(`\nrestic backend vs incus, ${o.instances} x ${o.size} MiB (${o.mix}), ${o.change}% changed per run, Incus ${summary.incus}, restic ${resticVersion}`);
    const handOf = (x) => (x.byHand === undefined ? "" : ` (by hand ${x.byHand.toFixed(2)} s = ${(x.byHand / x.loop).toFixed(2)}; the tool is ${(x.tool / x.byHand).toFixed(2)} x by hand)`);
    console.log(`first backup:   ${runs[0].tool.toFixed(2)} s vs ${runs[0].loop.toFixed(2)} s = ${runs[0].ratio.toFixed(2)}${handOf(runs[0])}`);
    if (o.byHand) console.log(`next by hand:   ${next.map((x) => (x.byHand / x.loop).toFixed(2)).join(" ")} of the loop (the tool: ${next.map((x) => (x.tool / x.byHand).toFixed(2)).join(" ")} x by hand)`);
    console.log(`next backups:   ${next.map((x) => x.ratio.toFixed(2)).join(" ")} (mean ${summary.nextAvg.ratio.toFixed(2)}), each adding ${next.map((x) => (100 * x.addedOfFull).toFixed(1) + "%").join(" ")} of the first`);
    console.log(`repository after ${o.runs} runs: ${summary.repositoryMiB.toFixed(0)} MiB = ${summary.repositoryOfFull.toFixed(2)} x the first backup (${o.runs} zstd exports: ${summary.directoryBackendOfFull.toFixed(2)} x)`);
    console.log(`restore:        ${rt.seconds.toFixed(2)} s vs ${importLoop.toFixed(2)} s = ${summary.restore.ratio.toFixed(2)}${handRestore === undefined ? "" : ` (by hand ${handRestore.toFixed(2)} s = ${(handRestore / importLoop).toFixed(2)}; the tool is ${(rt.seconds / handRestore).toFixed(2)} x by hand)`}`);
    console.log(`peak RSS:       tool ${summary.peakRssMiB.tool.toFixed(0)} MiB, restic ${summary.peakRssMiB.restic.toFixed(0)} MiB`);
    console.log(`one tiny item:  ${tinyTool.seconds.toFixed(2)} s vs export ${tinyExport.toFixed(2)} s`);
    if (o.json) writeFileSync(o.json, JSON.stringify(summary, null, 2) + "\n");
  } finally {
    for (const n of [...names, tiny]) await incus("delete", "--force", n).catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(`bench: ${err.message}`);
  process.exit(1);
});
