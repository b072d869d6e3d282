import { mkdir, readFile, readlink, symlink, writeFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { applyFiles, planFiles, wants, type RestoreEntry } from "../../../src/engine/file_restore";
import { DirectoryTarget } from "../../../src/local/directory_target";
import { Staging } from "../../../src/local/staging";
import { silentReporter } from "../../../src/engine/reporter";
import { requestedPaths } from "../../../src/cli/restore_files";
import { tempDir } from "../helpers/repo";
import { MemoryStore } from "../helpers/memory-store";
import { pickSource } from "../../../src/engine/files";
import { KINDS, selectionFrom } from "../../../src/core/selection";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");
const base = { snapshot: "", uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, size: 0, mtime: 1_700_000_000, ancestor: false };

async function staged(dir: string, name: string, data: string): Promise<{ staged: string; sha256: string; size: number }> {
  const p = join(dir, name);
  await writeFile(p, data);
  return { staged: p, sha256: sha(data), size: data.length };
}

describe("which entries a restore of some paths needs", () => {
  it("the paths' trees, and the directories above them as ancestors, in one snapshot", () => {
    const w = wants(["/srv/app", "/etc/hosts"], "");
    const e = (path: string, type: "dir" | "file" = "dir", snapshot = "") => ({ ...base, path, type, mode: 0o755, snapshot });
    expect(w(e("/"))).toBe("ancestor");
    expect(w(e("/srv"))).toBe("ancestor");
    expect(w(e("/srv/app"))).toBe("entry");
    expect(w(e("/srv/app/x", "file"))).toBe("entry");
    expect(w(e("/srv/application"))).toBeUndefined();
    expect(w(e("/etc"))).toBe("ancestor");
    expect(w(e("/etc/hosts", "file"))).toBe("entry");
    expect(w(e("/srv/app", "dir", "snap0"))).toBeUndefined();
  });

  it("--path values: normal, once, none inside another", () => {
    expect(requestedPaths(["/srv/app/", "srv/app/x", "/etc//hosts", "/srv/app"])).toEqual(["/etc/hosts", "/srv/app"]);
    expect(() => requestedPaths(["/srv/../etc"])).toThrow(/"\.\." component/);
  });
});

describe("planning and writing into a directory", () => {
  it("creates what is missing, leaves what is the same, replaces what differs, and writes nothing before it is asked to", async () => {
    const root = await tempDir();
    const staging = await Staging.create(await tempDir());
    const stage = staging.dir;
    await mkdir(join(root, "srv/app"), { recursive: true });
    await writeFile(join(root, "srv/app/same.txt"), "same");
    await writeFile(join(root, "srv/app/changed.txt"), "mine");
    await symlink("/nowhere", join(root, "srv/app/link"));
    const entries: RestoreEntry[] = [
      { ...base, ancestor: true, path: "/srv", type: "dir", mode: 0o755 },
      { ...base, path: "/srv/app", type: "dir", mode: (await stat(join(root, "srv/app"))).mode & 0o7777 },
      { ...base, path: "/srv/app/same.txt", type: "file", mode: (await stat(join(root, "srv/app/same.txt"))).mode & 0o7777, ...(await staged(stage, "1", "same")) },
      { ...base, path: "/srv/app/changed.txt", type: "file", mode: 0o600, ...(await staged(stage, "2", "theirs")) },
      { ...base, path: "/srv/app/new", type: "dir", mode: 0o750 },
      { ...base, path: "/srv/app/new/f", type: "file", mode: 0o640, ...(await staged(stage, "3", "f")) },
      { ...base, path: "/srv/app/link", type: "symlink", mode: 0o777, link: "../target" },
      { ...base, path: "/srv/app/hard", type: "hardlink", mode: 0o640, link: "/srv/app/new/f", staged: join(stage, "3"), sha256: sha("f") },
      { ...base, path: "/srv/app/dev", type: "char", mode: 0o600 },
    ];
    const target = new DirectoryTarget(root, staging, silentReporter);
    const steps = await planFiles(target, entries);
    expect(steps.map((s) => [s.entry.path, s.action])).toEqual([
      ["/srv/app", "same"],
      ["/srv/app/same.txt", "same"],
      ["/srv/app/changed.txt", "replace"],
      ["/srv/app/new", "create"],
      ["/srv/app/new/f", "create"],
      ["/srv/app/link", "replace"],
      ["/srv/app/hard", "create"],
      ["/srv/app/dev", "skip"],
    ]);
    expect(await readFile(join(root, "srv/app/changed.txt"), "utf8")).toBe("mine");
    const done = await applyFiles(target, steps);
    expect(done).toEqual({ created: 3, replaced: 2, same: 2, skipped: 1 });
    expect(await readFile(join(root, "srv/app/changed.txt"), "utf8")).toBe("theirs");
    expect((await stat(join(root, "srv/app/changed.txt"))).mode & 0o7777).toBe(0o600);
    expect((await stat(join(root, "srv/app/new"))).mode & 0o7777).toBe(0o750);
    expect(await readlink(join(root, "srv/app/link"))).toBe("../target");
    expect((await stat(join(root, "srv/app/hard"))).ino).toBe((await stat(join(root, "srv/app/new/f"))).ino);
    expect((await stat(join(root, "srv/app/new/f"))).mtimeMs).toBe(1_700_000_000_000);
  });

  it("refuses a file where a directory is, and a symlink on the way, before writing anything", async () => {
    const root = await tempDir();
    const staging = await Staging.create(await tempDir());
    const stage = staging.dir;
    await mkdir(join(root, "srv/app/conf"), { recursive: true });
    const file: RestoreEntry = { ...base, path: "/srv/app/conf", type: "file", mode: 0o644, ...(await staged(stage, "1", "x")) };
    await expect(planFiles(new DirectoryTarget(root, staging, silentReporter), [file])).rejects.toThrow(/srv\/app\/conf is a directory, and the backup has a file there; nothing was changed/);
    const other = await tempDir();
    await symlink(other, join(root, "srv/link"));
    const through: RestoreEntry = { ...base, path: "/srv/link/x", type: "file", mode: 0o644, ...(await staged(stage, "2", "x")) };
    await expect(planFiles(new DirectoryTarget(root, staging, silentReporter), [through])).rejects.toThrow(/srv\/link is a symlink: refusing to write through it/);
  });
});

describe("which version a file listing or restore reads", () => {
  const manifest = (name: string, version: string, object: Record<string, unknown>, kind: "instance" | "volume" = "instance") => ({
    format: 1 as const,
    kind,
    project: "default",
    ...(kind === "volume" ? { pool: "default" } : {}),
    name,
    version,
    created: "2026-12-03T00:00:00Z",
    tool: { name: "incus-backup" as const, version: "test" },
    server: {},
    options: {},
    object,
  });
  const sel = (kind: "instance" | "volume", name: string) => selectionFrom({ [kind === "instance" ? "instances" : "volumes"]: true, names: [name] }, KINDS, false);

  it("the latest, or the latest matching --version; a VM and a block volume are refused, naming what works instead", async () => {
    const store = new MemoryStore();
    store.put(manifest("web", "20261201-010000", { type: "container" }), { "instance.tar.zst": Buffer.from("a") });
    store.put(manifest("web", "20261202-010000", { type: "container" }), { "instance.tar.zst": Buffer.from("b") });
    store.put(manifest("vm1", "20261202-010000", { type: "virtual-machine" }), { "instance.tar.zst": Buffer.from("c") });
    store.put(manifest("disk", "20261202-010000", { content_type: "block" }, "volume"), { "volume.tar.zst": Buffer.from("d") });
    expect((await pickSource(store, sel("instance", "web"), undefined)).version.manifest.version).toBe("20261202-010000");
    expect((await pickSource(store, sel("instance", "web"), "20261201")).version.manifest.version).toBe("20261201-010000");
    await expect(pickSource(store, sel("instance", "web"), "2025")).rejects.toMatchObject({ exitCode: 5 });
    await expect(pickSource(store, sel("instance", "nope"), undefined)).rejects.toMatchObject({ exitCode: 5 });
    const vm = pickSource(store, sel("instance", "vm1"), undefined);
    await expect(vm).rejects.toThrow(/is a virtual machine: its root disk is a disk image/);
    await expect(vm).rejects.toMatchObject({ exitCode: 2, hint: expect.stringMatching(/--target-name vm1-copy/) });
    await expect(pickSource(store, sel("volume", "disk"), undefined)).rejects.toThrow(/is a block volume/);
  });

  it("a cluster's volume of one name on two members: --member picks one, else --version if it fits one only, else it is refused naming both", async () => {
    const store = new MemoryStore();
    const on = (member: string, version: string) => ({ ...manifest("vd", version, { content_type: "filesystem", location: member }, "volume"), member });
    store.put(on("node2", "20261201-010000"), { "volume.tar.zst": Buffer.from("a") });
    store.put(on("node1", "20261202-010000"), { "volume.tar.zst": Buffer.from("b") });
    store.put(on("node2", "20261202-010000"), { "volume.tar.zst": Buffer.from("c") });
    const withMember = (member: string) => selectionFrom({ volumes: true, names: ["vd"], member }, KINDS, false);
    const picked = await pickSource(store, withMember("node1"), undefined);
    expect([picked.version.manifest.member, picked.version.manifest.version]).toEqual(["node1", "20261202-010000"]);
    expect((await pickSource(store, sel("volume", "vd"), "20261201")).version.manifest.member).toBe("node2");
    const both = pickSource(store, sel("volume", "vd"), undefined);
    await expect(both).rejects.toThrow('--name "vd" matches volume default/default/vd on node1, volume default/default/vd on node2: name one (--member node1 or --member node2)');
    await expect(both).rejects.toMatchObject({ exitCode: 2 });
    await expect(pickSource(store, withMember("node3"), undefined)).rejects.toThrow('there is no backup of volume "vd" on member node3');
  });
});
