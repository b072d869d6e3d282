// Single files out of a backup: listing a version (`files`) and bringing back files and trees
// (`restore --path`), into the running instance, into a volume through the instance it is mounted
// in, and into a directory (--to). On both LTS versions, on an instance set up like a real host's
// (NIC on the managed bridge, cloud-init, snapshots) on btrfs and a volume on dir, from a directory
// repository and from a restic one.
import { execFileSync } from "node:child_process";
import { lstat, readFile, readdir, readlink, rm, stat, symlink, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, execRead, incusOk, labSocket, labVersions, tracker, uniqueName } from "../lab/lab";
import { launchRealistic } from "./helpers/realistic";
import { resticBinaries, resticRepo, type ResticRepo } from "./helpers/restic";
import { expectOneLineError, flipByte, instanceStatus, repoDir, tempDir } from "./helpers/server";
import { tool, toolOk } from "./helpers/tool";

const restic = (await resticBinaries()).at(-1)!;

// The files the instance holds when it is backed up: owners, modes, a setgid directory, links that
// point out of the tree (absolute and relative) and a hard link.
const FIXTURE = `set -e
mkdir -p /srv/app/conf.d /srv/app/tree/a/b /srv/app/shared
echo 'listen: 8080' > /srv/app/config.yml; chown 1234:55 /srv/app/config.yml; chmod 0640 /srv/app/config.yml
printf '#!/bin/sh\\necho run\\n' > /srv/app/run.sh; chmod 0755 /srv/app/run.sh
echo one > /srv/app/tree/one.txt; echo deep > /srv/app/tree/a/b/deep.txt; chown -R 2000:2000 /srv/app/tree/a
chmod 2775 /srv/app/shared; chown 0:55 /srv/app/shared
ln -s /etc/passwd /srv/app/passwd-link
ln -s ../../../../etc /srv/app/tree/escape
ln /srv/app/tree/one.txt /srv/app/tree/one-hard.txt
echo '# snapshot time' > /srv/app/conf.d/old.conf
`;

interface Stat {
  type: string;
  mode: string;
  uid: string;
  gid: string;
  sha?: string;
  link?: string;
}

/**
 * The output of a command in the instance that always prints something. `incus exec` (the 6.0
 * client) now and then exits 0 having lost a quick command's output (seen on a loaded machine:
 * `stat` of an existing link came back empty); this asks again rather than read nothing as an answer.
 */
function printed(instance: string, argv: string[], socket: string): Promise<string> {
  return execRead(instance, argv, { socket });
}

/** type, mode, owner and sha256 (files) or target (links) of a path in the instance. */
async function statIn(instance: string, path: string, socket: string): Promise<Stat> {
  const [type, mode, uid, gid] = (await printed(instance, ["stat", "-c", "%F|%a|%u|%g", path], socket)).trim().split("|") as [string, string, string, string];
  const s: Stat = { type, mode, uid, gid };
  if (type === "regular file" || type === "regular empty file") s.sha = (await printed(instance, ["sha256sum", path], socket)).split(" ")[0]!;
  if (type === "symbolic link") s.link = (await printed(instance, ["readlink", path], socket)).trim();
  return s;
}

