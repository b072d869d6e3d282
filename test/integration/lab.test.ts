// Sanity of the test lab itself: its daemons answer, busybox instances are quick, fixtures round-trip.
import { afterEach, describe, expect, inject, it } from "vitest";
import {
  checksumTree,
  createVolumeWithData,
  incus,
  incusOk,
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

async function status(name: string): Promise<string> {
  return (await incusOk(["list", `^${name}$`, "-f", "csv", "-c", "s"])).trim();
}

describe("the lab", () => {
  const track = tracker();
  afterEach(() => track.cleanup());

  it("runs the Incus line each lab was asked for, with the busybox image", async () => {
    for (const [version, socket] of Object.entries(inject("labSockets"))) {
      const server = JSON.parse(await incusOk(["query", "/1.0"], { socket })) as {
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
    const size = await incusOk(["exec", name, "--", "stat", "-c", "%s", "/root/data/random.bin"]);
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
    const used = JSON.parse(await incusOk(["query", `/1.0/storage-pools/default/volumes/custom/${volume}`])) as {
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

  it("restarts the main incusd without stopping its instances", async () => {
    const name = await launchInstance(uniqueName("lab-restart"), { track });
    await restartIncusd();
    expect(await status(name)).toBe("RUNNING");
    await restartIncusd({ kill: true });
    expect(await status(name)).toBe("RUNNING");
    expect(await incusOk(["exec", name, "--", "echo", "still here"])).toBe("still here\n");
  });
});
