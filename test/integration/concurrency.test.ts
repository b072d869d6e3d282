// Issue 6, concurrency: two backups at once (one fails at once with the lock's holder, exit 7),
// readers alongside a writer, stale locks taken over with a message, `unlock`. The repository
// stays consistent throughout (verify passes, nothing half-written is listed).
import { existsSync } from "node:fs";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, checksumTree, labSocket, launchInstance, startExtraServer, stopExtraServer, tracker, uniqueName, writeTestData, type Manifest } from "../lab/lab";
import { FaultProxy, killTool, pauseAt, reached, req, waitForStderr } from "./helpers/faults";
import { expectOneLineError, instanceStatus, repoDir, tempDir } from "./helpers/server";
import { foreignPid, hostPidOf, listJson, startTool, tool, toolOk, type ToolResult } from "./helpers/tool";

const LOCKED = 7;
/** The issue's format: "locked by pid 123 on host backup since 03:00:02 (backup --all)". */
const lockMessage = (command: string) =>
  new RegExp(`is locked by pid \\d+ on host \\S+ \\(install [0-9a-f]{8}\\) since \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ \\(${command}\\)`);

/**
 * The one-line error of a run locked out by another. On an empty directory the loser may be the
 * run that made the repository, and says so first.
 */
function lockedOutLine(r: { stdout: string; stderr: string; code: number }): string {
  const said = r.stderr.split("\n").filter((l) => !/^initialized a new backup repository in /.test(l));
  return expectOneLineError({ ...r, stderr: said.join("\n") });
}

