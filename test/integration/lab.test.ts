// Sanity of the test lab itself: its daemons answer, busybox instances are quick, fixtures round-trip.
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, readlink, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { existsSync } from "node:fs";
import { afterEach, describe, expect, inject, it } from "vitest";
import {
  apiGet,
  checksumTree,
  createVolumeWithData,
  execRead,
  incus,
  incusOk,
  instanceMacs,
  LAB_BRIDGE,
  LAB_BTRFS_POOL,
  labShell,
  labSocket,
  labVersion,
  launchInstance,
  restartIncusd,
  startExtraServer,
  stopExtraServer,
  tracker,
  uniqueName,
  writeTestData,
  type TreeEntry,
} from "../lab/lab";

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

function byPath(manifest: TreeEntry[]): Record<string, TreeEntry> {
  return Object.fromEntries(manifest.map((e) => [e.path, e]));
}

async function status(name: string, socket?: string): Promise<string> {
  return (await incusOk(["list", `^${name}$`, "-f", "csv", "-c", "s"], { socket })).trim();
}

// The lab bridge's fixed subnet, as lab.sh makes it on each main daemon.
const BRIDGE_CONFIG = ["ipv4.address=10.77.0.1/24", "ipv4.nat=false", "ipv6.address=fd42:77::1/64", "ipv6.nat=false"];

