// A two-member cluster (test/lab/lab.sh cluster-add): instances and local volumes on each member
// are backed up with their member (same-named volumes on two members as two items), replaced in
// place on the far member, rebuilt on their members after everything was deleted, and restored
// onto a single fresh server with members ignored.
// The tool talks to node1's socket only, as the backup container on one member would.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execRead, incus, incusOk, labSocket, labVersions, startCluster, stopCluster, tracker, uniqueName } from "../lab/lab";
import { macsOf } from "./helpers/realistic";
import { isolatedServer, repoDir } from "./helpers/server";
import { FaultProxy, killTool, reached, req } from "./helpers/faults";
import { listJson, startTool, tool, toolOk } from "./helpers/tool";

describe.each(labVersions())("a two-member cluster of Incus %s", (version) => {
  const track = tracker();
  const name = uniqueName("cl").slice(0, 14).replace(/-$/, "");
  let node1: string;
  let node2: string;
  let dir: string;
  /** The repository of the test of same-named volumes on two members (restored onto a single server at the end). */
  let sameNamed: string;
  const on = () => ({ socket: node1 });
  /** Where each instance and custom volume is, and its status: "c1 RUNNING node1". */
  const where = async () => {
    const inst = (await incusOk(["list", "-f", "csv", "-c", "nsL"], on())).trim().split("\n").filter(Boolean).map((l) => l.replaceAll(",", " "));
    const vols = (await incusOk(["storage", "volume", "list", "default", "-f", "csv", "-c", "nL", "type=custom"], on())).trim().split("\n").filter(Boolean).map((l) => `volume ${l.replaceAll(",", " ")}`);
    return [...inst, ...vols].sort();
  };
  const cat = (inst: string, path: string) => execRead(inst, ["cat", path], on()).then((s) => s.trim());

  beforeAll(async () => {
    track.defer(() => stopCluster(name, { version }));
    ({ node1, node2 } = await startCluster(name, { version }));
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
    // node2's own local database, dumped through node2's socket (which the backup container does
    // not have), holds nothing the backup lacks: its member config rows are all in members.json;
    // its certificates (the members' server certificates), raft_nodes (address and role) and
    // applied patches are those of node1's local.sql, bar row ids and times. Every table is named,
    // so a table a later Incus adds fails here until it is looked at.
    const local1 = await readFile(join(db.path, "local.sql"), "utf8");
    const local2 = await incusOk(["admin", "sql", "local", ".dump"], { socket: node2 });
    const tablesOf = (sql: string) => [...sql.matchAll(/^CREATE TABLE (?:IF NOT EXISTS )?"?(\w+)"?/gm)].map((m) => m[1]!).sort();
    expect(tablesOf(local2)).toEqual(["certificates", "config", "patches", "raft_nodes", "schema"]);
    expect(tablesOf(local1)).toEqual(tablesOf(local2));
    /** A table's rows without their id, sorted. */
    const rowsOf = (sql: string, table: string) => [...sql.matchAll(new RegExp(`^INSERT INTO ${table} VALUES\\(\\d+,(.*)\\);$`, "gm"))].map((m) => m[1]!).sort();
    const config2 = rowsOf(local2, "config").map((r) => /^'((?:[^']|'')*)','((?:[^']|'')*)'$/.exec(r)!.slice(1).map((x) => x.replaceAll("''", "'")));
    expect(config2.map(([k]) => k)).toContain("core.https_address");
    for (const [k, v] of config2) expect(members.members[1]!.config[k!], k).toBe(v);
    expect(rowsOf(local2, "certificates")).toEqual(rowsOf(local1, "certificates"));
    expect(rowsOf(local2, "certificates").length).toBeGreaterThanOrEqual(2);
    const firstTwo = (rows: string[]) => rows.map((r) => r.split(",").slice(0, 2).join(","));
    expect(firstTwo(rowsOf(local2, "raft_nodes"))).toEqual(firstTwo(rowsOf(local1, "raft_nodes")));
    const names = (rows: string[]) => rows.map((r) => r.split(",")[0]).sort();
    expect(names(rowsOf(local2, "patches"))).toEqual(names(rowsOf(local1, "patches")));
    await toolOk(["verify", "--deep", "--database", `--dir=${dir}`], on());
    const text = await toolOk(["list", `--dir=${dir}`], on());
    expect(text.stdout).toMatch(/instance +default +c2 +node2 /);
    const status = await toolOk(["status", `--dir=${dir}`], on());
    expect(status.stdout).toMatch(/ok +instance default\/c2 .*\(on node2\)/);
  });

  it("two members each with a volume of one name: each is backed up as its own item, and restored onto its own member, stopping only that member's users", async () => {
    sameNamed = await repoDir(track);
    const own = sameNamed;
    const mounted = async (inst: string) => execRead(inst, ["cat", "/mnt/vd/data"], on()).then((s) => s.trim());
    try {
      for (const [inst, member] of [["c1", "node1"], ["c2", "node2"]] as const) {
        await incusOk(["storage", "volume", "create", "default", "vd", "--target", member], on());
        await incusOk(["config", "device", "add", inst, "vd", "disk", "pool=default", "source=vd", "path=/mnt/vd"], on());
        await incusOk(["exec", inst, "--", "sh", "-c", `echo vd-${member} > /mnt/vd/data`], on());
      }
      await toolOk(["backup", "--volumes", "--name", "vd", `--dir=${own}`], on());
      const rows = (await listJson(own)).filter((r) => r.name === "vd") as Array<Awaited<ReturnType<typeof listJson>>[number] & { member?: string }>;
      expect(rows.map((r) => [r.member, relative(own, r.path).replace(/\d{8}-\d{6}$/, "V")])).toEqual([
        ["node1", "volumes/default/default/vd/@node1/V"],
        ["node2", "volumes/default/default/vd/@node2/V"],
      ]);
      const version = rows[0]!.version;

      // Both changed; a restore of the name puts each back on its own member, with its own data,
      // stopping (and starting again) only the instance that mounts that member's volume.
      for (const inst of ["c1", "c2"]) await incusOk(["exec", inst, "--", "sh", "-c", "echo changed > /mnt/vd/data"], on());
      const r = await toolOk(["restore", "--volume", "--name", "vd", "--version", version, "--force", `--dir=${own}`], on());
      console.log(`same-named volumes on two members, restore:\n${r.stdout}`);
      expect(r.stdout).toMatch(/REPLACE +volume default\/default\/vd on node1 .*; stops default\/c1 and starts default\/c1 again\n +on member node1, where it is\n/);
      expect(r.stdout).toMatch(/REPLACE +volume default\/default\/vd on node2 .*; stops default\/c2 and starts default\/c2 again\n +on member node2, where it is\n/);
      expect([await mounted("c1"), await mounted("c2")]).toEqual(["vd-node1", "vd-node2"]);

      // A single file goes back through the instance that mounts that member's volume (c2 for node2's).
      const which = await tool(["restore", "--volume", "--name", "default/vd", "--version", version, "--path", "/data", `--dir=${own}`], on());
      expect([which.code, which.stderr]).toEqual([2, expect.stringContaining("name one (--member node1 or --member node2)")]);
      await incusOk(["exec", "c2", "--", "rm", "/mnt/vd/data"], on());
      const f = await toolOk(["restore", "--volume", "--name", "default/vd", "--member", "node2", "--version", version, "--path", "/data", `--dir=${own}`], on());
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
    expect((await execRead("c2", ["cat", "/srv/data"], there)).trim()).toBe("v2-data");
  });

  it("restores onto a single fresh server: members are ignored, and the plan says so; two members' volumes of one name are refused, and --member restores one", async () => {
    const single = await isolatedServer(track, { version });
    const r = await toolOk(["restore", "--instances", "--volumes", "--force", `--dir=${dir}`], { socket: single });
    expect(r.stdout).toContain("it was on member node2 of a cluster; this server is not one: members are ignored");
    expect(await execRead("c2", ["cat", "/srv/data"], { socket: single })).toContain("v2-data");

    // vd of node1 and vd of node2 would both land on the one vd here: refused before anything changes.
    const clash = await tool(["restore", "--volume", "--name", "vd", "--force", `--dir=${sameNamed}`], { socket: single });
    console.log(`two members' vd onto a single server: exit ${clash.code}: ${clash.stderr.trim()}`);
    expect(clash.code).toBe(2);
    expect(clash.stderr).toMatch(/volume default\/default\/vd on node1 and volume default\/default\/vd on node2 would both be restored as volume default\/default\/vd \(this server is not a cluster\); nothing was changed: restore one at a time, with --member node1 or --member node2/);
    const volumes = () => incusOk(["storage", "volume", "list", "default", "-f", "csv", "-c", "n", "type=custom"], { socket: single }).then((t) => t.trim().split("\n").sort());
    expect(await volumes()).toEqual(["v1", "v2"]);
    await toolOk(["restore", "--volume", "--name", "vd", "--member", "node2", "--target-name", "vd-from-node2", "--force", `--dir=${sameNamed}`], { socket: single });
    expect(await volumes()).toEqual(["v1", "v2", "vd-from-node2"]);
    await incusOk(["config", "device", "add", "c2", "vd", "disk", "pool=default", "source=vd-from-node2", "path=/mnt/vd"], { socket: single });
    expect((await execRead("c2", ["cat", "/mnt/vd/data"], { socket: single })).trim()).toBe("vd-node2");
  });
});
