// Round trip: back up everything, delete the instance and its volume, restore everything; nothing may differ.
import { afterAll, describe, expect, it } from "vitest";
import { apiGet, checksumTree, createVolumeWithData, execRead, incusOk, labVersions, launchInstance, tracker, uniqueName, writeTestData } from "../lab/lab";
import { instanceShape, instanceStatus, isolatedServer, repoDir } from "./helpers/server";
import { listJson, toolOk } from "./helpers/tool";

/** A volume as a restore must bring it back: its record minus volatile.* and server-set fields. */
async function volumeShape(socket: string, pool: string, name: string): Promise<Record<string, unknown>> {
  const v = (await apiGet(`/1.0/storage-pools/${pool}/volumes/custom/${name}`, { socket })) as {
    config: Record<string, string>;
    [k: string]: unknown;
  };
  const { created_at: _c, location: _l, ...rest } = v;
  return { ...rest, config: Object.fromEntries(Object.entries(v.config).filter(([k]) => !k.startsWith("volatile."))) };
}

// On both LTS versions and both storage drivers, on a server set up like a real host (a NIC on the
// managed bridge, btrfs beside dir). The 200 MiB file the first issue asked for is in the first
// setting; the others prove the same with less data.
const matrix = labVersions().flatMap((v) => ["default", "btrfs"].map((p) => [v, p] as const));

describe.each(matrix)("round trip: Incus %s, %s pool", (version, pool) => {
  const track = tracker();
  afterAll(() => track.cleanup());
  const first = version === labVersions()[0] && pool === "default";

  it("backup --all, delete both, restore --all: same data, owners, modes, config, devices, profiles, MACs, running", async () => {
    // `backup --all` takes everything on a server: one of its own.
    const socket = await isolatedServer(track, { version });
    const on = { socket };
    const name = uniqueName("roundtrip");
    const volume = uniqueName("roundtrip-vol");
    const profile = uniqueName("roundtrip-prof");

    await incusOk(["profile", "create", profile], on);
    await incusOk(["profile", "set", profile, "user.from-profile", "yes"], on);
    await launchInstance(name, { socket, pool, start: false, config: { "user.note": "round trip", "environment.GREETING": "hello" } });
    await incusOk(["profile", "add", name, profile], on);
    await incusOk(["start", name], on);
    // The issue asks for a random file of 200 MB or more, plus symlinks, modes and a non-root owner.
    const sizeMiB = first ? 200 : 8;
    const instanceData = await writeTestData(name, "/srv/data", { socket, sizeMiB });
    const volumeData = await createVolumeWithData(pool, volume, { socket, attachTo: name, path: "/mnt/vol", sizeMiB: 2 });
    await incusOk(["storage", "volume", "set", pool, volume, "user.purpose", "round-trip"], on);
    // Not in a profile or the image: only a restore of the instance's own devices brings this back.
    await incusOk(["config", "device", "add", name, "scratch", "disk", "source=/tmp", "path=/mnt/host-tmp", "readonly=true"], on);
    const big = instanceData.find((e) => e.path === "random.bin");
    expect(big?.type).toBe("file");
    expect(Number(await execRead(name, ["stat", "-c", "%s", "/srv/data/random.bin"], on))).toBeGreaterThanOrEqual(sizeMiB * 1024 * 1024);
    expect(instanceData.some((e) => e.uid === 1234)).toBe(true);
    expect(instanceData.some((e) => e.type === "symlink")).toBe(true);

    const instanceBefore = await instanceShape(name, on);
    const volumeBefore = await volumeShape(socket, pool, volume);
    expect(instanceBefore.profiles).toEqual(["default", profile]);
    const macBefore = ((await apiGet(`/1.0/instances/${name}`, on)) as { config: Record<string, string> }).config["volatile.eth0.hwaddr"];
    expect(macBefore).toMatch(/^[0-9a-f:]{17}$/);

    const dir = await repoDir(track);
    await toolOk(["backup", "--all", `--dir=${dir}`], { socket });
    const rows = await listJson(dir);
    expect(rows.filter((r) => r.type !== "database").map((r) => `${r.type}:${r.name}`).sort()).toEqual([`instance:${name}`, `volume:${volume}`]);

    await incusOk(["delete", "--force", name], on);
    await incusOk(["storage", "volume", "delete", pool, volume], on);

    await toolOk(["restore", "--all", `--dir=${dir}`], { socket, timeoutMs: 300_000 });

    expect(await instanceStatus(name, on)).toBe("Running");
    expect(await instanceShape(name, on)).toEqual(instanceBefore);
    expect(await volumeShape(socket, pool, volume)).toEqual(volumeBefore);
    // Restored under its own name, where nothing else has its MAC: it keeps it.
    expect(((await apiGet(`/1.0/instances/${name}`, on)) as { config: Record<string, string> }).config["volatile.eth0.hwaddr"]).toBe(macBefore);
    expect(await checksumTree(name, "/srv/data", on)).toEqual(instanceData);
    expect(await checksumTree(name, "/mnt/vol", on)).toEqual(volumeData);
  });
});
