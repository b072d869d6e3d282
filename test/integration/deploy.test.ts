// The shipped service end to end, with the lab as the "host": image build, deploy/install.sh, the
// scheduled daemon, prune, notifications, stop, upgrade, idmap mode and uninstall. The same with a
// restic repository is deploy-restic.test.ts (a file of its own, so the two run side by side).
//
// The lab container plays the Incus host: install.sh runs there with the incus CLI, the NAS is a
// directory there. Everything happens on an extra incusd of its own in the lab (backup --all and
// the schedule act on everything a server has), removed with all it holds at the end.
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  apiGet,
  checksumTree,
  execRead,
  incus,
  incusOk,
  labEnv,
  labRead,
  labShell,
  labShellCaptured,
  launchInstance,
  startExtraServer,
  stopExtraServer,
  tracker,
  uniqueName,
  writeTestData,
  type Manifest,
} from "../lab/lab";
import { DEPLOY, ROOT, quote, runHost, seconds, toolIn } from "./helpers/deploy";

describe("deploy: image, install.sh, the scheduled service, uninstall", () => {
  const track = tracker();
  const server = `dep${randomBytes(4).toString("hex")}`;
  /** The extra incusd's directory inside the lab: what INCUS_DIR points the lab's incus CLI at. */
  const incusDir = `/var/lib/incus-${server}`;
  const name = uniqueName("ibk-svc");
  const nas = `/srv/nas-${name}`;
  const idmapName = uniqueName("ibk-idm");
  const idmapNas = `/srv/nas-${idmapName}`;
  const web = uniqueName("web");
  const secret = `s3cr3t-${randomBytes(6).toString("hex")}`;
  let socket: string;
  let webData: Manifest;
  let imageFingerprint: string;
  /** The second of each minute the scheduled runs start at (set by the schedule test). */
  let runSecond = 0;
  const on = () => ({ socket });

  /** install.sh (or uninstall.sh) in the lab, with the lab's incus CLI pointed at our server. */
  const deploy = (script: string, args: string[], allowFail = false, env = "") =>
    labShellCaptured(`cd ${DEPLOY} && ${env} INCUS_DIR=${incusDir} bash ${script} ${args.map(quote).join(" ")}`, { allowFail, timeoutMs: 300_000 });
  const tool = (container: string, args: string[], timeoutMs = 300_000, allowFail = false) => toolIn(container, socket, args, { timeoutMs, allowFail });
  const lab = labRead;
  const config = async (container: string) => (await apiGet(`/1.0/instances/${container}`, on())) as {
    config: Record<string, string>;
    profiles: string[];
    status: string;
  };
  const daemonState = async () => JSON.parse(await lab(`cat ${nas}/state/daemon.json`)) as { lastRun?: { trigger: string; slot: string; started: string; status: string; version?: string }; coveredUntil?: string };
  const consoleLog = async (container: string) => (await incusOk(["console", container, "--show-log"], on())).replace(/\r/g, "");
  const build = (args: string[] = []) => runHost("bash", [join(ROOT, "image/build.sh"), ...args], labEnv(socket));

  beforeAll(async () => {
    const t0 = performance.now();
    track.defer(() => stopExtraServer(server));
    track.defer(() => labShell(`rm -rf ${nas} ${idmapNas} ${DEPLOY}`));
    socket = await startExtraServer(server);
    // The test image, from the lab's main daemon into ours.
    const tmp = await mkdtemp(join(tmpdir(), "ibk-deploy-"));
    track.defer(() => rm(tmp, { recursive: true, force: true }));
    await incusOk(["image", "export", "busybox", join(tmp, "busybox")]);
    await incusOk(["image", "import", join(tmp, "busybox"), join(tmp, "busybox.root"), "--alias", "busybox"], on());
    // The image, built offline (the Debian base comes from the cache after the first time).
    const t1 = performance.now();
    const b = await build();
    if (b.code !== 0) throw new Error(`image/build.sh failed: ${b.stderr}`);
    imageFingerprint = b.stdout.trim();
    console.log(`image/build.sh: ${seconds(t1)} s, fingerprint ${imageFingerprint.slice(0, 12)}\n${b.stderr.trim()}`);
    // The lab is the host: the deploy scripts and the NAS directories live there.
    await labShell(`mkdir -p ${DEPLOY} ${nas} ${idmapNas} && chmod 0700 ${nas} ${idmapNas}`);
    for (const f of ["install.sh", "uninstall.sh"]) {
      await labShell(`cat > ${DEPLOY}/${f}`, { input: await readFile(join(ROOT, "deploy", f)) });
    }
    await launchInstance(web, { socket });
    webData = await writeTestData(web, "/root/data", { sizeMiB: 1, socket });
    // Once on the 7.0 lab the manifest came back empty (the exec's output lost?): read it again.
    if (webData.length === 0) webData = await checksumTree(web, "/root/data", on());
    expect(webData.length).toBeGreaterThan(10);
    console.log(`setup: ${seconds(t0)} s`);
  });
  afterAll(async () => {
    await deploy("uninstall.sh", ["--name", name], true);
    await deploy("uninstall.sh", ["--name", idmapName], true);
    await track.cleanup();
  });

  it("install.sh creates the profile and an unprivileged container (--nas-mode shift, socket detected)", async () => {
    const t0 = performance.now();
    const r = await deploy("install.sh", ["--dir", nas, "--name", name, "--nas-mode", "shift"]);
    console.log(`install.sh (new container): ${seconds(t0)} s\n${r.stdout}`);
    expect(r.stdout).toMatch(new RegExp(`profile incus-backup-${name}: created .*NAS mode shift`));
    expect(r.stdout).toMatch(new RegExp(`container ${name}: created`));
    expect(r.stdout).toMatch(/^next run +\d{4}-\d\d-\d\d 03:00:00 /m);
    // The empty directory became a repository through `init`, and the service is pinned to its id.
    expect(r.stdout).toMatch(new RegExp(`^backup directory ${nas} is on \\S+ mounted at /`, "m"));
    const id = /repository .*: created \(id ([0-9a-f]{16})\)/.exec(r.stdout)?.[1];
    expect(id, r.stdout).toBeDefined();
    expect(JSON.parse(await lab(`cat ${nas}/incus-backup.json`))).toMatchObject({ format: "incus-backup", id });
    expect((await config(name)).config["environment.INCUS_BACKUP_REPOSITORY_ID"]).toBe(id);
    expect(await consoleLog(name)).toMatch(new RegExp(`daemon, repository /backups \\(id ${id}\\)`));

    const c = await config(name);
    expect(c.status).toBe("Running");
    expect(c.profiles).toEqual(["default", `incus-backup-${name}`]);
    expect(c.config["security.privileged"]).toBeUndefined();
    expect(c.config["raw.idmap"]).toBeUndefined();
    expect(c.config["volatile.base_image"]).toBe(imageFingerprint);
    expect(c.config).toMatchObject({
      "environment.INCUS_BACKUP_SCHEDULE": "0 3 * * *",
      "environment.INCUS_BACKUP_KEEP_DAILY": "7",
      "environment.INCUS_BACKUP_KEEP_WEEKLY": "4",
      "environment.INCUS_BACKUP_KEEP_MONTHLY": "6",
      "environment.INCUS_BACKUP_KEEP_LAST": "0",
      "environment.INCUS_BACKUP_IMAGES": "false",
      "environment.INCUS_BACKUP_SELF": `default/${name}`,
    });
    const profile = (await apiGet(`/1.0/profiles/incus-backup-${name}`, on())) as { devices: Record<string, Record<string, string>> };
    expect(profile.devices["incus-socket"]).toEqual({
      type: "proxy",
      connect: `unix:${incusDir}/unix.socket`,
      listen: "unix:/run/incus/unix.socket",
      bind: "container",
      uid: "0",
      gid: "0",
      mode: "0660",
    });
    expect(profile.devices.backups).toEqual({ type: "disk", source: nas, path: "/backups", shift: "true" });
    // The tool listens on nothing: no TCP/UDP socket, and the only listening unix socket is the
    // proxy's, which Incus makes.
    const net = await execRead(name, ["sh", "-c", "cat /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6 | grep -v local_address || true"], on());
    expect(net.trim()).toBe("");
    const unix = await execRead(name, ["sh", "-c", "awk '$4 == \"00010000\" { print $8 }' /proc/net/unix"], on());
    expect(unix.trim().split("\n").filter(Boolean)).toEqual(["/run/incus/unix.socket"]);
  });

  it("backup --all in the container writes into the host directory, root-owned, 0600/0700", async () => {
    const t0 = performance.now();
    const r = await tool(name, ["backup", "--all"]);
    console.log(`backup --all in the container: ${seconds(t0)} s: ${r.stdout.trim()}`);
    expect(r.code).toBe(0);
    const entries = (await lab(`find ${nas} -mindepth 1 -printf '%y %m %u:%g %P\\n'`)).trim().split("\n");
    expect(entries.some((e) => new RegExp(` instances/default/${web}/\\d{8}-\\d{6}/instance\\.tar\\.zst$`).test(e))).toBe(true);
    expect(entries.some((e) => / database\/\d{8}-\d{6}\/manifest\.json$/.test(e))).toBe(true);
    const wrong = entries.filter((e) => !/^(f 600|d 700) root:root /.test(e));
    expect(wrong).toEqual([]);
  });

  it("restore --instance --name X --force in the container restores", async () => {
    await incusOk(["exec", web, "--", "sh", "-c", "rm -rf /root/data/sub && echo changed > /root/data/small-1.txt"], on());
    const t0 = performance.now();
    const r = await tool(name, ["restore", "--instance", "--name", web, "--force"]);
    console.log(`restore in the container: ${seconds(t0)} s`);
    expect(r.code).toBe(0);
    expect(await checksumTree(web, "/root/data", on())).toEqual(webData);
    expect((await config(web)).status).toBe("Running");
  });

  it("re-running install changes the schedule; every minute, a backup runs untouched, prunes to the policy and notifies", async () => {
    // Two more versions of the instance by hand, so that the scheduled run has something to prune.
    for (let i = 0; i < 2; i++) expect((await tool(name, ["backup", "--instances", "--name", web])).code).toBe(0);
    // Notifications on every run: a setting install.sh leaves alone, kept across re-runs.
    await incusOk(["config", "set", name, "environment.INCUS_BACKUP_NOTIFY=always"], on());
    const installedAt = new Date();
    // Once a minute, at a second about 15 s from now (cron's sixth field): the first scheduled
    // run comes soon after the receiver is up instead of at the next whole minute.
    runSecond = (installedAt.getUTCSeconds() + 15) % 60;
    const schedule = `${runSecond} * * * * *`;
    const r = await deploy("install.sh", [
      "--dir", nas, "--name", name, "--nas-mode", "shift", "--schedule", schedule,
      "--keep-last", "2", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0",
      "--notify-url", `http://127.0.0.1:8099/hook/${secret}`,
    ]);
    expect(r.stdout).toMatch(new RegExp(`container ${name}: updated`));
    expect(r.stdout).toMatch(/notify http:\/\/127\.0\.0\.1:8099\/…/);
    expect(r.stdout).not.toContain(secret);
    const c = await config(name);
    expect(c.config["environment.INCUS_BACKUP_SCHEDULE"]).toBe(schedule);
    expect(c.config["environment.INCUS_BACKUP_NOTIFY"]).toBe("always");
    // status's exit code says whether a problem was found (10 to 12): here only its output counts.
    const status = await tool(name, ["status"], 300_000, true);
    expect(status.stdout).toContain(`(schedule "${schedule}"`);
    expect(status.stdout).toMatch(/^next run /m);
    expect(status.stdout).toMatch(/^policy +keep last 2$/m);

    // The receiver: a tiny server on 127.0.0.1 inside the backup container itself.
    const receiver = `require("http").createServer((q, s) => { let b = ""; q.on("data", (c) => (b += c)); q.on("end", () => { require("fs").appendFileSync("/tmp/notify.log", JSON.stringify({ url: q.url, body: JSON.parse(b) }) + "\\n"); s.end("ok"); }); }).listen(8099, "127.0.0.1", () => require("fs").writeFileSync("/tmp/receiver.up", ""));`;
    await incusOk(["exec", name, "--", "sh", "-c", "cat > /tmp/receiver.js"], { ...on(), input: receiver });
    await incusOk(["exec", name, "--", "sh", "-c", "node /tmp/receiver.js </dev/null >/tmp/receiver.out 2>&1 &"], on());
    // A run that starts before the receiver listens cannot reach it: count only runs after that.
    for (let i = 0; (await incus(["exec", name, "--", "test", "-e", "/tmp/receiver.up"], { ...on(), allowFail: true })).code !== 0; i++) {
      if (i > 100) throw new Error("the notification receiver did not start");
      await new Promise((res) => setTimeout(res, 100));
    }
    const receiverUp = new Date();

    // Nobody touches anything now: wait for the next scheduled run to finish.
    const t0 = performance.now();
    let state = await daemonState();
    while (
      !(
        state.lastRun?.trigger === "schedule" &&
        state.lastRun.status !== "running" &&
        new Date(state.lastRun.slot) > installedAt &&
        new Date(state.lastRun.started) > receiverUp
      )
    ) {
      if (performance.now() - t0 > 80_000) throw new Error(`no scheduled run within 80 s; log:\n${await consoleLog(name)}`);
      await new Promise((res) => setTimeout(res, 1000));
      state = await daemonState();
    }
    console.log(`scheduled run seen after ${seconds(t0)} s: ${JSON.stringify(state.lastRun)}`);
    expect(state.lastRun).toMatchObject({ status: "ok" });
    const version = state.lastRun!.version!;

    // Prune kept exactly the policy: the two newest versions of each item. The backup container
    // itself is in no backup at all: neither the manual `backup --all` nor the scheduled runs take it.
    const versions = async (path: string) => (await lab(`ls ${nas}/${path}`)).trim().split("\n").filter(Boolean);
    const webVersions = await versions(`instances/default/${web}`);
    expect(webVersions).toHaveLength(2);
    expect(webVersions.at(-1)).toBe(version);
    const databaseVersions = await versions("database");
    expect(databaseVersions).toHaveLength(2);
    expect(databaseVersions.at(-1)).toBe(version);
    expect((await labShell(`test -e ${nas}/instances/default/${name}`, { allowFail: true })).code).not.toBe(0);
    const log = await consoleLog(name);
    expect(log).toMatch(new RegExp(`backup ok in [\\d.]+s: ${version}; 2 of 2 item\\(s\\) backed up, .*; pruned \\d+, kept \\d+`));
    expect(log).not.toContain(secret);

    // The notification arrived, with the run's summary.
    let received = "";
    for (let i = 0; i < 10 && !received.includes(version); i++) {
      received = (await incus(["exec", name, "--", "cat", "/tmp/notify.log"], { ...on(), allowFail: true })).stdout;
      if (!received.includes(version)) await new Promise((res) => setTimeout(res, 500));
    }
    const notes = received.trim().split("\n").map((l) => JSON.parse(l) as { url: string; body: Record<string, any> });
    const note = notes.find((n) => n.body.version === version);
    expect(note).toBeDefined();
    expect(note!.url).toBe(`/hook/${secret}`);
    expect(note!.body).toMatchObject({ tool: "incus-backup", host: name, kind: "backup", trigger: "schedule", status: "ok", version });
    expect(note!.body.items.map((i: { label: string }) => i.label).sort()).toEqual(["database", `instance default/${web}`]);
    expect(note!.body.prune.removed).toBeGreaterThanOrEqual(1);
    expect(note!.body.text).toMatch(new RegExp(`^incus-backup on ${name}: backup ok`));
  });

  it("incus stop returns within 5 s when idle", async () => {
    // Idle: no run in progress, and not near the second when the next one starts.
    for (let i = 0; i < 70; i++) {
      const untilRun = (runSecond - new Date().getUTCSeconds() + 60) % 60;
      const locked = (await labShell(`test -e ${nas}/lock.json`, { allowFail: true })).code === 0;
      if (!locked && untilRun >= 15 && untilRun <= 55) break;
      await new Promise((res) => setTimeout(res, 1000));
    }
    const t0 = performance.now();
    await incusOk(["stop", name], { ...on(), timeoutMs: 60_000 });
    const ms = performance.now() - t0;
    console.log(`incus stop (idle): ${ms.toFixed(0)} ms`);
    expect(ms).toBeLessThan(5000);
    expect(await consoleLog(name)).toMatch(/ stopped\n*$/);
  });

  it("stopped during a backup, it leaves no partial version and no server-side backup that does not expire", async () => {
    // A big instance, so that the run is still going when the stop arrives.
    // Not tracked: it is deleted below, and with the whole server if the test fails first.
    const big = await launchInstance(uniqueName("big"), { socket });
    await writeTestData(big, "/root/data", { sizeMiB: 400, socket });
    // Pretend the service was down at a scheduled time: it catches up at once when it starts.
    const before = new Date(Date.now() - 3600_000).toISOString();
    await labShell(`sed -i 's/"coveredUntil": "[^"]*"/"coveredUntil": "${before}"/' ${nas}/state/daemon.json`);
    await incusOk(["start", name], on());
    // Stop while the big instance's backup is under way: its server-side backup exists from the
    // start of its creation to the end of its download; a streamed backup (Incus 7.0) has none,
    // but its file grows in .tmp (the small instance's stays far below 20 MiB).
    const inProgress =
      `find ${nas}/.tmp -type f -size +20M 2>/dev/null | grep -q . || ` +
      `INCUS_DIR=${incusDir} incus query /1.0/instances/${big}/backups 2>/dev/null | grep -q incus-backup`;
    await labShell(`i=0; until ${inProgress}; do i=$((i+1)); [ $i -lt 1200 ] || exit 1; sleep 0.05; done`, { timeoutMs: 120_000 });
    const t0 = performance.now();
    await incusOk(["stop", name], { ...on(), timeoutMs: 120_000 });
    console.log(`incus stop (during a backup): ${(performance.now() - t0).toFixed(0)} ms`);

    const log = await consoleLog(name);
    expect(log).toMatch(/catching up on .* starting/);
    expect(log).toMatch(/backup interrupted/);
    const interrupted = (await lab(`grep -l '"status": "interrupted"' ${nas}/runs/*.json`)).trim().split("\n").pop()!;
    const version = interrupted.split("/").pop()!.replace(/\.json$/, "");
    const record = JSON.parse(await lab(`cat ${interrupted}`)) as { items: Array<{ label: string; ok: boolean; error?: string }> };
    expect(record.items.find((i) => i.label === `instance default/${big}`)).toMatchObject({ ok: false, error: "interrupted" });
    // No version of the big instance from that run, and nothing half-written anywhere.
    expect((await lab(`ls ${nas}/instances/default/${big} 2>/dev/null || true`)).trim()).toBe("");
    expect((await lab(`ls -A ${nas}/.tmp`)).trim()).toBe("");
    const listed = await lab(`find ${nas}/instances ${nas}/database -mindepth 1 -maxdepth 3 -type d -name '${version}'`);
    for (const dir of listed.trim().split("\n").filter(Boolean)) {
      // Items finished before the stop are complete versions: manifest and checksums present.
      expect((await lab(`ls ${dir}`)).trim().split("\n")).toEqual(expect.arrayContaining(["manifest.json", "SHA256SUMS"]));
    }
    const backups = (await apiGet(`/1.0/instances/${big}/backups?recursion=1`, on())) as Array<{ expires_at: string }>;
    for (const b of backups) {
      const left = Date.parse(b.expires_at) - Date.now();
      expect(left).toBeGreaterThan(0);
      expect(left).toBeLessThan(25 * 3600_000);
    }
    await incusOk(["delete", "--force", big], on());
  });

  it("the NAS not mounted at start-up (an empty mount point), then another repository there: every scheduled run fails and notifies, nothing is written, status exits 8", async () => {
    // The container is stopped (the test before stops it). The NAS goes away: its mount point stays, empty.
    const away = `${nas}.away`;
    await labShell(`mv ${nas} ${away} && mkdir -m 0700 ${nas}`);
    const schedule = (await config(name)).config["environment.INCUS_BACKUP_SCHEDULE"]!;
    const id = (await config(name)).config["environment.INCUS_BACKUP_REPOSITORY_ID"]!;
    try {
      // Every 2 seconds, so that runs come quickly.
      await incusOk(["config", "set", name, "environment.INCUS_BACKUP_SCHEDULE=*/2 * * * * *"], on());
      await incusOk(["start", name], on());
      const receiver = `require("http").createServer((q, s) => { let b = ""; q.on("data", (c) => (b += c)); q.on("end", () => { require("fs").appendFileSync("/tmp/notify.log", b + "\\n"); s.end("ok"); }); }).listen(8099, "127.0.0.1");`;
      await incusOk(["exec", name, "--", "sh", "-c", "rm -f /tmp/notify.log; cat > /tmp/receiver.js && (node /tmp/receiver.js </dev/null >/dev/null 2>&1 &)"], { ...on(), input: receiver });
      const waitForLog = async (re: RegExp) => {
        const t0 = performance.now();
        for (;;) {
          const log = await consoleLog(name);
          if (re.test(log)) return log;
          if (performance.now() - t0 > 30_000) throw new Error(`not in the service's log within 30 s: ${re}\n${log}`);
          await new Promise((res) => setTimeout(res, 500));
        }
      };
      const notified = async (re: RegExp) => {
        for (let i = 0; i < 60; i++) {
          const got = (await incus(["exec", name, "--", "cat", "/tmp/notify.log"], { ...on(), allowFail: true })).stdout;
          const hit = got.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l) as { status: string; error?: string }).find((n) => re.test(n.error ?? ""));
          if (hit) return hit;
          await new Promise((res) => setTimeout(res, 500));
        }
        throw new Error(`no notification matching ${re}`);
      };

      const unmounted = /\/backups is not an incus-backup repository \(is the NAS mounted\?\); nothing was written/;
      await waitForLog(new RegExp(`backup failed in [\\d.]+s: .*${unmounted.source}`));
      expect(await notified(unmounted)).toMatchObject({ status: "failed" });
      expect((await lab(`ls -A ${nas}`)).trim()).toBe("");
      const s = await tool(name, ["status"], 60_000, true);
      expect(s.code).toBe(8);
      expect(s.stdout).toMatch(/^repository +\/backups: ERROR: \/backups is not an incus-backup repository/m);
      // A manual backup is refused the same way.
      const b = await tool(name, ["backup", "--all"], 60_000, true);
      expect(b.code).toBe(8);
      expect((await lab(`ls -A ${nas}`)).trim()).toBe("");

      // Another repository mounted in its place: refused, and only its marker is there.
      const other = JSON.parse((await tool(name, ["init", "--json"])).stdout) as { id: string };
      expect(other.id).not.toBe(id);
      const elsewhere = new RegExp(`/backups holds repository ${other.id}, not repository ${id} that this service was set up with; nothing was written`);
      await waitForLog(new RegExp(`backup failed in [\\d.]+s: .*${elsewhere.source}`));
      expect(await notified(elsewhere)).toMatchObject({ status: "failed" });
      expect((await tool(name, ["status"], 60_000, true)).code).toBe(8);
      expect((await lab(`ls -A ${nas}`)).trim()).toBe("incus-backup.json");
    } finally {
      await incus(["stop", name, "--force"], { ...on(), allowFail: true });
      await incusOk(["config", "set", name, `environment.INCUS_BACKUP_SCHEDULE=${schedule}`], on());
      await labShell(`rm -rf ${nas} && mv ${away} ${nas}`);
    }
  });

  it("a new image build and a re-run of install upgrade the container; settings and last-run state survive; a same re-run does nothing", async () => {
    const before = await daemonState();
    // The install id the locks record: set once by install.sh, and recorded by the running service.
    const installId = (await config(name)).config["environment.INCUS_BACKUP_INSTALL_ID"];
    expect(installId).toMatch(/^[0-9a-f]{16}$/);
    expect((before as { install?: string }).install).toBe(installId);
    const runsBefore = (await lab(`ls ${nas}/runs`)).trim().split("\n");
    // A changed bundle, as after a code change: only the small layer is rebuilt.
    const tmp = await mkdtemp(join(tmpdir(), "ibk-bundle-"));
    track.defer(() => rm(tmp, { recursive: true, force: true }));
    const bundle = join(tmp, "incus-backup.mjs");
    await writeFile(bundle, `${await readFile(join(ROOT, "dist/incus-backup.mjs"), "utf8")}\n// rebuilt for the upgrade test ${randomBytes(4).toString("hex")}\n`);
    const t0 = performance.now();
    const b = await build(["--bundle", bundle]);
    expect(b.code).toBe(0);
    const fingerprint = b.stdout.trim();
    console.log(`image/build.sh with a changed bundle: ${seconds(t0)} s\n${b.stderr.trim()}`);
    expect(fingerprint).not.toBe(imageFingerprint);

    const t1 = performance.now();
    const args = [
      "--dir", nas, "--name", name, "--nas-mode", "shift", "--schedule", "* * * * *",
      "--keep-last", "2", "--keep-daily", "0", "--keep-weekly", "0", "--keep-monthly", "0",
      "--notify-url", `http://127.0.0.1:8099/hook/${secret}`,
    ];
    const r = await deploy("install.sh", args);
    console.log(`install.sh (upgrade): ${seconds(t1)} s`);
    expect(r.stdout).toMatch(new RegExp(`upgrading ${name} to the image ${fingerprint.slice(0, 12)}`));
    expect(r.stdout).toMatch(new RegExp(`container ${name}: upgraded`));
    const c = await config(name);
    expect(c.status).toBe("Running");
    expect(c.config["volatile.base_image"]).toBe(fingerprint);
    expect(c.config["environment.INCUS_BACKUP_NOTIFY"]).toBe("always");
    expect(c.config["environment.INCUS_BACKUP_SCHEDULE"]).toBe("* * * * *");
    expect(c.config["environment.INCUS_BACKUP_INSTALL_ID"]).toBe(installId);
    // The old image went with the alias move.
    expect((await incus(["image", "info", imageFingerprint], { ...on(), allowFail: true })).code).not.toBe(0);
    // State is on the NAS: the runs and the last run are still there, and status shows them.
    const runsAfter = (await lab(`ls ${nas}/runs`)).trim().split("\n");
    expect(runsAfter).toEqual(expect.arrayContaining(runsBefore));
    const status = JSON.parse((await tool(name, ["status", "--json"], 300_000, true)).stdout) as { lastRun: { version: string } | null; daemon: { lastRun?: { version?: string } } | null };
    expect(status.lastRun).not.toBeNull();
    expect(status.lastRun!.version >= runsBefore.at(-1)!.replace(/\.json$/, "")).toBe(true);
    expect(status.daemon?.lastRun).toBeDefined();
    expect(before.lastRun).toBeDefined();

    // Once more with the same options and image: nothing to do, and the service is not restarted.
    const started = (JSON.parse(await lab(`cat ${nas}/state/daemon.json`)) as { started: string }).started;
    const again = await deploy("install.sh", args);
    expect(again.stdout).toMatch(new RegExp(`profile incus-backup-${name}: unchanged`));
    expect(again.stdout).toMatch(new RegExp(`container ${name}: unchanged`));
    expect((JSON.parse(await lab(`cat ${nas}/state/daemon.json`)) as { started: string }).started).toBe(started);
  });

  it("install.sh --nas-mode idmap maps only the container's root to the host's root; auto falls back to it", async () => {
    const t0 = performance.now();
    const r = await deploy("install.sh", ["--dir", idmapNas, "--name", idmapName, "--nas-mode", "idmap", "--socket", `${incusDir}/unix.socket`]);
    console.log(`install.sh --nas-mode idmap: ${seconds(t0)} s`);
    expect(r.stdout).toMatch(/NAS mode idmap/);
    const c = await config(idmapName);
    expect(c.status).toBe("Running");
    expect(c.config["raw.idmap"]).toBe("both 0 0");
    expect(c.config["security.privileged"]).toBeUndefined();
    const profile = (await apiGet(`/1.0/profiles/incus-backup-${idmapName}`, on())) as { devices: Record<string, Record<string, string>> };
    expect(profile.devices.backups).toEqual({ type: "disk", source: idmapNas, path: "/backups" });
    // Only root is mapped through: the container's other ids stay in the unprivileged range.
    const map = await execRead(idmapName, ["cat", "/proc/self/uid_map"], on());
    expect(map.trim().split("\n").map((l) => l.trim().split(/\s+/))[0]).toEqual(["0", "0", "1"]);
    expect((await tool(idmapName, ["backup", "--database"])).code).toBe(0);
    const entries = (await lab(`find ${idmapNas} -mindepth 1 -printf '%y %m %u:%g %P\\n'`)).trim().split("\n");
    expect(entries.some((e) => / database\/\d{8}-\d{6}\/config\.json$/.test(e))).toBe(true);
    expect(entries.filter((e) => !/^(f 600|d 700) root:root /.test(e))).toEqual([]);

    // auto falls back to idmap when the mount cannot be shifted. This lab can shift, so an incus
    // wrapper fails the start the way Incus does on NFS, CIFS or an old kernel.
    const fake = `#!/bin/sh
if [ "$1" = start ] && [ "$(/usr/bin/incus profile device get "incus-backup-$2" backups shift 2>/dev/null)" = true ]; then
  echo 'Error: Failed to start device "backups": Required idmapping abilities not available' >&2
  exit 1
fi
exec /usr/bin/incus "$@"
`;
    await labShell(`mkdir -p ${DEPLOY}/fakebin && cat > ${DEPLOY}/fakebin/incus && chmod +x ${DEPLOY}/fakebin/incus`, { input: fake });
    const auto = await deploy("install.sh", ["--dir", idmapNas, "--name", idmapName, "--nas-mode", "auto"], false, `PATH=${DEPLOY}/fakebin:$PATH`);
    expect(auto.stdout).toMatch(new RegExp(`shift=true does not work for ${idmapNas} here \\(Error: Failed to start device "backups": Required idmapping abilities not available\\)`));
    expect(auto.stdout).toMatch(/falling back to --nas-mode idmap: the container's root writes to .* as the host's root/);
    expect(auto.stdout).toMatch(/NAS mode idmap/);
    const after = await config(idmapName);
    expect(after.status).toBe("Running");
    expect(after.config["raw.idmap"]).toBe("both 0 0");
    expect(after.config["user.incus-backup.nas-mode"]).toBe("idmap");

    // Settings the service refuses make install fail and say why.
    const bad = await deploy("install.sh", ["--dir", idmapNas, "--name", idmapName, "--nas-mode", "idmap", "--schedule", "61 * * * *"], true);
    expect(bad.code).not.toBe(0);
    expect(bad.stdout).toMatch(/^settings +ERROR: INCUS_BACKUP_SCHEDULE "61 \* \* \* \*" is not a valid cron expression/m);
    expect(bad.stderr).toMatch(/the service refuses its settings/);

    const u = await deploy("uninstall.sh", ["--name", idmapName]);
    expect(u.stdout).toMatch(new RegExp(`the backups in ${idmapNas} were not touched`));
  });

  it("two deployed containers share one NAS directory, with one host name: neither takes the other's live lock, unlock refuses it, and after a takeover the frozen run stops without writing a version", async () => {
    // Two installs, as on two hosts that mount the same NAS share; both are called `twinA` inside
    // (every deployed container is `backup` on its own host), each with its own PID namespace.
    const [a, b] = [uniqueName("ibk-twa"), uniqueName("ibk-twb")];
    const shared = `/srv/nas-${a}`;
    await labShell(`mkdir -p ${shared} && chmod 0700 ${shared}`);
    track.defer(() => labShell(`rm -rf ${shared}`));
    // A schedule that does not come round during the test: only the runs started here touch the NAS.
    const idle = ["--nas-mode", "shift", "--schedule", "0 0 1 1 *"];
    for (const n of [a, b]) {
      track.defer(() => deploy("uninstall.sh", ["--name", n], true));
      await deploy("install.sh", ["--dir", shared, "--name", n, ...idle]);
    }
    const ids = await Promise.all([a, b].map(async (n) => (await config(n)).config));
    expect(ids[0]!["environment.INCUS_BACKUP_REPOSITORY_ID"]).toBe(ids[1]!["environment.INCUS_BACKUP_REPOSITORY_ID"]);
    expect(ids[0]!["environment.INCUS_BACKUP_INSTALL_ID"]).not.toBe(ids[1]!["environment.INCUS_BACKUP_INSTALL_ID"]);
    await incusOk(["exec", b, "--", "busybox", "hostname", a], on());
    expect((await execRead(b, ["uname", "-n"], on())).trim()).toBe(a);

    // A's backup, frozen the moment its lock is on the NAS (a busy loop in A itself catches it).
    const run = `( sh -c 'echo $$ >/tmp/a.pid; exec incus-backup backup --instances --name ${web}' >/tmp/a.out 2>&1; echo $? >/tmp/a.rc ) </dev/null >/dev/null 2>&1 &
while [ ! -e /backups/lock.json ] && [ ! -e /tmp/a.rc ]; do :; done; kill -STOP "$(cat /tmp/a.pid)"; cat /tmp/a.pid`;
    const aPid = (await incusOk(["exec", a, "--", "sh", "-c", run], on())).trim();
    expect(aPid).toMatch(/^\d+$/);
    try {
      const lock = JSON.parse(await lab(`cat ${shared}/lock.json`)) as { host: string; pid: number; install: string; refreshed: string };
      expect(lock).toMatchObject({ host: a, pid: Number(aPid), install: ids[0]!["environment.INCUS_BACKUP_INSTALL_ID"] });
      const installA = `install ${lock.install.slice(0, 8)}`;

      // B, of the same host name, meets A's live lock: refused at once, by backup and by unlock.
      const refused = await tool(b, ["backup", "--instances", "--name", web], 300_000, true);
      expect(refused.code, refused.stderr).toBe(7);
      expect(refused.stderr).toContain(`locked by pid ${aPid} on host ${a} (${installA})`);
      const unlock = await tool(b, ["unlock"], 300_000, true);
      expect(unlock.code, unlock.stderr).toBe(7);
      expect(JSON.parse(await lab(`cat ${shared}/lock.json`))).toEqual(lock);

      // A stays frozen for longer than a lock is valid (its last refresh 11 minutes back): B takes over.
      const old = new Date(Date.now() - 11 * 60_000).toISOString();
      await labShell(`cat > ${shared}/lock.json`, { input: JSON.stringify({ ...lock, refreshed: old }) });
      const taken = await tool(b, ["backup", "--instances", "--name", web]);
      expect(taken.code, taken.stderr).toBe(0);
      expect(taken.stderr).toMatch(new RegExp(`taking over a stale lock: locked by pid ${aPid} on host ${a} \\(${installA}\\) .*\\(not refreshed for 11 min\\)`));
      const listed = (await tool(b, ["list", "--json"])).stdout;
      expect(JSON.parse(listed)).toHaveLength(1);
      const runs = await lab(`ls ${shared}/runs`);

      // A wakes up: it stops at its next safe point, exit 7, and nothing of it is listed.
      await incusOk(["exec", a, "--", "sh", "-c", `kill -CONT ${aPid}`], on());
      let rc = "";
      for (let i = 0; rc === "" && i < 600; i++) {
        rc = (await incus(["exec", a, "--", "cat", "/tmp/a.rc"], { ...on(), allowFail: true })).stdout.trim();
        if (rc === "") await new Promise((res) => setTimeout(res, 200));
      }
      const aOut = await execRead(a, ["cat", "/tmp/a.out"], on());
      console.log(`two containers, one NAS: B refused (exit ${refused.code}), unlock refused (exit ${unlock.code}), B took over; A then said: ${aOut.trim().split("\n").pop()}`);
      expect(rc, aOut).toBe("7");
      expect(aOut).toMatch(/the repository lock of this run (was taken over|is gone: another run took it over).*stopped before writing more/);
      expect((await tool(b, ["list", "--json"])).stdout).toBe(listed);
      // A checks its lock before its run record too, but a run frozen between that check and the
      // write (a window no lock on a NAS closes) leaves its record: never one of a finished run.
      for (const f of (await lab(`ls ${shared}/runs`)).split("\n").filter((x) => x && !runs.includes(x))) {
        const record = JSON.parse(await lab(`cat ${shared}/runs/${f}`)) as { status: string; items?: Array<{ ok: boolean }> };
        console.log(`A's run record ${f}: status ${record.status}`);
        expect(record.status).not.toBe("ok");
        expect((record.items ?? []).filter((i) => i.ok)).toEqual([]);
      }
      expect((await tool(a, ["verify", "--deep"])).code).toBe(0);
      expect((await lab(`ls -A ${shared}/.tmp 2>/dev/null; test ! -e ${shared}/lock.json && echo unlocked`)).trim()).toBe("unlocked");
    } finally {
      await incus(["exec", a, "--", "sh", "-c", `kill -CONT ${aPid}`], { ...on(), allowFail: true });
    }
    for (const n of [a, b]) await deploy("uninstall.sh", ["--name", n]);
  });

  it("uninstall.sh removes the container and the profile, and leaves every backup in place", async () => {
    const fingerprintFiles = `cd ${nas} && find . -type f ! -name lock.json -print0 | sort -z | xargs -0 sha256sum`;
    // A scheduled run may be writing: stop first, then take the picture that must not change.
    await incusOk(["stop", name], { ...on(), timeoutMs: 120_000 });
    const stopped = await lab(fingerprintFiles);
    const r = await deploy("uninstall.sh", ["--name", name]);
    expect(r.stdout).toMatch(new RegExp(`removed the container ${name}`));
    expect(r.stdout).toMatch(new RegExp(`removed the profile incus-backup-${name}`));
    expect(r.stdout).toMatch(new RegExp(`the backups in ${nas} were not touched`));
    expect((await incus(["info", name], { ...on(), allowFail: true })).code).not.toBe(0);
    expect((await incus(["profile", "show", `incus-backup-${name}`], { ...on(), allowFail: true })).code).not.toBe(0);
    expect(await lab(fingerprintFiles)).toBe(stopped);
    expect(stopped).toMatch(/instance\.tar\.zst/);
  });
});