/** Copies the busybox image of the primary lab onto another daemon (an extra server has none). */
async function copyBusybox(socket: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "incus-backup-labtest-"));
  try {
    await incusOk(["image", "export", "busybox", join(dir, "busybox")]);
    // A split image: the metadata tarball (busybox), then the rootfs (busybox.root).
    const files = (await readdir(dir)).sort();
    await incusOk(["image", "import", ...files.map((f) => join(dir, f)), "--alias", "busybox"], { socket });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe("the lab", () => {
  const track = tracker();
  afterEach(() => track.cleanup());

  it("runs the Incus line each lab was asked for, with the busybox image", async () => {
    for (const [version, socket] of Object.entries(inject("labSockets"))) {
      const server = (await apiGet("/1.0", { socket })) as {
        environment: { server_version: string };
        api_extensions: string[];
      };
      expect(server.environment.server_version.startsWith(`${version}.`)).toBe(true);
      expect(server.environment.server_version).toBe(inject("labServerVersions")[version]);
      // 7.0 is in the lab to exercise the streamed backup that 6.0.4 lacks.
      expect(server.api_extensions.includes("direct_backup")).toBe(version !== "6.0");
      await incusOk(["image", "info", "busybox"], { socket });
    }
    expect(labSocket()).toBe(inject("labSockets")[labVersion()]);
  });

  it("launches, execs and stops a busybox instance in seconds", async () => {
    const name = uniqueName("lab-sanity");
    const t0 = performance.now();
    await launchInstance(name, { track });
    expect(await incusOk(["exec", name, "--", "echo", "hello"])).toBe("hello\n");
    // The image's init exits on SIGPWR; if it did not, this stop would hang until its timeout.
    await incusOk(["stop", name], { timeoutMs: 20_000 });
    expect(await status(name)).toBe("STOPPED");
    expect(performance.now() - t0).toBeLessThan(15_000);
  });

  it("writes fixtures whose manifest reads back the same, with owners and modes", async () => {
    const name = await launchInstance(uniqueName("lab-data"), { track });
    const written = await writeTestData(name, "/root/data", { sizeMiB: 2 });
    expect(await checksumTree(name, "/root/data")).toEqual(written);

    const e = byPath(written);
    expect(e["."]).toMatchObject({ type: "dir", uid: 0, gid: 0 });
    expect(e["random.bin"]).toMatchObject({ type: "file", mode: "0644", uid: 0 });
    expect(e["random.bin"]?.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(e["owned-1234.txt"]).toMatchObject({ type: "file", uid: 1234, gid: 1234 });
    expect(e["owned-dir"]).toMatchObject({ type: "dir", mode: "0750", uid: 1234, gid: 1234 });
    expect(e["mode-0640.txt"]?.mode).toBe("0640");
    expect(e["exec-0755.sh"]?.mode).toBe("0755");
    expect(e["empty"]).toMatchObject({ type: "file", sha256: EMPTY_SHA256 });
    expect(e["empty-dir"]?.type).toBe("dir");
    expect(e["sub/deeper/nested.txt"]?.type).toBe("file");
    expect(e["link-to-random"]).toEqual(expect.objectContaining({ type: "symlink", target: "random.bin" }));
    expect(e["dangling-link"]).toMatchObject({ type: "symlink", target: "does-not-exist" });
    expect(e["link-to-random"]?.sha256).toBeUndefined();
    const size = await execRead(name, ["stat", "-c", "%s", "/root/data/random.bin"]);
    expect(Number(size)).toBe(2 * 1024 * 1024);

    // Stable across a stop/start (what is on disk, not in a cache), and different data elsewhere.
    await incusOk(["restart", name], { timeoutMs: 30_000 });
    expect(await checksumTree(name, "/root/data")).toEqual(written);
    const other = byPath(await writeTestData(name, "/root/other", { sizeMiB: 1 }));
    expect(other["random.bin"]?.sha256).not.toBe(e["random.bin"]?.sha256);
    expect(other["small-1.txt"]?.sha256).not.toBe(e["small-1.txt"]?.sha256);
  });

  it("fills a custom volume attached to an instance", async () => {
    const name = await launchInstance(uniqueName("lab-vol"), { track });
    const volume = uniqueName("lab-vol");
    const written = await createVolumeWithData("default", volume, { sizeMiB: 1, attachTo: name, path: "/mnt/vol", track });
    expect(byPath(written)["owned-1234.txt"]?.uid).toBe(1234);
    const used = (await apiGet(`/1.0/storage-pools/default/volumes/custom/${volume}`)) as {
      used_by: string[];
    };
    expect(used.used_by).toEqual([`/1.0/instances/${name}`]);
  });

  it("creates a managed bridge network that gives an instance an address", async () => {
    const network = uniqueName("ibk").slice(0, 15);
    track.defer(() => incus(["network", "delete", network], { allowFail: true }));
    // A subnet of its own: a network a killed run left behind in a kept lab must not collide.
    const octet = 1 + Math.floor(Math.random() * 250);
    await incusOk(["network", "create", network, `ipv4.address=10.123.${octet}.1/24`, "ipv6.address=none"]);
    const name = await launchInstance(uniqueName("lab-net"), { track, start: false });
    await incusOk(["config", "device", "add", name, "eth0", "nic", `network=${network}`]);
    await incusOk(["start", name]);
    // busybox udhcpc reports the lease on stderr (it has no script to apply it with).
    const lease = await incusOk(["exec", name, "--", "sh", "-c", "udhcpc -q -n -t 5 -i eth0 2>&1"]);
    expect(lease).toMatch(new RegExp(`lease of 10\\.123\\.${octet}\\.\\d+ obtained`));
  });

  it("runs an extra, empty incusd in the lab", async () => {
    const socket = await startExtraServer("sanity");
    track.defer(() => stopExtraServer("sanity"));
    expect(await incusOk(["list", "-f", "csv"], { socket })).toBe("");
    expect(await incusOk(["image", "list", "-f", "csv"], { socket })).toBe("");
    expect(await incusOk(["profile", "device", "get", "default", "root", "pool"], { socket })).toBe("default\n");
    await stopExtraServer("sanity");
    expect((await incus(["info"], { socket, allowFail: true, timeoutMs: 10_000 })).code).not.toBe(0);
    expect((await labShell("test -e /var/lib/incus-sanity || echo gone")).stdout).toBe("gone\n");

    const bare = await startExtraServer("sanity-bare", { bare: true });
    track.defer(() => stopExtraServer("sanity-bare"));
    expect(await incusOk(["storage", "list", "-f", "csv"], { socket: bare })).toBe("");
  });

  it("puts every instance of the default profile on a managed bridge with DHCP, in each lab", async () => {
    for (const socket of Object.values(inject("labSockets"))) {
      const network = (await apiGet(`/1.0/networks/${LAB_BRIDGE}`, { socket })) as {
        managed: boolean;
        type: string;
        config: Record<string, string>;
      };
      expect(network).toMatchObject({ managed: true, type: "bridge" });
      expect(network.config).toMatchObject({ "ipv4.address": "10.77.0.1/24", "ipv6.address": "fd42:77::1/64" });
      expect(await incusOk(["profile", "device", "get", "default", "eth0", "network"], { socket })).toBe(`${LAB_BRIDGE}\n`);

      const name = await launchInstance(uniqueName("lab-nic"), { track, socket });
      const mac = (await incusOk(["config", "get", name, "volatile.eth0.hwaddr"], { socket })).trim();
      expect(mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      expect(await instanceMacs(socket)).toContain(mac);
      // dnsmasq answers on the bridge (busybox udhcpc reports the lease on stderr).
      const lease = await incusOk(["exec", name, "--", "sh", "-c", "udhcpc -q -n -t 5 -i eth0 2>&1"], { socket });
      expect(lease).toMatch(/lease of 10\.77\.0\.\d+ obtained/);
    }
  });

  it("has a btrfs pool whose instances start, snapshot, export and import, in each lab", async () => {
    const dir = await mkdtemp(join(tmpdir(), "incus-backup-labtest-"));
    track.defer(() => rm(dir, { recursive: true, force: true }));
    for (const [version, socket] of Object.entries(inject("labSockets"))) {
      const pool = (await apiGet(`/1.0/storage-pools/${LAB_BTRFS_POOL}`, { socket })) as {
        driver: string;
        status: string;
      };
      expect(pool).toMatchObject({ driver: "btrfs", status: "Created" });
      const name = track.instance(uniqueName("lab-btrfs"), { socket });
      await incusOk(["init", "busybox", name, "--storage", LAB_BTRFS_POOL], { socket });
      await incusOk(["start", name], { socket });
      await incusOk(["exec", name, "--", "sh", "-c", "echo on btrfs >/root/mark"], { socket });
      await incusOk(["snapshot", "create", name, "snap0"], { socket });
      const file = join(dir, `${version}.tar.gz`);
      await incusOk(["export", name, file, "--optimized-storage"], { socket, timeoutMs: 180_000 });
      // The import carries the original's MAC, which may not be on the bridge twice.
      await incusOk(["delete", "--force", name], { socket });
      await incusOk(["import", file, "--storage", LAB_BTRFS_POOL], { socket, timeoutMs: 180_000 });
      await incusOk(["start", name], { socket });
      expect(await execRead(name, ["cat", "/root/mark"], { socket })).toBe("on btrfs\n");
      const info = (await apiGet(`/1.0/instances/${name}?recursion=1`, { socket })) as {
        expanded_devices: { root: { pool: string } };
      };
      expect(info.expanded_devices.root.pool).toBe(LAB_BTRFS_POOL);
      expect(await incusOk(["query", `/1.0/instances/${name}/snapshots`], { socket })).toContain("snap0");
    }
  });

  it("starts instances with memory and process limits, in each lab and on an extra server", async () => {
    // Needs the cgroup mounts lab-init makes (LXC leaves them to the init in a cgroup namespace).
    const limits = { "limits.memory": "64MiB", "limits.processes": "100", "limits.cpu": "1" };
    const extra = await startExtraServer("sanity-lim");
    track.defer(() => stopExtraServer("sanity-lim"));
    await copyBusybox(extra);
    for (const socket of [...Object.values(inject("labSockets")), extra]) {
      const name = await launchInstance(uniqueName("lab-limits"), { socket, config: limits, start: false });
      if (socket !== extra) track.instance(name, { socket });
      await incusOk(["start", name], { socket });
      expect(await status(name, socket)).toBe("RUNNING");
    }
  });

  it("runs an extra server in a network namespace of its own, so it can have the lab's bridge too", async () => {
    const socket = await startExtraServer("sanity-net");
    track.defer(() => stopExtraServer("sanity-net"));
    expect(await incusOk(["network", "list", "--format", "csv", "-c", "nm"], { socket })).not.toMatch(/,YES/);
    // The same name and subnet as the main daemon's bridge: on a shared namespace this collided.
    await incusOk(["network", "create", LAB_BRIDGE, ...BRIDGE_CONFIG], { socket });
    await copyBusybox(socket);
    // Not tracked: it goes with the extra server, which is removed first.
    const name = await launchInstance(uniqueName("lab-extra-nic"), { socket, start: false });
    await incusOk(["config", "device", "add", name, "eth0", "nic", `network=${LAB_BRIDGE}`, "name=eth0"], { socket });
    await incusOk(["start", name], { socket });
    expect(await status(name, socket)).toBe("RUNNING");
    const lease = await incusOk(["exec", name, "--", "sh", "-c", "udhcpc -q -n -t 5 -i eth0 2>&1"], { socket });
    expect(lease).toMatch(/lease of 10\.77\.0\.\d+ obtained/);
    // The main daemon's bridge is untouched.
    expect(await incusOk(["network", "get", LAB_BRIDGE, "ipv4.address"])).toBe("10.77.0.1/24\n");
    // Removed, it leaves nothing running in its namespace, even when its daemon died first (as one
    // that does not shut down in time is killed): its bridge's dnsmasq outlives the daemon, and in
    // a kept lab such processes added up run after run.
    const ns = (await labShell("stat -L -c %i /run/netns/ibk-sanity-net")).stdout.trim();
    expect(ns).toMatch(/^\d+$/);
    await labShell("kill -KILL $(cat /run/lab-incusd-sanity-net.pid)");
    await stopExtraServer("sanity-net");
    const left = await labShell(`for p in /proc/[0-9]*; do [ "$(stat -L -c %i $p/ns/net 2>/dev/null)" = ${ns} ] && tr '\\0' ' ' <$p/cmdline && echo; done; true`);
    expect(left.stdout.trim()).toBe("");
  });

  it("restarts the main incusd without stopping its instances", async () => {
    const name = await launchInstance(uniqueName("lab-restart"), { track });
    await restartIncusd();
    expect(await status(name)).toBe("RUNNING");
    await restartIncusd({ kill: true });
    expect(await status(name)).toBe("RUNNING");
    expect(await execRead(name, ["echo", "still here"])).toBe("still here\n");
  });

  it("a restart whose new incusd finds the bridge's address still held comes back with the bridge usable", async () => {
    // Under load the old dnsmasq (it outlives incusd) may not have let go of the address when the
    // new daemon starts its own; Incus then marks the bridge unavailable for a minute. A stand-in
    // dnsmasq holds the address here, in place of the daemon's own.
    const address = (await incusOk(["network", "get", LAB_BRIDGE, "ipv4.address"])).trim().split("/")[0]!;
    const dnsmasqs = `me=$(readlink /proc/1/ns/net); for p in /proc/[0-9]*; do case "$(tr '\\0' ' ' <$p/cmdline 2>/dev/null)" in "dnsmasq "*" --interface=${LAB_BRIDGE} "*) [ "$(readlink $p/ns/net)" = "$me" ] && echo \${p#/proc/};; esac; done`;
    await labShell(
      `kill -9 $(${dnsmasqs}); sleep 0.3; setsid dnsmasq --keep-in-foreground --bind-interfaces --except-interface=lo --pid-file= --interface=${LAB_BRIDGE} --listen-address=${address} --conf-file=/dev/null </dev/null >/dev/null 2>&1 & sleep 0.5`,
    );
    try {
      await restartIncusd({ kill: true });
      const name = await launchInstance(uniqueName("lab-bridge"), { track });
      expect(await status(name)).toBe("RUNNING");
      expect(await incusOk(["warning", "list", "--format", "csv", "-c", "tS"])).not.toMatch(/^Network unavailable,(NEW|ACKNOWLEDGED)$/m);
    } finally {
      // Without the repair the stand-in would still be there, and the bridge unavailable for a minute.
      await labShell(`for p in $(${dnsmasqs}); do tr '\\0' ' ' </proc/$p/cmdline | grep -q conf-file=/dev/null && kill -9 $p; done; true`);
    }
  });

  it("keeps its files in a tmpfs at its temp dir (always in CI), and the tests' temp files in it", async () => {
    const stateFile = inject("labStateFile");
    const dir = dirname(stateFile);
    const inMemory = /^IBK_TMPFS=1$/m.test(await readFile(stateFile, "utf8"));
    // CI's machines have the memory for it, and their disk is the ext4 without a journal that
    // lab_tmpfs is there for: a lab on disk there is a regression.
    if (process.env.CI === "true") expect(inMemory).toBe(true);
    const mount = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").find((l) => l.split(" ")[4] === dir);
    if (inMemory) expect(mount).toMatch(/ - tmpfs ibk-lab /);
    else expect(mount).toBeUndefined();
    expect(tmpdir()).toBe(join(dir, "tmp"));
    expect(process.env.TMPDIR).toBe(join(dir, "tmp"));
  });

  it("gc takes down only labs that are provably abandoned: not another PID namespace's, not a live holder's", async () => {
    // Fake lab states in a TMPDIR of their own: gc never sees the real labs, and a fake state
    // without IBK_OUTER tears down to a plain rm -rf.
    const root = await mkdtemp(join(tmpdir(), "incus-backup-labtest-"));
    const sleeper = spawn("sh", ["-c", "sleep 60", join(root, "ibk-lab.busy")], { stdio: "ignore" });
    try {
      const ns = await readlink("/proc/self/ns/pid");
      const start = async (pid: number) => (await readFile(`/proc/${pid}/stat`, "utf8")).replace(/^.*\) /s, "").split(" ")[19];
      const me = await start(process.pid);
      const q = (v: string) => v.replace(/[[\]]/g, "\\$&"); // printf %q, as lab.sh writes it
      const mountTmpfs = (at: string, source = "ibk-lab") => {
        const m = spawnSync("mount", ["-t", "tmpfs", "-o", "size=1m", source, at], { encoding: "utf8" });
        expect(m.status, m.stderr).toBe(0);
      };
      // inMemory: at a tmpfs, as lab_tmpfs mounts one.
      const lab = async (name: string, state: string | null, ageMinutes = 0, inMemory = false) => {
        const dir = join(root, `ibk-lab.${name}`);
        await mkdir(dir);
        if (inMemory) mountTmpfs(dir);
        await mkdir(join(dir, "conf"), { recursive: true });
        await writeFile(join(dir, "conf", "config.yml"), "default-remote: local\n");
        if (state !== null) await writeFile(join(dir, "state"), state);
        const t = new Date(Date.now() - ageMinutes * 60_000);
        await utimes(dir, t, t);
        return dir;
      };
      const dead = 2 ** 22 + 1; // above pid_max's default ceiling: never a live process
      const labs = {
        othersNamespace: await lab("otherns", `IBK_KEEP=0\nIBK_HOLDER_PID=${dead}\nIBK_HOLDER_START=1\nIBK_PIDNS=pid:\\[1\\]\n`),
        liveHolder: await lab("live", `IBK_KEEP=0\nIBK_HOLDER_PID=${process.pid}\nIBK_HOLDER_START=${me}\nIBK_PIDNS=${q(ns)}\n`),
        liveOwner: await lab("owner", `IBK_KEEP=0\nIBK_HOLDER_PID=${dead}\nIBK_HOLDER_START=1\nIBK_OWNER_PID=${process.pid}\nIBK_OWNER_START=${me}\nIBK_PIDNS=${q(ns)}\n`),
        oldFormat: await lab("old", `IBK_KEEP=0\nIBK_HOLDER_PID=${dead}\n`),
        kept: await lab("kept", `IBK_KEEP=1\nIBK_HOLDER_PID=${dead}\nIBK_HOLDER_START=1\nIBK_PIDNS=${q(ns)}\n`),
        youngDebris: await lab("young", null, 1),
        busyDebris: await lab("busy", null, 20),
        // Something of its own mounted in it: in use, tmpfs or not.
        mountedDebris: await lab("mounted", null, 20, true),
      };
      await mkdir(join(labs.mountedDebris, "outer"));
      mountTmpfs(join(labs.mountedDebris, "outer"), "tmpfs");
      await utimes(labs.mountedDebris, new Date(Date.now() - 20 * 60_000), new Date(Date.now() - 20 * 60_000));
      const gone = {
        reusedPid: await lab("reused", `IBK_KEEP=0\nIBK_HOLDER_PID=${process.pid}\nIBK_HOLDER_START=${Number(me) + 1}\nIBK_PIDNS=${q(ns)}\n`),
        deadHolder: await lab("dead", `IBK_KEEP=0\nIBK_HOLDER_PID=${dead}\nIBK_HOLDER_START=1\nIBK_PIDNS=${q(ns)}\n`),
        oldDebris: await lab("debris", null, 20),
        deadHolderInMemory: await lab("deadmem", `IBK_KEEP=0\nIBK_HOLDER_PID=${dead}\nIBK_HOLDER_START=1\nIBK_PIDNS=${q(ns)}\nIBK_TMPFS=1\n`, 0, true),
        oldDebrisInMemory: await lab("debrismem", null, 20, true),
      };
      const r = spawnSync("bash", [inject("labScript"), "gc"], { env: { ...process.env, TMPDIR: root }, encoding: "utf8" });
      expect(r.status, r.stderr).toBe(0);
      for (const [what, dir] of Object.entries(labs)) expect(existsSync(dir), `${what} is kept`).toBe(true);
      for (const [what, dir] of Object.entries(gone)) expect(existsSync(dir), `${what} is removed`).toBe(false);
      // And their tmpfs unmounted.
      const mounts = (await readFile("/proc/self/mountinfo", "utf8")).split("\n").map((l) => l.split(" ")[4]);
      expect(mounts.filter((m) => m?.startsWith(`${root}/`))).toEqual([labs.mountedDebris, join(labs.mountedDebris, "outer")]);
      expect(r.stderr).toContain(`removing the abandoned lab ${gone.deadHolder}`);
      expect(r.stderr).toContain(`removing the stale lab directory ${gone.oldDebris} (no state)`);
    } finally {
      sleeper.kill("SIGKILL");
      spawnSync("umount", ["-R", join(root, "ibk-lab.mounted")]);
      for (const d of ["deadmem", "debrismem"]) spawnSync("umount", [join(root, `ibk-lab.${d}`)]);
      await rm(root, { recursive: true, force: true });
    }
  });
});
