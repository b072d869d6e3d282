// Issue 6, Incus goes away: the lab's incusd is restarted (SIGTERM, as a service restart) or
// killed (SIGKILL, a crash) in the middle of a backup. The item in flight completes (an export
// download resumes with HTTP Range) or fails cleanly; the other items go on; nothing partial is
// listed; no server-side backup is left that never expires. And a socket the tool may not use
// gives the documented error: exit 4, one line naming the path.
import { execFile } from "node:child_process";
import { chmod, mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, incusOk, labSocket, labVersions, launchInstance, restartIncusd, tracker, uniqueName } from "../lab/lab";
import { FaultProxy, nonExpiring, reached, req, serverBackups, type SeenRequest } from "./helpers/faults";
import { tempDir, repoDir, expectOneLineError } from "./helpers/server";
import { TOOL, listJson, startTool, tool, toolOk } from "./helpers/tool";

const run = promisify(execFile);

describe.each(labVersions())("incusd restarted during a backup, Incus %s", (version) => {
  const track = tracker();
  const big = uniqueName("away-big");
  const small = uniqueName("away-small");
  let socket: string;
  let dir: string;
  let proxy: FaultProxy;
  let direct: boolean;
  const backup = () => ["backup", "--instances", "--name", big, "--name", small, "--parallel", "1", `--dir=${dir}`];

  beforeAll(async () => {
    socket = labSocket(version);
    await launchInstance(big, { socket, track });
    await incusOk(["exec", big, "--", "sh", "-c", "dd if=/dev/urandom of=/root/big bs=1048576 count=6 2>/dev/null && sync"], { socket });
    await launchInstance(small, { socket, track, start: false });
    dir = await repoDir(track);
    proxy = await FaultProxy.start(socket);
    track.defer(() => proxy.close());
    direct = ((await apiGet("/1.0", { socket })) as { api_extensions: string[] }).api_extensions.includes("direct_backup");
    // An earlier version of each, so the big one is known to be the larger and goes first.
    await toolOk(backup(), { socket });
  });
  afterAll(() => track.cleanup());

  const transfer = () =>
    direct
      ? req("POST", new RegExp(`^/1\\.0/instances/${big}/backups(\\?|$)`))
      : req("GET", new RegExp(`^/1\\.0/instances/${big}/backups/[^/]+/export`));

  // [what, where, SIGKILL, an export download must resume and complete]
  const cases: Array<[string, (p: FaultProxy) => Promise<SeenRequest>, boolean, boolean]> = [
    ["restarted (SIGTERM) with the big item's transfer half done", (p) => p.holdResponseAfter(transfer(), 1 << 20), false, true],
    ["killed (SIGKILL) with the big item's transfer half done", (p) => p.holdResponseAfter(transfer(), 1 << 20), true, true],
    ["killed (SIGKILL) while it writes the big item's backup (or starts its stream)", (p) => p.holdRequest(direct ? transfer() : req("GET", /^\/1\.0\/operations\/[^/]+\/wait/)), true, false],
  ];

  it.each(cases)("%s", async (what, arm, kill, resumes) => {
    const t0 = Date.now();
    const before = await listJson(dir);
    const at = arm(proxy);
    const r = startTool(backup(), { socket: proxy.path, timeoutMs: 240_000 });
    await reached(r, at, what);
    await restartIncusd({ version, kill });
    // The old daemon's connections are gone; whatever was held back is lost with them.
    proxy.cutAll();
    proxy.release();
    const done = await r.done;
    const out = done.stdout + done.stderr;
    const failed = done.stdout.split("\n").filter((l) => /^ {2}failed:/.test(l));
    console.log(
      `[${version}] incusd ${what}: backup exit ${done.code} in ${Date.now() - t0} ms; ` +
        `${failed.length ? failed.map((l) => l.trim()).join("; ") : "every item backed up"}${/resum/i.test(out) ? " (the download resumed)" : ""}`,
    );
    expect(out).not.toMatch(/\n\s+at /);
    // Each item completed or failed on its own line, saying what happened to Incus. An item that
    // started while the daemon was still coming back fails too (exit 1 when that is all of them).
    expect([0, 1, 3]).toContain(done.code);
    for (const l of failed) expect(l).toMatch(/: (.*Incus closed the connection.*did the daemon restart or stop\?|Incus is not answering on socket .*|.*operation .* ended and was forgotten.*)$/);
    // An export download resumes where it broke off (HTTP Range) and completes.
    if (resumes && !direct) expect(done.code, out).toBe(0);
    const ok = Number(/: (\d+) of 2 item\(s\) backed up/.exec(done.stdout)?.[1]);
    const after = await listJson(dir);
    expect(after.length).toBe(before.length + ok);
    await toolOk(["verify", `--dir=${dir}`]);
    expect(nonExpiring(await serverBackups(socket))).toEqual([]);
    // The lock was released; the next backup needs no take-over.
    const next = await toolOk(backup(), { socket });
    expect(next.stderr).not.toMatch(/stale lock/);
  });
});

