// Vitest global setup of the integration project: brings the Incus lab up and hands its sockets to the tests.
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    /** Inner Incus socket of the primary lab (INCUS_BACKUP_LAB_VERSION, default 6.0). */
    labSocket: string;
    /** Incus line of the primary lab: "6.0" or "7.0". */
    labVersion: string;
    /** Exact server version of each lab, e.g. { "6.0": "6.0.4" }. */
    labServerVersions: Record<string, string>;
    /** Inner socket of every lab that is up, by Incus line. */
    labSockets: Record<string, string>;
    /** Lab container of every lab, by Incus line (on the outer daemon). */
    labContainers: Record<string, string>;
    /** Socket of the outer daemon that runs the lab containers. */
    labOuterSocket: string;
    /** INCUS_CONF for the incus CLI: only the local remote, default project. */
    labIncusConf: string;
    labStateFile: string;
    /** test/lab/lab.sh, for the helpers that act on the lab itself. */
    labScript: string;
    /** True when the lab outlives this run (KEEP_LAB=1, or a lab kept by `npm run lab:up`). */
    labKept: boolean;
    /** The tests' TMPDIR: a directory in the lab's temp dir, removed with the lab (see worker-setup.ts). */
    labTmp: string;
  }
}

const labScript = join(dirname(fileURLToPath(import.meta.url)), "lab.sh");
// Where lab.sh keeps the path of this checkout's kept lab (of this test group, see lab.sh).
function pointer(): string {
  const r = spawnSync("bash", [labScript, "pointer"], { encoding: "utf8" });
  if (r.status !== 0) throw new LabError("Cannot ask lab.sh where the kept lab is.", tail(r.stderr ?? ""));
  return r.stdout.trim();
}
const prerequisites =
  "The integration tests run against a throwaway Incus-in-Incus lab. It needs root, Incus 6.0 " +
  "(incus, incus-client from bookworm-backports), mmdebstrap, busybox-static and zstd; on Debian 12 " +
  ".ci/run installs them. See test/lab/README.md.";

interface LabJson {
  stateFile: string;
  keep: boolean;
  primary: string;
  incusConf: string;
  outer: { mode: string; socket: string };
  labs: Record<string, { container: string; socket: string; serverVersion: string }>;
}

class LabError extends Error {
  constructor(what: string, output: string) {
    super(`${what}\n${prerequisites}${output ? `\nLast output of lab.sh:\n${output}` : ""}`);
  }
}

// KEEP_LAB=1 keeps (and reuses) the lab, KEEP_LAB=0 always makes a throwaway one; unset, a lab
// kept earlier is reused, except in CI, which must not depend on leftovers.
function wantKept(): boolean {
  const keep = process.env.KEEP_LAB;
  if (keep === "1") return true;
  if (keep === "0" || process.env.CI === "true") return false;
  return existsSync(pointer());
}

function tail(text: string, lines = 30): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

function labJson(stateFile: string, version: string): LabJson {
  const r = spawnSync("bash", [labScript, "json", stateFile, version], { encoding: "utf8" });
  if (r.status !== 0) throw new LabError("Cannot read the lab state.", tail(r.stderr ?? ""));
  return JSON.parse(r.stdout) as LabJson;
}

/** `lab.sh up`: returns the state file of the kept lab. */
async function upKept(): Promise<string> {
  const child = spawn("bash", [labScript, "up"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    err += d;
    process.stderr.write(d);
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", resolve);
  });
  const stateFile = out.trim().split("\n").pop() ?? "";
  if (code !== 0 || !stateFile) throw new LabError(`lab.sh up failed (exit ${code}).`, tail(err));
  return stateFile;
}

interface Held {
  stateFile: string;
  release(): Promise<void>;
}

/**
 * `lab.sh hold`: the lab lives exactly as long as that process, which removes it when its stdin
 * closes. If vitest dies (Ctrl-C, crash, SIGKILL) the pipe closes with it, so the lab still goes.
 * It runs in its own session (detached), so a Ctrl-C reaches only vitest, which lets the teardown
 * run in order rather than racing it.
 */
async function hold(): Promise<Held> {
  const child = spawn("bash", [labScript, "hold", "--owner", String(process.pid)], {
    stdio: ["pipe", "pipe", "pipe"],
    detached: true,
  });
  let err = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => {
    err += d;
    if (err.length > 200_000) err = err.slice(-100_000);
    process.stderr.write(d);
  });
  const exited = new Promise<number | null>((resolve) => {
    child.on("error", () => resolve(-1));
    child.on("close", resolve);
  });
  const stateFile = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const nl = out.indexOf("\n");
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    void exited.then((code) => reject(new LabError(`The lab did not come up (lab.sh hold, exit ${code}).`, tail(err))));
  });
  return {
    stateFile,
    async release() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGTERM"), 180_000);
      const code = await exited;
      clearTimeout(timer);
      // Belt and braces: if the holder died early, remove what it left.
      if (existsSync(stateFile)) {
        const r = spawnSync("bash", [labScript, "down", stateFile], { stdio: ["ignore", "inherit", "inherit"] });
        if (r.status !== 0) throw new Error(`lab.sh down ${stateFile} failed (exit ${r.status})`);
      } else if (code !== 0) {
        throw new Error(`removing the lab failed (lab.sh hold exit ${code}):\n${tail(err)}`);
      }
    },
  };
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (spawnSync("incus", ["--version"]).status !== 0) {
    throw new LabError("The incus CLI is not installed.", "");
  }
  const version = process.env.INCUS_BACKUP_LAB_VERSION ?? "6.0";
  const kept = wantKept();
  const held = kept ? undefined : await hold();
  const stateFile = held ? held.stateFile : await upKept();
  let lab: LabJson;
  try {
    lab = labJson(stateFile, version);
  } catch (e) {
    await held?.release();
    throw e;
  }
  const labs = Object.entries(lab.labs);
  const primary = lab.labs[version];
  if (!primary) {
    await held?.release();
    throw new LabError(`The lab has no ${version} lab.`, "");
  }
  project.provide("labSocket", primary.socket);
  project.provide("labVersion", version);
  project.provide("labSockets", Object.fromEntries(labs.map(([v, l]) => [v, l.socket])));
  project.provide("labServerVersions", Object.fromEntries(labs.map(([v, l]) => [v, l.serverVersion])));
  project.provide("labContainers", Object.fromEntries(labs.map(([v, l]) => [v, l.container])));
  project.provide("labOuterSocket", lab.outer.socket);
  project.provide("labIncusConf", lab.incusConf);
  project.provide("labStateFile", stateFile);
  project.provide("labScript", labScript);
  project.provide("labKept", kept);
  // In the lab's temp dir: with the lab's files in memory (lab.sh's lab_tmpfs), and gone with the
  // lab whatever a test or a killed process (restic's temp packs) leaves there.
  // A test that runs the tool as another user passes through the lab's dir (lab.sh makes it 0711;
  // a lab kept from before that was 0700).
  const labTmp = join(dirname(stateFile), "tmp");
  mkdirSync(labTmp, { recursive: true });
  chmodSync(labTmp, 0o1777);
  chmodSync(dirname(stateFile), 0o711);
  project.provide("labTmp", labTmp);

  return async () => {
    if (held) {
      await held.release();
    } else {
      process.stderr.write(`lab: kept up (${stateFile}); remove it with: npm run lab:down\n`);
    }
  };
}