describe("concurrent runs on one repository", () => {
  const track = tracker();
  const name = uniqueName("conc");
  let dir: string;
  let data: Manifest;
  let proxy: FaultProxy;
  const figures = { pairs: 0, lockedOut: 0, alongside: 0 };

  beforeAll(async () => {
    await launchInstance(name, { track });
    // A few MiB, so a backup lasts long enough for another to start meanwhile.
    data = await writeTestData(name, "/root/data", { sizeMiB: 8 });
    dir = await repoDir(track);
    proxy = await FaultProxy.start(labSocket());
    track.defer(() => proxy.close());
  });
  afterAll(async () => {
    console.log(`concurrency figures: ${figures.pairs} pairs of backups started together, ${figures.lockedOut} locked out with exit 7; ${figures.alongside} commands run alongside a backup`);
    await track.cleanup();
  });

  const backup = ["backup", "--instances", "--name", name];

  /**
   * Starts two runs of `args` at the same moment. Whichever gets the lock is held in its download
   * until the other has ended, so the two always overlap, however the machine schedules them
   * (without the hold, a loaded machine could start one only after the other finished).
   */
  async function startPair(args: string[]): Promise<[ToolResult, ToolResult]> {
    void proxy.holdResponseAfter(req("GET", new RegExp(`^/1\\.0/instances/${name}/backups/[^/]+/export`)), 64 << 10);
    void proxy.holdResponseAfter(req("POST", new RegExp(`^/1\\.0/instances/${name}/backups`)), 64 << 10);
    const a = startTool(args, { socket: proxy.path });
    const b = startTool(args, { socket: proxy.path });
    try {
      // The first to end is the one that did not get the lock.
      await Promise.race([a.done, b.done]);
    } finally {
      proxy.release();
    }
    return Promise.all([a.done, b.done]);
  }

  it("two inits at once on an empty directory both end well (one makes it), then two first backups end [0, 7], 20 times", async () => {
    const pairs = 20;
    const started = Date.now();
    for (let i = 0; i < pairs; i++) {
      const fresh = await tempDir(track, "ibk-fresh-");
      const inits = await Promise.all([startTool(["init", "--json", `--dir=${fresh}`]).done, startTool(["init", "--json", `--dir=${fresh}`]).done]);
      expect(inits.map((r) => r.code), inits.map((r) => r.stderr).join(" / ")).toEqual([0, 0]);
      const made = inits.map((r) => JSON.parse(r.stdout) as { id: string; created: boolean });
      expect(made.filter((m) => m.created), `fresh pair ${i + 1}`).toHaveLength(1);
      expect(made[0]!.id).toBe(made[1]!.id);
      const [ra, rb] = await startPair([...backup, `--dir=${fresh}`]);
      figures.pairs++;
      const loser = ra.code === LOCKED ? ra : rb;
      expect([ra.code, rb.code].sort(), `fresh pair ${i + 1}: ${ra.stderr.trim()} / ${rb.stderr.trim()}`).toEqual([0, LOCKED]);
      figures.lockedOut++;
      expect(lockedOutLine(loser)).toMatch(lockMessage(`incus-backup backup --instances --name ${name} --dir=${fresh}`));
      // No lock, no candidate marker or lock left beside the repository.
      expect((await readdir(fresh)).sort()).toEqual([".tmp", "incus-backup.json", "instances", "runs"]);
      expect(await listJson(fresh)).toHaveLength(1);
    }
    console.log(`new repositories: ${pairs} pairs of inits, each [0, 0] with one made; then ${pairs} pairs of first backups, each [0, 7], in ${Date.now() - started} ms`);
  });

  it("a backup never makes a repository: on an empty directory it exits 8 and writes nothing, also while an init runs", async () => {
    const empty = await tempDir(track, "ibk-fresh-");
    const r = await tool([...backup, `--dir=${empty}`]);
    expect(r.code).toBe(8);
    expect(expectOneLineError(r)).toBe(`error: ${empty} is not an incus-backup repository (is the NAS mounted?); nothing was written (make a new one with \`incus-backup init --dir ${empty}\`)`);
    expect(await readdir(empty)).toEqual([]);
    // An init stopped dead at each step of making the repository; a backup runs then.
    const points: Array<{ at: Parameters<typeof pauseAt>[0]; code: number; what: string }> = [
      { at: { op: "link", when: "before", match: /incus-backup\.json$/ }, code: 8, what: "its marker written aside, not yet in place" },
      { at: { op: "link", when: "after", match: /incus-backup\.json$/ }, code: 0, what: "its marker in place" },
    ];
    for (const p of points) {
      const fresh = await tempDir(track, "ibk-fresh-");
      const init = startTool(["init", `--dir=${fresh}`], { env: pauseAt(p.at) });
      await waitForStderr(init, /IBK-PAUSED/);
      const b = await tool([...backup, `--dir=${fresh}`]);
      console.log(`init paused with ${p.what}: a backup exits ${b.code}`);
      expect(b.code, b.stderr).toBe(p.code);
      if (p.code === 8) expect(b.stderr).toMatch(/is not an incus-backup repository \(is the NAS mounted\?\)/);
      await killTool(init);
      // A killed init leaves nothing half-made: init again makes (or finds) a sound repository.
      await toolOk(["init", `--dir=${fresh}`]);
      await toolOk([...backup, `--dir=${fresh}`]);
      await toolOk(["verify", `--dir=${fresh}`]);
      expect((await readdir(fresh)).filter((n) => n.startsWith(".incus-backup.json-") || n.includes("lock"))).toEqual([]);
    }
  });

  it("a second backup meets the first one holding the lock on a new repository: exit 7, and the repository is sound after the first is killed", async () => {
    const fresh = await repoDir(track);
    const first = startTool([...backup, `--dir=${fresh}`], { env: pauseAt({ op: "link", when: "after", match: /\/lock\.json$/ }) });
    await waitForStderr(first, /IBK-PAUSED/);
    const second = await tool([...backup, `--dir=${fresh}`]);
    expect(second.code, second.stderr).toBe(LOCKED);
    expect(lockedOutLine(second)).toMatch(lockMessage(`incus-backup backup --instances --name ${name} --dir=${fresh}`));
    await killTool(first);
    // The next run takes over the lock the killed one left.
    await toolOk([...backup, `--dir=${fresh}`]);
    await toolOk(["verify", `--dir=${fresh}`]);
    expect((await readdir(fresh)).filter((n) => n.includes("lock"))).toEqual([]);
  });

  it("two backups started at the same moment: one runs, the other fails at once with exit 7 naming the holder", async () => {
    const rounds = 10;
    for (let i = 0; i < rounds; i++) {
      const t0 = Date.now();
      const [ra, rb] = await startPair([...backup, `--dir=${dir}`]);
      figures.pairs++;
      const codes = [ra.code, rb.code].sort();
      const loser = ra.code === LOCKED ? ra : rb;
      console.log(`pair ${i + 1}: exit ${ra.code} and ${rb.code} (${Date.now() - t0} ms)${codes[1] === LOCKED ? `; the other said: ${loser.stderr.trim()}` : ""}`);
      expect(codes).toEqual([0, LOCKED]);
      figures.lockedOut++;
      expect(lockedOutLine(loser)).toMatch(lockMessage(`incus-backup backup --instances --name ${name} --dir=${dir}`));
      expect(loser.stderr).toMatch(/incus-backup unlock/);
    }
    const rows = await listJson(dir);
    expect(rows.length).toBe(rounds);
    await toolOk(["verify", `--dir=${dir}`]);
    expect(await readdir(join(dir, ".tmp")).catch(() => [])).toEqual([]);
    expect(await readdir(dir)).not.toContain("lock.json");
  });

  it("while a backup holds the lock: list, verify and status work; backup, prune and a replacing restore fail at once with exit 7", async () => {
    // Hold the backup in the middle of its download until the others are done.
    const held = proxy.holdResponseAfter(req("GET", new RegExp(`^/1\\.0/instances/${name}/backups/[^/]+/export`)), 1 << 20);
    const streamed = proxy.holdResponseAfter(req("POST", new RegExp(`^/1\\.0/instances/${name}/backups`)), 1 << 20);
    const writer = startTool([...backup, `--dir=${dir}`], { socket: proxy.path });
    await reached(writer, Promise.race([held, streamed]), "the backup's download");
    const before = await listJson(dir);
    const pid = await instancePid();

    const readers: Array<[string[], number]> = [
      [["list", `--dir=${dir}`], 0],
      [["list", "--json", `--dir=${dir}`], 0],
      [["verify", `--dir=${dir}`], 0],
      [["verify", "--deep", "--json", `--dir=${dir}`], 0],
      [["status", `--dir=${dir}`], 0],
      [["status", "--json", `--dir=${dir}`], 0],
    ];
    const writers: Array<[string[], number, string]> = [
      [[...backup, `--dir=${dir}`], LOCKED, `incus-backup backup --instances --name ${name} --dir=${dir}`],
      [["backup", "--all", `--dir=${dir}`], LOCKED, `incus-backup backup --instances --name ${name} --dir=${dir}`],
      [["prune", "--keep-last", "1", `--dir=${dir}`], LOCKED, `incus-backup backup --instances --name ${name} --dir=${dir}`],
      [["restore", "--instance", "--name", name, "--force", `--dir=${dir}`], LOCKED, `incus-backup backup --instances --name ${name} --dir=${dir}`],
    ];
    for (const [args, code] of readers) {
      const r = await tool(args);
      figures.alongside++;
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(code);
      console.log(`alongside a backup: ${args[0]} ${args.slice(1, -1).join(" ")} -> exit ${r.code}`);
    }
    const status = await toolOk(["status", "--json", `--dir=${dir}`]);
    expect(status.stdout).toContain(String(writer.child.pid));
    for (const [args, code, holder] of writers) {
      const t0 = Date.now();
      const r = await tool(args);
      figures.alongside++;
      expect(r.code, `${args.join(" ")}: ${r.stderr}`).toBe(code);
      expect(r.stderr).toMatch(lockMessage(holder));
      // "At once": no waiting for the holder.
      expect(Date.now() - t0).toBeLessThan(10_000);
      console.log(`alongside a backup: ${args.slice(0, -1).join(" ")} -> exit ${r.code} in ${Date.now() - t0} ms`);
    }
    // The restore refused before touching the instance.
    expect(await instancePid()).toBe(pid);
    expect(await listJson(dir)).toEqual(before);

    proxy.release();
    const done = await writer.done;
    expect(done.code, done.stderr).toBe(0);
    expect((await listJson(dir)).length).toBe(before.length + 1);
    await toolOk(["verify", "--deep", `--dir=${dir}`]);
  });

  it("a lock left by a killed run is taken over by the next run, with a message", async () => {
    const held = proxy.holdRequest(req("DELETE", new RegExp(`^/1\\.0/instances/${name}/backups/`)));
    const direct = proxy.holdResponseAfter(req("POST", new RegExp(`^/1\\.0/instances/${name}/backups`)), 1 << 20);
    const killed = startTool([...backup, `--dir=${dir}`], { socket: proxy.path });
    await reached(killed, Promise.race([held, direct]), "the backup");
    await killTool(killed);
    proxy.dropHeld();
    const r = await toolOk([...backup, `--dir=${dir}`]);
    expect(r.stderr).toMatch(new RegExp(`taking over a stale lock: locked by pid ${killed.child.pid} on host ${hostname()} \\(install [0-9a-f]{8}\\) since .* \\(process ${killed.child.pid} is gone\\)`));
    console.log(`stale lock of a killed run: ${r.stderr.split("\n").find((l) => /stale lock/.test(l))}`);
    await toolOk(["verify", `--dir=${dir}`]);
  });

  it("a lock from another host: respected while fresh, taken over after 10 minutes without a refresh", async () => {
    const lockOf = (minutesAgo: number) => {
      const t = new Date(Date.now() - minutesAgo * 60_000).toISOString();
      return JSON.stringify({ host: "nas-other", pid: 4242, command: "incus-backup backup --all", started: t, refreshed: t, id: "feedfacecafebeef" });
    };
    await writeFile(join(dir, "lock.json"), lockOf(1), { mode: 0o600 });
    const refused = await tool([...backup, `--dir=${dir}`]);
    expect(refused.code).toBe(LOCKED);
    expect(expectOneLineError(refused)).toMatch(/is locked by pid 4242 on host nas-other since .* \(incus-backup backup --all\)/);
    await writeFile(join(dir, "lock.json"), lockOf(11), { mode: 0o600 });
    const taken = await toolOk([...backup, `--dir=${dir}`]);
    expect(taken.stderr).toMatch(/taking over a stale lock: locked by pid 4242 on host nas-other .*\(not refreshed for 11 min\)/);
    console.log(`lock of another host: fresh -> exit ${refused.code}; 11 min old -> taken over`);
  });

  it("two hosts share one repository (two installs, one host name): neither takes the other's live lock; after a takeover the frozen run stops before writing, and nothing of it is listed", async () => {
    const shared = await repoDir(track);
    // Two deployed containers: the same host name (`backup`, here this machine's), an install id each.
    const hostA = { INCUS_BACKUP_STATE_DIR: join(await tempDir(track, "ibk-host-a-"), "state") };
    const hostB = { INCUS_BACKUP_STATE_DIR: join(await tempDir(track, "ibk-host-b-"), "state") };
    const held = proxy.holdResponseAfter(req("GET", new RegExp(`^/1\\.0/instances/${name}/backups/[^/]+/export`)), 1 << 20);
    const streamed = proxy.holdResponseAfter(req("POST", new RegExp(`^/1\\.0/instances/${name}/backups`)), 1 << 20);
    // Host A's run in a PID namespace of its own: its PID there does not run here, as another
    // host's would not. Only the install id tells it is not a dead run of this host's.
    const nsPid = foreignPid();
    const a = startTool([...backup, `--dir=${shared}`], { socket: proxy.path, env: hostA, otherPidNamespace: nsPid });
    let aPid: number | undefined;
    try {
      await reached(a, Promise.race([held, streamed]), "host A's download");
      aPid = hostPidOf(a.child.pid!, nsPid);
      expect(aPid, "host A's tool process").toBeDefined();
      const lockA = JSON.parse(await readFile(join(shared, "lock.json"), "utf8")) as { install: string; pid: number; refreshed: string };
      expect(lockA).toMatchObject({ install: expect.stringMatching(/^[0-9a-f]{16}$/), pid: nsPid });
      expect(existsSync(`/proc/${nsPid}`)).toBe(false);
      const installA = `install ${lockA.install.slice(0, 8)}`;

      // Host B meets host A's live lock: refused at once, by backup and by unlock alike.
      const refused = await tool([...backup, `--dir=${shared}`], { env: hostB });
      expect(refused.code).toBe(LOCKED);
      expect(expectOneLineError(refused)).toContain(`on host ${hostname()} (${installA})`);
      const unlock = await tool(["unlock", `--dir=${shared}`], { env: hostB });
      expect(unlock.code, unlock.stderr).toBe(LOCKED);

      // Host A freezes for longer than a lock stays valid (its last refresh is 11 minutes back);
      // host B takes the lock over and backs up.
      process.kill(aPid!, "SIGSTOP");
      await writeFile(join(shared, "lock.json"), JSON.stringify({ ...lockA, refreshed: new Date(Date.now() - 11 * 60_000).toISOString() }));
      const b = await toolOk([...backup, `--dir=${shared}`], { env: hostB });
      expect(b.stderr).toMatch(new RegExp(`taking over a stale lock: locked by pid ${nsPid} on host \\S+ \\(${installA}\\) .*\\(not refreshed for 11 min\\)`));
      const listed = await listJson(shared);
      expect(listed).toHaveLength(1);

      // Host A wakes up and finishes its download: it stops at its next write, exit 7, and writes nothing.
      process.kill(aPid!, "SIGCONT");
      proxy.release();
      const ra = await a.done;
      console.log(`two hosts: B locked out (exit ${refused.code}), unlock refused (exit ${unlock.code}); after the takeover A said: ${ra.stderr.trim()}`);
      expect(ra.code, ra.stderr).toBe(LOCKED);
      // Host B may still hold the lock when A looks, or have ended.
      expect(ra.stderr).toMatch(/the repository lock of this run (was taken over: the repository is now locked by pid \d+ .*|is gone: another run took it over .*); stopped before writing more/);
      expect(await listJson(shared)).toEqual(listed);
      await toolOk(["verify", "--deep", `--dir=${shared}`], { env: hostB });
      expect(await readdir(shared)).not.toContain("lock.json");
      expect(await readdir(join(shared, ".tmp")).catch(() => [])).toEqual([]);
    } finally {
      if (aPid !== undefined && a.child.exitCode === null) process.kill(aPid, "SIGCONT");
      proxy.release();
      await a.done.catch(() => undefined);
    }
  });

  it("two servers never share a repository: the first backup records its server, another's backup is refused (exit 8, nothing written) but may restore; init --adopt hands it over", async () => {
    const shared = await repoDir(track);
    await toolOk([...backup, `--dir=${shared}`]);
    const mine = (await apiGet("/1.0")) as { environment: { server_name: string; certificate_fingerprint: string } };
    const status = JSON.parse((await toolOk(["status", "--json", `--dir=${shared}`])).stdout) as { repository: { server: { name: string; fingerprint: string } | null } };
    expect(status.repository.server).toMatchObject({ name: mine.environment.server_name, fingerprint: mine.environment.certificate_fingerprint });

    const other = await startExtraServer("conc-other");
    track.defer(() => stopExtraServer("conc-other"));
    const listed = await listJson(shared);
    const refused = await tool(["backup", "--all", `--dir=${shared}`], { socket: other });
    expect(refused.code, refused.stderr).toBe(8);
    expect(expectOneLineError(refused)).toMatch(
      new RegExp(`holds the backups of Incus server ${mine.environment.server_name} \\(certificate ${mine.environment.certificate_fingerprint.slice(0, 12)}\\), not of this server, .*nothing was written.*init --adopt`),
    );
    expect(await listJson(shared)).toEqual(listed);
    expect(await readdir(join(shared, ".tmp")).catch(() => [])).toEqual([]);
    // Restoring from it is disaster recovery: allowed anywhere.
    const plan = await toolOk(["restore", "--instance", "--name", name, "--dry-run", `--dir=${shared}`], { socket: other });
    expect(plan.stdout).toMatch(new RegExp(`create +instance default/${name}`));

    const adopt = await toolOk(["init", "--adopt", `--dir=${shared}`], { socket: other });
    expect(adopt.stdout).toMatch(new RegExp(`it holds the backups of this server, .* from now on \\(it held ${mine.environment.server_name} \\(certificate ${mine.environment.certificate_fingerprint.slice(0, 12)}\\)'s\\)`));
    await toolOk(["backup", "--database", `--dir=${shared}`], { socket: other });
    const old = await tool([...backup, `--dir=${shared}`]);
    expect(old.code).toBe(8);
    console.log(`two servers: the other's backup -> exit ${refused.code}; after init --adopt it backs up, the first one's -> exit ${old.code}`);
  });

  it("unlock removes a stale lock, refuses a live one (exit 7, nothing removed) unless --force, and says whose it was", async () => {
    const t = new Date().toISOString();
    const old = new Date(Date.now() - 11 * 60_000).toISOString();
    // Another install's run, on a host of the same name: its pid means nothing here.
    const live = { host: hostname(), pid: 77, install: "1111222233334444", command: "incus-backup prune", started: t, refreshed: t, id: "0123" };
    await writeFile(join(dir, "lock.json"), JSON.stringify(live), { mode: 0o600 });
    const refused = await tool(["unlock", `--dir=${dir}`]);
    expect(refused.code).toBe(LOCKED);
    expect(expectOneLineError(refused)).toMatch(/the repository is locked by pid 77 on host .* \(install 11112222\) since .*\(incus-backup prune\), refreshed \d+ s ago: that run looks alive, so the lock stays .*unlock --force/);
    expect(JSON.parse(await readFile(join(dir, "lock.json"), "utf8"))).toEqual(live);
    const forced = await toolOk(["unlock", "--force", `--dir=${dir}`]);
    expect(forced.stderr).toMatch(/removed the lock: it was locked by pid 77 on host .* \(install 11112222\) since .* \(incus-backup prune\)/);
    expect(await readdir(dir)).not.toContain("lock.json");

    await writeFile(join(dir, "lock.json"), JSON.stringify({ ...live, started: old, refreshed: old }), { mode: 0o600 });
    const stale = await toolOk(["unlock", `--dir=${dir}`]);
    expect(stale.stderr).toMatch(/removed the lock: it was locked by pid 77/);
    const again = await toolOk(["unlock", `--dir=${dir}`]);
    expect(again.stderr).toMatch(/not locked/);
    console.log(`unlock: a live lock -> exit ${refused.code}; --force and a stale one -> removed`);
    await toolOk([...backup, `--dir=${dir}`]);
    await toolOk(["verify", `--dir=${dir}`]);
    expect(await checksumTree(name, "/root/data")).toEqual(data);
    expect(await instanceStatus(name)).toBe("Running");
  });

  async function instancePid(): Promise<number> {
    return ((await apiGet(`/1.0/instances/${name}/state`)) as { pid: number }).pid;
  }
});
