// Restore drills on a server set up as a real host (a NIC on the managed bridge, a static address,
// a proxy port, snapshots, a btrfs volume): healthy instances pass, one that cannot boot and one whose
// check fails do not, copies run beside their running originals without a conflict, a killed drill
// leaves nothing once the next run has tidied up, runs without names rotate, volumes are compared
// with their backup, restic works the same, and nothing outside the scratch project changes.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createVolumeWithData, incusOk, launchInstance, tracker, uniqueName, writeTestData } from "../lab/lab";
import { configObjects, query, volumeObjects } from "./helpers/config-objects";
import { duplicateMacs, launchRealistic, macsOf } from "./helpers/realistic";
import { resticBinaries, resticRepo } from "./helpers/restic";
import { instanceStatus, isolatedServer, repoDir } from "./helpers/server";
import { startTool, tool, toolOk } from "./helpers/tool";

const DRILL = "incus-backup-drill";

describe("restore drills", () => {
  const track = tracker();
  // What is made on the private server goes with it (its removal is deferred in `track`, and runs first).
  const onServer = tracker();
  let socket: string;
  let dir: string;
  const on = () => ({ socket });
  const web = uniqueName("dr-web");
  const broken = uniqueName("dr-broken");
  const badcheck = uniqueName("dr-check");
  const data = uniqueName("dr-data");

  /** Everything on the server outside the scratch project: instances as configured and their state, volumes, the configuration. */
  async function listing(): Promise<unknown> {
    type Inst = { name: string; project: string; status: string; config: Record<string, string>; devices: unknown; profiles: string[]; snapshots?: unknown };
    const instances = (await query<Inst[]>(socket, "/1.0/instances?recursion=1&all-projects=true"))
      .filter((i) => i.project !== DRILL)
      .map((i) => ({ name: `${i.project}/${i.name}`, status: i.status, config: i.config, devices: i.devices, profiles: i.profiles }))
      .sort((a, b) => a.name.localeCompare(b.name));
    const volumes = Object.fromEntries(Object.entries(await volumeObjects(socket)).filter(([k]) => !k.includes(` ${DRILL}/`)));
    const config = Object.fromEntries(Object.entries(await configObjects(socket)).filter(([k]) => !k.includes(DRILL)));
    return { instances, volumes, config };
  }

  async function scratch(): Promise<string[]> {
    const names = (await incusOk(["list", "--project", DRILL, "-f", "csv", "-c", "n"], on())).split("\n").filter(Boolean);
    for (const pool of ["default", "btrfs"]) {
      names.push(...(await incusOk(["storage", "volume", "list", pool, "--project", DRILL, "-f", "csv", "-c", "n", "type=custom"], on())).split("\n").filter(Boolean));
    }
    return names;
  }

  beforeAll(async () => {
    socket = await isolatedServer(track);
    dir = await repoDir(track);
    await launchRealistic(web, { socket, track: onServer, staticAddress: true, proxy: true, snapshots: 1 });
    await createVolumeWithData("btrfs", data, { socket, track: onServer, attachTo: web, path: "/srv/data", sizeMiB: 1 });
    await writeTestData(web, "/root/data", { sizeMiB: 1, socket });
    await incusOk(["exec", web, "--", "sh", "-c", "echo ok > /root/health"], on());
    await incusOk(["config", "set", web, "user.incus-backup.drill-check=test -d /root/data && grep -q ok /root/health"], on());
    // An init that exits at once, backed up that way: its copy cannot stay up.
    await launchInstance(broken, { socket, track: onServer });
    await incusOk(["exec", broken, "--", "sh", "-c", 'rm -f /sbin/init && printf "#!/bin/sh\\nexit 0\\n" > /sbin/init && chmod +x /sbin/init'], on());
    await launchInstance(badcheck, { socket, track: onServer, config: { "user.incus-backup.drill-check": "echo the service is down >&2; exit 3" } });
    await toolOk(["backup", "--all", `--dir=${dir}`], on());
  });
  afterAll(() => track.cleanup());

  it("a healthy instance passes, its copy running beside the running original with no shared MAC, address, port or volume; nothing outside the scratch project changes", async () => {
    const before = await listing();
    const macs = await macsOf(web, socket);
    const run = startTool(["drill", "--name", web, "--settle", "4", `--dir=${dir}`], { socket });
    // While the copy runs: the original too, and no MAC twice on the server.
    let seen = false;
    for (let i = 0; i < 400 && !seen && run.child.exitCode === null; i++) {
      const copies = await query<Array<{ status: string }>>(socket, `/1.0/instances?recursion=1&project=${DRILL}`);
      seen = copies.some((c) => c.status === "Running");
      if (!seen) await new Promise((r) => setTimeout(r, 50));
    }
    expect(seen).toBe(true);
    expect(await instanceStatus(web, on())).toBe("Running");
    expect(await duplicateMacs(socket)).toEqual([]);
    const r = await run.done;
    console.log(`drill of a realistic instance: ${r.stdout.trim().split("\n")[0]}`);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`PASS  instance default/${web} \\d{8}-\\d{6} \\(import [\\d.]+ s, running [\\d.]+ s, check [\\d.]+ s\\)`));
    expect(r.stdout).toContain("web (proxy tcp:127.0.0.1:");
    expect(r.stdout).toContain(`${data} (disk volume btrfs/${data})`);
    expect(r.stdout).toMatch(/eth0 \(nic on incusbr0\)/);
    expect(await scratch()).toEqual([]);
    expect(await listing()).toEqual(before);
    expect(await macsOf(web, socket)).toEqual(macs);
  });

  it("an instance whose backup cannot boot fails, with the reason; so does one whose check command fails", async () => {
    const r = await tool(["drill", "--name", broken, "--name", badcheck, "--settle", "2", `--dir=${dir}`, "--json"], on());
    expect(r.code, r.stderr).toBe(1);
    const results = JSON.parse(r.stdout) as Array<{ name: string; ok: boolean; reason: string; output?: string }>;
    const by = (n: string) => results.find((x) => x.name === n)!;
    expect(by(broken)).toMatchObject({ ok: false, reason: expect.stringMatching(/it stopped [\d.]+ s after it started \(status Stopped\): its init exited or crashed|it did not start/) });
    expect(by(badcheck)).toMatchObject({ ok: false, reason: "its check exited 3: the service is down", output: "the service is down" });
    expect(await scratch()).toEqual([]);
    // A failed drill is a problem for monitoring: status exits 13.
    const status = await toolOk(["status", `--dir=${dir}`], on(), 13);
    expect(status.stdout).toMatch(/13 +the last restore drill of 2 item\(s\) failed/);
    expect(status.stdout).toMatch(new RegExp(`FAILED  instance default/${badcheck} \\d{8}-\\d{6} at .*: its check exited 3`));
    expect(status.stdout).toMatch(/drills +last .*: 0 of 2 passed; 1 of 3 item\(s\) passed their last drill/);
  });

  it("a volume is restored into the scratch project and compared with its backup, file by file", async () => {
    const r = await toolOk(["drill", "--volumes", "--name", `btrfs/${data}`, `--dir=${dir}`], on());
    expect(r.stdout).toMatch(new RegExp(`PASS  volume default/btrfs/${data} \\d{8}-\\d{6} \\(import [\\d.]+ s, compare [\\d.]+ s\\)`));
    expect(await scratch()).toEqual([]);
  });

  it("without names, at most --max items, the least recently drilled first: over runs, each in turn", async () => {
    const picked: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await tool(["drill", "--max", "1", "--settle", "0", `--dir=${dir}`, "--json"], on());
      const [one] = JSON.parse(r.stdout) as Array<{ name: string }>;
      picked.push(one!.name);
    }
    expect(picked.sort()).toEqual([badcheck, broken, web].sort());
  });

  it("a drill killed while its copy runs leaves it; the next run of any command takes it away", async () => {
    const before = await listing();
    const run = startTool(["drill", "--name", web, "--settle", "30", `--dir=${dir}`], { socket });
    for (let i = 0; i < 400; i++) {
      const copies = await query<Array<{ status: string }>>(socket, `/1.0/instances?recursion=1&project=${DRILL}`);
      if (copies.some((c) => c.status === "Running")) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    run.child.kill("SIGKILL");
    await run.done.catch(() => undefined);
    expect((await scratch()).length).toBeGreaterThan(0);
    const next = await toolOk(["backup", "--instances", "--name", badcheck, `--dir=${dir}`], on());
    expect(next.stderr).toMatch(/an interrupted drill was tidied up \(removed instance ibk-drill-[0-9a-f]{8}/);
    expect(await scratch()).toEqual([]);
    expect(await listing()).toEqual(before);
  });

  it("works the same on a restic repository", async () => {
    const [restic] = await resticBinaries();
    const r = await resticRepo(track, restic!);
    await toolOk(["backup", "--instances", "--name", web, `--repo=${r.repo}`], { socket, env: r.env });
    const d = await toolOk(["drill", "--name", web, "--settle", "1", `--repo=${r.repo}`], { socket, env: r.env });
    expect(d.stdout).toMatch(new RegExp(`PASS  instance default/${web} `));
    expect(await scratch()).toEqual([]);
  });
});
