// What the benchmarks share: running commands and the tool with their times, the lab's environment.

import { spawn, spawnSync } from "node:child_process";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const root = join(dirname(fileURLToPath(import.meta.url)), "..");
export const bundle = join(root, "dist", "incus-backup.mjs");

/** Runs a command; resolves with its output and wall time. Rejects on failure. */
export function run(cmd, args, env, { input } = {}) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { env, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("error", reject);
    child.on("close", (code) => {
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      if (code === 0) resolve({ out, err, seconds });
      else reject(new Error(`${cmd} ${args.join(" ")}: exit ${code}: ${err.trim() || out.trim()}`));
    });
    // A command may exit without reading its input (EPIPE): its exit code tells what happened.
    child.stdin.on("error", () => {});
    child.stdin.end(input ?? "");
  });
}

/** The lab's environment: the lab named by INCUS_BACKUP_LAB_STATE (the tests' own), else the kept lab, brought up if needed. */
export function labEnv(version) {
  const state = process.env.INCUS_BACKUP_LAB_STATE ?? "";
  if (!state) {
    const up = spawnSync("bash", [join(root, "test/lab/lab.sh"), "up"], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, INCUS_BACKUP_LABS: version, INCUS_BACKUP_LAB_VERSION: version } });
    if (up.status !== 0) throw new Error("could not bring up the lab (see above)");
  }
  const r = spawnSync("bash", [join(root, "test/lab/lab.sh"), "env", state, version], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`lab.sh env failed: ${r.stderr}`);
  const env = { ...process.env };
  delete env.INCUS_DIR;
  delete env.INCUS_REMOTE;
  delete env.INCUS_PROJECT;
  for (const line of r.stdout.split("\n")) {
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2].replace(/^'|'$/g, "");
  }
  return env;
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

/** Runs the tool under GNU time to get its peak RSS (KiB). */
export async function tool(env, args) {
  const r = await run("/usr/bin/time", ["-f", "IBK_MAXRSS_KB=%M", process.execPath, bundle, ...args], env);
  const m = /IBK_MAXRSS_KB=(\d+)/.exec(r.err);
  return { seconds: r.seconds, rssMiB: m ? Number(m[1]) / 1024 : NaN };
}

