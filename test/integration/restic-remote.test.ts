// Issue 15: restic repositories off the host, through real remotes on loopback: restic's REST
// protocol (`rclone serve restic`) and sftp (a private sshd). The round trip on each, and the remote
// going away mid-backup: for a moment (restic retries, the version is complete) and for good (the
// run is stopped, nothing is listed, the next run cleans up).
import { afterAll, describe, expect, it } from "vitest";
import { checksumTree, incusOk, labSocket, labVersions, tracker, uniqueName, writeTestData } from "../lab/lab";
import { launchRealistic } from "./helpers/realistic";
import { resticBinaries, resticRepo, restServer, sftpServer, toolSnapshots } from "./helpers/restic";
import { instanceStatus } from "./helpers/server";
import { startTool, toolOk, type ListRow } from "./helpers/tool";
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const runFile = promisify(execFile);
const binaries = await resticBinaries();
const matrix = binaries.map((b, i) => [b.version, labVersions()[i % labVersions().length]!, b] as const);
const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

async function list(repo: string, env: Record<string, string>): Promise<ListRow[]> {
  return JSON.parse((await toolOk(["list", "--json", `--repo=${repo}`], { env })).stdout) as ListRow[];
}

async function resticRunning(itemName: string): Promise<boolean> {
  const { stdout } = await runFile("ps", ["-eo", "args="]);
  return stdout.split("\n").some((l) => /restic backup --stdin/.test(l) && l.includes(itemName));
}

describe.each(matrix)("restic %s over remotes (Incus %s)", (_v, version, restic) => {
  const track = tracker();
  afterAll(() => track.cleanup());
  const socket = labSocket(version);
  const on = { socket };

  it("REST server (rclone serve restic): init, backup, replace, verify --deep", async () => {
    const server = await restServer(track);
    const r = await resticRepo(track, restic, { location: server.location, keys: server.keys });
    const name = uniqueName("rr-web");
    await launchRealistic(name, { socket, track, pool: "btrfs", snapshots: 1 });
    const data = await writeTestData(name, "/root/data", { sizeMiB: 4, socket });
    await toolOk(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env: r.env });
    expect((await list(r.repo, r.env)).map((x) => x.name)).toEqual([name]);
    await incusOk(["exec", name, "--", "rm", "-r", "/root/data"], on);
    await toolOk(["restore", "--instance", "--name", name, "--force", `--repo=${r.repo}`], { socket, env: r.env, timeoutMs: 300_000 });
    expect(await instanceStatus(name, on)).toBe("Running");
    expect(await checksumTree(name, "/root/data", on)).toEqual(data);
    expect((await toolOk(["verify", "--deep", `--repo=${r.repo}`], { env: r.env })).stdout).toMatch(/1 of 1 version\(s\) ok \(deep\)/);
  });

  it("sftp (a private sshd on 127.0.0.1): init, backup, the instance deleted, restored", async () => {
    const server = await sftpServer(track);
    const pathRepo = `${(await resticRepo(track, restic, { init: false })).dir}/over-sftp`;
    const r = await resticRepo(track, restic, { location: server.location(pathRepo), init: false, keys: `${pathRepo}/keys` });
    const env = { ...r.env, PATH: server.path };
    await toolOk(["init", `--repo=${r.repo}`], { env });
    const name = uniqueName("rs-sftp");
    await launchRealistic(name, { socket, track, pool: "default" });
    const data = await writeTestData(name, "/root/data", { sizeMiB: 4, socket });
    await toolOk(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env });
    await incusOk(["delete", "--force", name], on);
    await toolOk(["restore", "--instance", "--name", name, `--repo=${r.repo}`], { socket, env, timeoutMs: 300_000 });
    expect(await instanceStatus(name, on)).toBe("Running");
    expect(await checksumTree(name, "/root/data", on)).toEqual(data);
  });

  it("the remote goes away mid-backup: back soon, the backup completes; gone, the run stops cleanly and lists nothing", async () => {
    const server = await restServer(track);
    const r = await resticRepo(track, restic, { location: server.location, keys: server.keys });
    const name = uniqueName("rr-away");
    await launchRealistic(name, { socket, track, pool: "default" });
    await writeTestData(name, "/root/data", { sizeMiB: 40, socket });

    // Away for three seconds once restic is in (its lock is there; before that, restic 0.14 would
    // fail at once, the case at the end): restic retries, and the version is complete.
    // Each run is limited to 200 s, under the test's 300 s: a run that hangs fails with its output.
    const first = startTool(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env: r.env, timeoutMs: 200_000 });
    for (let i = 0; i < 300 && !((await resticRunning(name)) && (await server.locks()) > 0); i++) await sleep(50);
    await server.stop();
    await sleep(3000);
    await server.start();
    const done = await first.done;
    expect(done.code, done.stderr).toBe(0);
    expect(await list(r.repo, r.env)).toHaveLength(1);
    expect((await toolOk(["verify", "--deep", `--repo=${r.repo}`], { env: r.env })).stdout).toMatch(/1 of 1 version\(s\) ok \(deep\)/);

    // Gone for good once restic is in (its lock is there): the admin stops the run (restic would
    // retry for 15 minutes, and again to remove its lock); the tool is out within seconds, and
    // nothing is listed.
    const second = startTool(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env: r.env, timeoutMs: 200_000 });
    for (let i = 0; i < 300 && !((await resticRunning(name)) && (await server.locks()) > 0); i++) await sleep(50);
    await server.stop();
    await sleep(2000);
    const stopAt = Date.now();
    second.child.kill("SIGTERM");
    const stopped = await second.done;
    expect(stopped.code, stopped.stderr).toBe(130);
    expect(Date.now() - stopAt).toBeLessThan(30_000);
    for (let i = 0; i < 100 && (await resticRunning(name)); i++) await sleep(100);
    expect(await resticRunning(name)).toBe(false);
    await server.start();
    expect(await list(r.repo, r.env)).toHaveLength(1);

    // Gone before the run starts: it fails (0.14 at once, 0.18 after retrying for
    // INCUS_BACKUP_RESTIC_CONNECT_TIMEOUT) and says the server cannot be reached.
    await server.stop();
    const env = { ...r.env, INCUS_BACKUP_RESTIC_CONNECT_TIMEOUT: "3" };
    const away = await startTool(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env, timeoutMs: 120_000 }).done;
    expect(away.code, away.stderr).toBe(8);
    expect(away.stderr).toMatch(/cannot reach the restic repository at rest:http:\/\/127\.0\.0\.1:\d+\/.*connect: connection refused/);
    await server.start();

    // The next run removes whatever the stopped one left, and adds its own version.
    await toolOk(["backup", "--instances", "--name", name, `--repo=${r.repo}`], { socket, env: r.env });
    expect(await list(r.repo, r.env)).toHaveLength(2);
    expect((await toolSnapshots(r, restic)).filter((s) => s.tags.includes("incus-backup-data"))).toHaveLength(2);
  });
});