describe("a socket the tool may not use", () => {
  const track = tracker();
  let base: string;
  let repo: string;

  beforeAll(async () => {
    // Everything an unprivileged user needs to get as far as the socket: a directory it may
    // enter, and a repository it owns.
    base = await tempDir(track, "ibk-sock-");
    await chmod(base, 0o755);
    repo = join(base, "repo");
    await mkdir(repo);
    await toolOk(["init", `--dir=${repo}`]);
    await run("chown", ["-R", "65534:65534", repo]);
  });
  afterAll(() => track.cleanup());

  /** The built tool as nobody (uid/gid 65534, no groups): as root, permissions would not stop it. */
  function asNobody(args: string[]) {
    return run("setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, TOOL, ...args], { env: { PATH: process.env.PATH } }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  }

  it("a root-owned 0660 socket (a live one), for a user outside its group: exit 4, permission denied, the path named", async () => {
    const path = join(base, "incus.sock");
    const server = createServer((c) => c.destroy());
    await new Promise<void>((res) => server.listen(path, res));
    track.defer(() => new Promise<void>((res) => server.close(() => res())));
    await chmod(path, 0o660);
    for (const args of [
      ["backup", "--instances", "--name", "web", `--dir=${repo}`, `--socket=${path}`],
      ["restore", "--instance", "--name", "web", "--force", `--dir=${repo}`, `--socket=${path}`],
    ]) {
      const r = await asNobody(args);
      console.log(`as nobody, ${args[0]} on a 0660 root socket: exit ${r.code}: ${r.stderr.trim()}`);
      expect(r.code).toBe(4);
      expect(expectOneLineError(r)).toMatch(new RegExp(`permission denied on Incus socket ${path}`));
    }
  });

  it("paths that are not a usable socket: exit 4, the path named", async () => {
    const file = join(base, "not-a-socket");
    await writeFile(file, "");
    const stale = join(base, "stale.sock");
    const server = createServer();
    await new Promise<void>((res) => server.listen(stale, res));
    // Closing the server leaves no file; a socket file with no listener is what a dead daemon leaves.
    await new Promise<void>((res) => server.close(() => res()));
    await run("python3", ["-c", `import socket; s=socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(stale)})`]);
    const missing = join(base, "missing.sock");
    for (const [what, path, message] of [
      ["a regular file", file, /Incus is not answering on socket|not a socket|permission denied/],
      ["a socket nobody listens on", stale, /Incus is not answering on socket/],
      ["a missing path", missing, /Incus socket .* does not exist/],
      ["a directory", base, /Incus/],
    ] as const) {
      const r = await tool(["backup", "--instances", "--name", "web", `--dir=${repo}`, `--socket=${path}`]);
      console.log(`socket that is ${what}: exit ${r.code}: ${r.stderr.trim()}`);
      expect(r.code).toBe(4);
      const line = expectOneLineError(r);
      expect(line).toContain(path);
      expect(line).toMatch(message);
    }
  });
});