describe.each(labVersions())("file-level restore: Incus %s", (version) => {
  const track = tracker();
  const name = uniqueName("files");
  const volume = uniqueName("files-vol");
  let socket: string;
  let dir: string;
  let r: ResticRepo;
  const on = () => ({ socket });
  const repo = () => `--dir=${dir}`;
  let before: Record<string, Stat>;

  beforeAll(async () => {
    socket = labSocket(version);
    await launchRealistic(name, { socket, track, pool: "btrfs", snapshots: 0 });
    await incusOk(["exec", name, "--", "sh", "-c", FIXTURE], on());
    await incusOk(["snapshot", "create", name, "snap0"], on());
    await incusOk(["exec", name, "--", "sh", "-c", "echo '# now' > /srv/app/conf.d/old.conf; echo new > /srv/app/conf.d/new.conf"], on());
    track.volume("default", volume, on());
    await incusOk(["storage", "volume", "create", "default", volume], on());
    await incusOk(["config", "device", "add", name, volume, "disk", "pool=default", `source=${volume}`, "path=/mnt/data"], on());
    await incusOk(["exec", name, "--", "sh", "-c", "mkdir -p /mnt/data/db && echo 'row 1' > /mnt/data/db/table && chown 999:999 /mnt/data/db/table && chmod 0600 /mnt/data/db/table"], on());
    before = {};
    for (const p of ["/srv/app/config.yml", "/srv/app/run.sh", "/srv/app/passwd-link", "/srv/app/shared", "/srv/app/tree/escape"]) before[p] = await statIn(name, p, socket);
    dir = await repoDir(track);
    r = await resticRepo(track, restic);
    const what = ["backup", "--instances", "--volumes", "--snapshots", "--name", name, "--name", `default/${volume}`];
    await toolOk([...what, repo()], on());
    await toolOk([...what, `--repo=${r.repo}`], { ...on(), env: r.env });
  });
  afterAll(() => track.cleanup());

  it("files: ls -l of a directory; the first listing keeps a catalog, the next reads only that", async () => {
    const first = await toolOk(["files", "--instance", "--name", name, repo(), "/srv/app"], on());
    expect(first.stderr).toMatch(/^read the archive once \(.*\) and kept its file catalog of \d+ entries/);
    const lines = first.stdout.trim().split("\n");
    expect(lines.find((l) => l.endsWith("/srv/app/config.yml"))).toMatch(/^-rw-r----- 1234 +55 +13 \d{4}-\d\d-\d\d \d\d:\d\d \/srv\/app\/config\.yml$/);
    expect(lines.find((l) => l.includes("/srv/app/passwd-link"))).toMatch(/^lrwxrwxrwx .* \/srv\/app\/passwd-link -> \/etc\/passwd$/);
    expect(lines.find((l) => l.includes("/srv/app/shared"))).toMatch(/^drwxrwsr-x /);
    const second = await toolOk(["files", "--instance", "--name", name, repo(), "/srv/app"], on());
    expect(second.stdout).toBe(first.stdout);
    expect(second.stderr).not.toMatch(/catalog/);
    // The catalog is kept with the version, so a JSON listing and a search cost no archive read.
    const json = JSON.parse((await toolOk(["files", "--instance", "--name", name, repo(), "--json", "/srv/app/config.yml"], on())).stdout) as Array<Record<string, unknown>>;
    expect(json).toEqual([expect.objectContaining({ path: "/srv/app/config.yml", type: "file", mode: "0640", uid: 1234, gid: 55, size: 13 })]);
    const found = await toolOk(["files", "--instance", "--name", name, repo(), "--find", "*.conf", "/srv"], on());
    expect(found.stdout.trim().split("\n").map((l) => l.split(" ").at(-1))).toEqual(["/srv/app/conf.d/new.conf", "/srv/app/conf.d/old.conf"]);
    const snap = await toolOk(["files", "--instance", "--name", name, repo(), "--snapshot", "snap0", "/srv/app/conf.d"], on());
    expect(snap.stdout).toMatch(/old\.conf/);
    expect(snap.stdout).not.toMatch(/new\.conf/);
    const vol = await toolOk(["files", "--volume", "--name", `default/${volume}`, repo(), "/db"], on());
    expect(vol.stdout).toMatch(/^-rw------- 999 +999 +6 .* \/db\/table$/m);
  });

  it("a deleted file comes back into the running instance with its mode and owner; nothing else changes", async () => {
    const pid = await incusOk(["query", `/1.0/instances/${name}/state`], on());
    await incusOk(["exec", name, "--", "sh", "-c", "rm /srv/app/config.yml /srv/app/passwd-link; echo mine > /srv/app/added-later"], on());
    // Nothing existing is replaced: no question, even without a terminal.
    const out = await toolOk(["restore", "--instance", "--name", name, repo(), "--path", "/srv/app/config.yml", "--path", "/srv/app/passwd-link"], on());
    expect(out.stdout).toMatch(/create +\/srv\/app\/config\.yml \(file 0640 1234:55/);
    expect(await statIn(name, "/srv/app/config.yml", socket)).toEqual(before["/srv/app/config.yml"]);
    expect(await statIn(name, "/srv/app/passwd-link", socket)).toEqual(before["/srv/app/passwd-link"]);
    expect((await execRead(name, ["cat", "/srv/app/added-later"], on())).trim()).toBe("mine");
    expect(await instanceStatus(name, on())).toBe("Running");
    expect((await apiGet(`/1.0/instances/${name}/state`, on())).pid).toBe(JSON.parse(pid).pid);
  });

  it("an overwrite is refused without a terminal or --force, and done with --force", async () => {
    await incusOk(["exec", name, "--", "sh", "-c", "echo 'listen: 9999' > /srv/app/config.yml; chmod 0666 /srv/app/run.sh"], on());
    const args = ["restore", "--instance", "--name", name, repo(), "--path", "/srv/app/config.yml", "--path", "/srv/app/run.sh"];
    const plan = JSON.parse((await toolOk([...args, "--dry-run", "--json"], on())).stdout) as { plan: Array<{ path: string; action: string }> };
    expect(plan.plan.filter((p) => p.action === "replace").map((p) => p.path)).toEqual(["/srv/app/config.yml", "/srv/app/run.sh"]);
    expect((await tool([...args, "--json"], on())).code).toBe(6);
    const refused = await tool(args, on());
    expect(refused.code).toBe(6);
    expect(refused.stdout).toMatch(/REPLACE +default\/.*:\/srv\/app\/config\.yml: its contents differ/);
    expect(refused.stdout).toMatch(/REPLACE +default\/.*:\/srv\/app\/run\.sh: owner or mode differ/);
    expect((await execRead(name, ["cat", "/srv/app/config.yml"], on())).trim()).toBe("listen: 9999");
    await toolOk([...args, "--force"], on());
    expect(await statIn(name, "/srv/app/config.yml", socket)).toEqual(before["/srv/app/config.yml"]);
    expect(await statIn(name, "/srv/app/run.sh", socket)).toEqual(before["/srv/app/run.sh"]);
    // Again: everything is as in the backup, nothing to confirm.
    expect((await toolOk(args, on())).stdout).toMatch(/Nothing to restore/);
  });

  it("a tree into --to, with modes, owners, links kept; links that point out of the tree stay links", async () => {
    const to = await tempDir(track, "ibk-files-to-");
    await toolOk(["restore", "--instance", "--name", name, repo(), "--path", "/srv/app", "--to", to], on());
    const conf = await stat(join(to, "srv/app/config.yml"));
    expect([conf.mode & 0o7777, conf.uid, conf.gid]).toEqual([0o640, 1234, 55]);
    expect((await stat(join(to, "srv/app/shared"))).mode & 0o7777).toBe(0o2775);
    expect((await stat(join(to, "srv/app/tree/a/b/deep.txt"))).uid).toBe(2000);
    expect(await readlink(join(to, "srv/app/passwd-link"))).toBe("/etc/passwd");
    expect(await readlink(join(to, "srv/app/tree/escape"))).toBe("../../../../etc");
    expect((await lstat(join(to, "srv/app/tree/escape"))).isSymbolicLink()).toBe(true);
    expect((await stat(join(to, "srv/app/tree/one-hard.txt"))).ino).toBe((await stat(join(to, "srv/app/tree/one.txt"))).ino);
    expect((await readFile(join(to, "srv/app/conf.d/new.conf"), "utf8")).trim()).toBe("new");
    expect(await readdir(to)).toEqual(["srv"]);
    // From the snapshot kept in the backup: the older file.
    const old = await tempDir(track, "ibk-files-snap-");
    await toolOk(["restore", "--instance", "--name", name, repo(), "--snapshot", "snap0", "--path", "/srv/app/conf.d", "--to", old], on());
    expect(await readdir(join(old, "srv/app/conf.d"))).toEqual(["old.conf"]);
    expect((await readFile(join(old, "srv/app/conf.d/old.conf"), "utf8")).trim()).toBe("# snapshot time");
  });

  it("a path through a symlink is not in the backup; .. is refused; a --to tree with a symlink in the way is never written through", async () => {
    const through = await tool(["restore", "--instance", "--name", name, repo(), "--path", "/srv/app/tree/escape/passwd", "--to", await tempDir(track, "ibk-files-x-")], on());
    expect(through.code).toBe(5);
    expect(expectOneLineError(through)).toMatch(/\/srv\/app\/tree\/escape\/passwd is not in instance default\//);
    const up = await tool(["restore", "--instance", "--name", name, repo(), "--path", "/srv/../etc/shadow"], on());
    expect(up.code).toBe(2);
    expect(expectOneLineError(up)).toMatch(/has a "\.\." component/);
    // A directory already there in which srv/app is a symlink to somewhere else: refused, and nothing lands there.
    const to = await tempDir(track, "ibk-files-trap-");
    const elsewhere = await tempDir(track, "ibk-files-elsewhere-");
    await mkdir(join(to, "srv"));
    await symlink(elsewhere, join(to, "srv/app"));
    const trap = await tool(["restore", "--instance", "--name", name, repo(), "--path", "/srv/app/config.yml", "--to", to], on());
    expect(trap.code).toBe(1);
    expect(expectOneLineError(trap)).toMatch(/srv\/app is a symlink, and the backup has a directory there; nothing was changed/);
    expect(await readdir(elsewhere)).toEqual([]);
  });

  it("a volume's file comes back through the instance it is mounted in", async () => {
    await incusOk(["exec", name, "--", "rm", "/mnt/data/db/table"], on());
    const out = await toolOk(["restore", "--volume", "--name", `default/${volume}`, repo(), "--path", "/db/table"], on());
    expect(out.stdout).toMatch(new RegExp(`into volume default/${volume}, mounted at /mnt/data in the running instance default/${name}`));
    expect(await statIn(name, "/mnt/data/db/table", socket)).toMatchObject({ mode: "600", uid: "999", gid: "999" });
    expect((await execRead(name, ["cat", "/mnt/data/db/table"], on())).trim()).toBe("row 1");
  });

  it("from a restic repository: the same listing and the same files", async () => {
    const viaDir = await toolOk(["files", "--instance", "--name", name, repo(), "/srv/app/tree"], on());
    const viaRestic = await toolOk(["files", "--instance", "--name", name, `--repo=${r.repo}`, "/srv/app/tree"], { ...on(), env: r.env });
    expect(viaRestic.stdout).toBe(viaDir.stdout);
    const to = await tempDir(track, "ibk-files-restic-");
    await toolOk(["restore", "--instance", "--name", name, `--repo=${r.repo}`, "--path", "/srv/app/tree/a", "--to", to], { ...on(), env: r.env });
    expect((await readFile(join(to, "srv/app/tree/a/b/deep.txt"), "utf8")).trim()).toBe("deep");
  });

  it("a stopped or missing instance, a missing path or snapshot, a damaged archive: one line, its exit code, nothing changed", async () => {
    const missing = await tool(["restore", "--instance", "--name", name, repo(), "--path", "/srv/app/no-such-file"], on());
    expect(missing.code).toBe(5);
    expect(expectOneLineError(missing)).toMatch(/\/srv\/app\/no-such-file is not in instance/);
    const snap = await tool(["files", "--instance", "--name", name, repo(), "--snapshot", "nope"], on());
    expect(snap.code).toBe(5);
    expect(expectOneLineError(snap)).toMatch(/holds no snapshot "nope"; it holds: snap0/);
    const unknown = await tool(["files", "--instance", "--name", "no-such-instance", repo()], on());
    expect(unknown.code).toBe(5);

    // A copy of the repository whose archive is damaged and whose catalog is gone.
    const bad = join(await tempDir(track, "ibk-files-bad-"), "repo");
    execFileSync("cp", ["-a", dir, bad]);
    const archives = execFileSync("find", [bad, "-name", "instance.tar*", "-not", "-name", "*.catalog.gz"]).toString().trim().split("\n");
    for (const a of archives) {
      await rm(`${a}.catalog.gz`, { force: true });
      await flipByte(a);
    }
    const to = await tempDir(track, "ibk-files-bad-to-");
    const damaged = await tool(["restore", "--instance", "--name", name, `--dir=${bad}`, "--path", "/srv/app", "--to", to], on());
    expect(damaged.code).toBe(9);
    expectOneLineError(damaged);
    expect(await readdir(to)).toEqual([]);

    // Backed up, then deleted: there is no instance to put files into.
    const gone = uniqueName("files-gone");
    await incusOk(["launch", "busybox", gone], on());
    track.instance(gone, on());
    await toolOk(["backup", "--instance", "--name", gone, repo()], on());
    await incusOk(["delete", "--force", gone], on());
    const goneR = await tool(["restore", "--instance", "--name", gone, repo(), "--path", "/etc/hostname"], on());
    expect(goneR.code).toBe(5);
    expect(expectOneLineError(goneR)).toMatch(/is not on the server, so there is nothing to restore files into/);

    await incusOk(["stop", name, "--force"], on());
    try {
      const stopped = await tool(["restore", "--instance", "--name", name, repo(), "--path", "/srv/app/config.yml"], on());
      expect(stopped.code).toBe(2);
      expect(expectOneLineError(stopped)).toMatch(/is stopped: files are restored into a running instance; nothing was changed/);
      const vol = await tool(["restore", "--volume", "--name", `default/${volume}`, repo(), "--path", "/db/table"], on());
      expect(vol.code).toBe(2);
      expect(expectOneLineError(vol)).toMatch(/is not mounted in a running instance \(attached to default\/.* \(stopped\)\)/);
    } finally {
      await incusOk(["start", name], on());
    }
  });
});
