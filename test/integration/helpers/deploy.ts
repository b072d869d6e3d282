// What the deploy tests share (deploy.test.ts, deploy-restic.test.ts): the lab plays the Incus
// host, where deploy/install.sh runs with the incus CLI and the NAS is a directory.
import { spawn } from "node:child_process";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { execCaptured, incus, type RunOptions } from "../../lab/lab";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const DEPLOY = "/root/ibk-deploy";

/** Runs a script on the machine running the tests (image/build.sh), against a lab daemon. */
export function runHost(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 600_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolvePromise({ code: code ?? 128, stdout, stderr });
    });
  });
}

export const seconds = (t0: number) => ((performance.now() - t0) / 1000).toFixed(1);
export const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
/** The deployed tool in its container; its output is captured so that `incus exec` cannot lose it (see execCaptured). */
export const toolIn = (container: string, socket: string, args: string[], opts: RunOptions) =>
  execCaptured((script, o) => incus(["exec", container, "--", "sh", "-c", script], { socket, ...o }), `incus-backup ${args.map(quote).join(" ")}`, opts);
