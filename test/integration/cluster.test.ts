// A two-member cluster (test/lab/lab.sh cluster-add): instances and local volumes on each member
// are backed up with their member, replaced in place on the far member, rebuilt on their members
// after everything was deleted, and restored onto a single fresh server with members ignored.
// The tool talks to node1's socket only, as the backup container on one member would.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { incus, incusOk, labSocket, labVersions, startCluster, stopCluster, tracker, uniqueName } from "../lab/lab";
import { macsOf } from "./helpers/realistic";
import { isolatedServer, repoDir } from "./helpers/server";
import { FaultProxy, killTool, reached, req } from "./helpers/faults";
import { listJson, startTool, tool, toolOk } from "./helpers/tool";

describe.each(labVersions())("a two-member cluster of Incus %s", (version) => {
  const track = tracker();
  const name = uniqueName("cl").slice(0, 14).replace(/-$/, "");
  let node1: string;
  let dir: string;
  const on = () => ({ socket: node1 });
  /** Where each instance and custom volume is, and its status: "c1 RUNNING node1". */
  const where = async () => {
    const inst = (await incusOk(["list", "-f", "csv", "-c", "nsL"], on())).trim().split("\n").filter(Boolean).map((l) => l.replaceAll(",", " "));
    const vols = (await incusOk(["storage", "volume", "list", "default", "-f", "csv", "-c", "nL", "type=custom"], on())).trim().split("\n").filter(Boolean).map((l) => `volume ${l.replaceAll(",", " ")}`);
    return [...inst, ...vols].sort();
  };
  const cat = (inst: string, path: string) => incusOk(["exec", inst, "--", "cat", path], on()).then((s) => s.trim());

  beforeAll(async () => {
    track.defer(() => stopCluster(name, { version }));
    ({ node1 } = await startCluster(name, { version }));
    const img = await mkdtemp(join(tmpdir(), "ibk-image-"));
    try {
      await incusOk(["image", "export", "busybox", join(img, "busybox")], { socket: labSocket(version) });
      await incusOk(["image", "import", join(img, "busybox"), join(img, "busybox.root"), "--alias", "busybox"], on());
    } finally {
      await rm(img, { recursive: true, force: true });
    }
    for (const [inst, member] of [["c1", "node1"], ["c2", "node2"]] as const) {
      const vol = `v${inst.slice(1)}`;
      await incusOk(["storage", "volume", "create", "default", vol, "--target", member], on());
      await incusOk(["init", "busybox", inst, "--target", member], on());
      await incusOk(["config", "device", "add", inst, vol, "disk", "pool=default", `source=${vol}`, "path=/srv"], on());
      await incusOk(["start", inst], on());
      await incusOk(["exec", inst, "--", "sh", "-c", `echo ${inst}-root > /root/data && echo ${vol}-data > /srv/data`], on());
    }
    // Configuration a fresh cluster must get, member by member: a network and a second pool.
    for (const m of ["node1", "node2"]) {
      await incusOk(["network", "create", "net2", "--target", m], on());
      await incusOk(["storage", "create", "extra", "dir", "--target", m], on());
    }
    await incusOk(["network", "create", "net2", "ipv4.address=10.88.0.1/24", "ipv6.address=none"], on());
    await incusOk(["storage", "create", "extra", "dir"], on());
    dir = await repoDir(track);
    await toolOk(["backup", "--all", `--dir=${dir}`], on());
  });
  afterAll(() => track.cleanup());

  it("backs up every member's instances and local volumes, each with its member; the database says whose local dump it has", async () => {
    const rows = await listJson(dir);
    const member = (type: string, n: string) => (rows.find((r) => r.type === type && r.name === n) as unknown as { member?: string } | undefined)?.member;
    expect([member("instance", "c1"), member("instance", "c2"), member("volume", "v1"), member("volume", "v2")]).toEqual(["node1", "node2", "node1", "node2"]);
    const db = rows.find((r) => r.type === "database")!;
    const manifest = JSON.parse(await readFile(join(db.path, "manifest.json"), "utf8")) as { member?: string };
    expect(manifest.member).toBe("node1");
    expect(await readFile(join(db.path, "local.sql"), "utf8")).toContain("'core.https_address','10.199.0.1:8443'");
    // The other members' own part, read through node1's API: member records and member config.
    const members = JSON.parse(await readFile(join(db.path, "members.json"), "utf8")) as { members: Array<{ name: string; member: { url: string; roles: string[] }; config: Record<string, string> }> };
    expect(members.members.map((m) => [m.name, m.member.url, m.config["core.https_address"]])).toEqual([
      ["node1", "https://10.199.0.1:8443", "10.199.0.1:8443"],
      ["node2", "https://10.199.0.2:8443", "10.199.0.2:8443"],
    ]);
    expect(members.members[0]!.member.roles).toContain("database");
    await toolOk(["verify", "--deep", "--database", `--dir=${dir}`], on());
    const text = await toolOk(["list", `--dir=${dir}`], on());
    expect(text.stdout).toMatch(/instance +default +c2 +node2 /);
    const status = await toolOk(["status", `--dir=${dir}`], on());
    expect(status.stdout).toMatch(/ok +instance default\/c2 .*\(on node2\)/);
  });

  it("two members each with a volume of one name: a backup refuses both rather than mix them up; a restore replaces only the one on the backup's member", async () => {
    const own = await repoDir(track);
    const mounted = async (inst: string) => incusOk(["exec", inst, "--", "cat", "/mnt/vd/data"], on()).then((s) => s.trim());
    try {
      // First node2's (the far member's), backed up; then node1's, of the same name.
      await incusOk(["storage", "volume", "create", "default", "vd", "--target", "node2"], on());
      await incusOk(["config", "device", "add", "c2", "vd", "disk", "pool=default", "source=vd", "path=/mnt/vd"], on());
      await incusOk(["exec", "c2", "--", "sh", "-c", "echo vd-node2 > /mnt/vd/data"], on());
      await toolOk(["backup", "--volumes", "--name", "vd", `--dir=${own}`], on());
      const [first] = await listJson(own);
      expect(first).toMatchObject({ type: "volume", name: "vd" });
      expect((first as unknown as { member?: string }).member).toBe("node2");

      await incusOk(["storage", "volume", "create", "default", "vd", "--target", "node1"], on());
      await incusOk(["config", "device", "add", "c1", "vd", "disk", "pool=default", "source=vd", "path=/mnt/vd"], on());
      await incusOk(["exec", "c1", "--", "sh", "-c", "echo vd-node1 > /mnt/vd/data"], on());
      const clash = await tool(["backup", "--volumes", `--dir=${own}`], on());
      console.log(`same-named volumes on two members, backup: exit ${clash.code}\n${clash.stdout}${clash.stderr}`);
      expect(clash.code).toBe(3);
      for (const [m, other] of [["node1", "node2"], ["node2", "node1"]]) {
        expect(clash.stdout).toMatch(new RegExp(`failed: volume default/default/vd: this one is on member ${m}, and member ${other} has one of that name too: .*neither is backed up`));
      }
      const rows = await listJson(own);
      expect(rows.filter((r) => r.name === "vd")).toHaveLength(1);
      expect(rows.filter((r) => r.name === "v1" || r.name === "v2")).toHaveLength(2);

      // The older backup (node2's) goes back onto node2's volume only, with c2 (not c1) stopped
      // and started around it.
      await incusOk(["exec", "c2", "--", "sh", "-c", "echo changed > /mnt/vd/data"], on());
      const r = await toolOk(["restore", "--volume", "--name", "vd", "--version", first!.version, "--force", `--dir=${own}`], on());
      expect(r.stdout).toContain("on member node2, where it is");
      expect(r.stdout).toMatch(/default\/c2/);
      expect(r.stdout).not.toMatch(/default\/c1\b/);
      expect([await mounted("c1"), await mounted("c2")]).toEqual(["vd-node1", "vd-node2"]);
      // A single file goes back the same way: through c2, which mounts node2's volume, not c1.
      await incusOk(["exec", "c2", "--", "rm", "/mnt/vd/data"], on());
      const f = await toolOk(["restore", "--volume", "--name", "default/vd", "--version", first!.version, "--path", "/data", `--dir=${own}`], on());
      expect(f.stdout).toMatch(/mounted at \/mnt\/vd in the running instance default\/c2/);
      expect([await mounted("c1"), await mounted("c2")]).toEqual(["vd-node1", "vd-node2"]);
    } finally {
      for (const [inst, m] of [["c1", "node1"], ["c2", "node2"]] as const) {
        await incus(["config", "device", "remove", inst, "vd"], { ...on(), allowFail: true });
        await incus(["storage", "volume", "delete", "default", "vd", "--target", m], { ...on(), allowFail: true });
      }
    }
    expect(await where()).toEqual(["c1 RUNNING node1", "c2 RUNNING node2", "volume v1 node1", "volume v2 node2"]);
  });

  it("replaces an instance and a volume in place on the far member: there, running, with its MAC and its data", async () => {
    const macs = await macsOf("c2", node1);
    await incusOk(["exec", "c2", "--", "sh", "-c", "echo changed > /root/data && echo changed > /srv/data"], on());
    const r = await toolOk(["restore", "--instance", "--name", "c2", "--force", `--dir=${dir}`], on());
    expect(r.stdout).toContain("on member node2, where it is");
    expect(await cat("c2", "/root/data")).toBe("c2-root");
    const v = await toolOk(["restore", "--volume", "--name", "v2", "--force", `--dir=${dir}`], on());
    expect(v.stdout).toContain("on member node2, where it is");
    expect(await cat("c2", "/srv/data")).toBe("v2-data");
    expect(await where()).toEqual(["c1 RUNNING node1", "c2 RUNNING node2", "volume v1 node1", "volume v2 node2"]);
    expect(await macsOf("c2", node1)).toEqual(macs);
  });

  it("rebuilds everything on its member after everything was deleted; no stand-in is left", async () => {
    for (const i of ["c1", "c2"]) await incusOk(["delete", "--force", i], on());
    for (const [v, m] of [["v1", "node1"], ["v2", "node2"]]) await incusOk(["storage", "volume", "delete", "default", v!, "--target", m!], on());
    const r = await toolOk(["restore", "--all", "--force", `--dir=${dir}`], on());
    console.log(`cluster restore --all:\n${r.stdout}`);
    expect(r.stdout).toMatch(/create +instance default\/c2 .*\n +on member node2, where it was backed up/);
    expect(await where()).toEqual(["c1 RUNNING node1", "c2 RUNNING node2", "volume v1 node1", "volume v2 node2"]);
    expect(await cat("c2", "/root/data")).toBe("c2-root");
    expect(await cat("c2", "/srv/data")).toBe("v2-data");
    expect(await cat("c1", "/srv/data")).toBe("v1-data");
  });

  it("a restore killed on its way to the far member (a replacing copy's move; a new one's move, and its upload): the next run finishes or undoes it and removes the stand-in", async () => {
    const proxy = await FaultProxy.start(node1);
    try {
      const points = [
        // A replace: its copy, imported on node1, is held on its way; the original stays as it was.
        { name: "a replacing copy's move to node2", replace: true, arm: () => proxy.holdRequest(req("POST", /^\/1\.0\/instances\/ibk-restore-[0-9a-f]+\?.*target=node2/)), after: ["c2 RUNNING node2"] },
        { name: "the move to node2 (held: the server never gets it)", replace: false, arm: () => proxy.holdRequest(req("POST", /^\/1\.0\/instances\/c2\?.*target=node2/)), after: ["c2 STOPPED node2"] },
        { name: "the import's upload (half sent)", replace: false, arm: () => proxy.holdUploadAfter(req("POST", /^\/1\.0\/instances(\?|$)/), 256 << 10), after: [] },
      ];
      for (const point of points) {
        if (!point.replace) await incusOk(["delete", "--force", "c2"], on());
        const held = point.arm();
        const run = startTool(["restore", "--instance", "--name", "c2", "--force", `--dir=${dir}`], { socket: proxy.path });
        await reached(run, held, point.name);
        await killTool(run);
        proxy.dropHeld();
        // Killed there, it left node2's volume's empty stand-in on node1 (and, at the move, c2 too).
        expect(await where()).toContain("volume v2 node1");
        const next = await toolOk(["backup", "--database", `--dir=${dir}`], on());
        console.log(`killed at ${point.name}; the next run said: ${next.stderr.split("\n").filter((l) => /c2/.test(l)).join(" | ")}`);
        expect(next.stderr).toMatch(/instance default\/(c2|ibk-restore-[0-9a-f]+): .*removed the stand-in volume default\/v2 on member node1/);
        expect(await where()).toEqual([...point.after, "c1 RUNNING node1", "volume v1 node1", "volume v2 node2"].sort());
        proxy.release();
      }
      // Restored for good, it runs on node2 with its own volume.
      await toolOk(["restore", "--instance", "--name", "c2", "--force", `--dir=${dir}`], on());
      expect(await where()).toEqual(["c1 RUNNING node1", "c2 RUNNING node2", "volume v1 node1", "volume v2 node2"]);
      expect(await cat("c2", "/srv/data")).toBe("v2-data");
    } finally {
      await proxy.close();
    }
  });

  it("rebuilds a fresh cluster with the same member names: the network and pool made on every member, each item on its member", async () => {
    const fresh = `${name.slice(0, 12)}f`;
    track.defer(() => stopCluster(fresh, { version }));
    const { node1: other } = await startCluster(fresh, { version });
    const r = await toolOk(["restore", "--all", "--force", `--dir=${dir}`], { socket: other });
    expect(r.stdout).toMatch(/create +network default\/net2/);
    expect(r.stdout).toMatch(/create +storage pool extra/);
    expect(r.stdout).toMatch(/configuration: \d+ change\(s\) applied\n/);
    const there = { socket: other };
    expect((await incusOk(["network", "get", "net2", "ipv4.address"], there)).trim()).toBe("10.88.0.1/24");
    expect(await incusOk(["storage", "list", "-f", "csv", "-c", "ns"], there)).toContain("extra,CREATED");
    expect((await incusOk(["list", "-f", "csv", "-c", "nsL"], there)).trim().split("\n").sort()).toEqual(["c1,RUNNING,node1", "c2,RUNNING,node2"]);
    expect((await incusOk(["exec", "c2", "--", "cat", "/srv/data"], there)).trim()).toBe("v2-data");
  });

  it("restores onto a single fresh server: members are ignored, and the plan says so", async () => {
    const single = await isolatedServer(track, { version });
    const r = await toolOk(["restore", "--instances", "--volumes", "--force", `--dir=${dir}`], { socket: single });
    expect(r.stdout).toContain("it was on member node2 of a cluster; this server is not one: members are ignored");
    expect(await incusOk(["exec", "c2", "--", "cat", "/srv/data"], { socket: single })).toContain("v2-data");
  });
});
