import { execFileSync } from "node:child_process";
import { chmod, link, mkdir, symlink, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gunzipSync, gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import {
  CatalogWriter,
  archivePathOf,
  globMatcher,
  locate,
  modeString,
  normalPath,
  readCatalog,
  within,
  type CatalogEntry,
} from "../../../src/engine/catalog";
import { listing, type FilesSource } from "../../../src/engine/files";
import { walkArchive } from "../../../src/engine/archive_walk";
import { silentReporter } from "../../../src/engine/reporter";
import type { Store } from "../../../src/repository/store";
import { longListing } from "../../../src/cli/files";
import { tempDir } from "../helpers/repo";

const LONG = `deep/${"d".repeat(60)}/${"e".repeat(60)}/file-with-a-long-name.txt`;

/** An archive laid out as Incus writes a container's backup with one snapshot, by GNU tar in `format`. */
async function containerArchive(format: "gnu" | "pax"): Promise<Buffer> {
  const dir = await tempDir();
  const root = join(dir, "backup/container/rootfs");
  const snap = join(dir, "backup/snapshots/snap0/rootfs");
  for (const r of [root, snap]) {
    await mkdir(join(r, "etc/nginx"), { recursive: true });
    await writeFile(join(r, "etc/nginx/nginx.conf"), "worker_processes 1;\n");
  }
  await writeFile(join(dir, "backup/index.yaml"), "name: web\n");
  await writeFile(join(dir, "backup/container/metadata.yaml"), "architecture: x86_64\n");
  await writeFile(join(root, "etc/nginx/only-now"), "new\n");
  await mkdir(join(root, "usr/bin"), { recursive: true });
  await writeFile(join(root, "usr/bin/sudo"), "#!/bin/sh\n");
  await chmod(join(root, "usr/bin/sudo"), 0o4755);
  await symlink("/etc/nginx/nginx.conf", join(root, "etc/link"));
  // Named to come after nginx.conf in the archive, so that nginx.conf is the file and this the link.
  await link(join(root, "etc/nginx/nginx.conf"), join(root, "etc/x-hard"));
  await mkdir(join(root, LONG, ".."), { recursive: true });
  await writeFile(join(root, LONG), "x".repeat(3000));
  await utimes(join(root, "etc/nginx/nginx.conf"), 1_700_000_000, 1_700_000_000);
  // --sort=name: the order the directory lists its entries in is the file system's (ext4's hash
  // order, tmpfs's newest first); the tests below need one order on every file system.
  return execFileSync("tar", ["-c", `--format=${format}`, "--sort=name", "--owner=0", "--group=0", "--numeric-owner", "-C", dir, "backup"], { maxBuffer: 1 << 26 });
}

/** Just enough of a store to stream one archive, in chunks of `chunk` bytes. */
function storeOf(tar: Buffer, chunk = 777): Store {
  const chunks: Buffer[] = [];
  for (let i = 0; i < tar.length; i += chunk) chunks.push(tar.subarray(i, i + chunk));
  return { streamFile: async () => Readable.from(chunks) } as unknown as Store;
}

function sourceOf(tar: Buffer, kind: "instance" | "volume" = "instance"): FilesSource {
  return {
    kind,
    file: { name: `${kind}.tar`, size: tar.length, sha256: "0".repeat(64) },
    version: { location: "test", manifest: { kind, project: "default", name: "c1", version: "20261203-000000", files: [] } },
  } as unknown as FilesSource;
}

async function list(tar: Buffer, kind: "instance" | "volume" = "instance", chunk = 777): Promise<CatalogEntry[]> {
  const out: CatalogEntry[] = [];
  await walkArchive(storeOf(tar, chunk), sourceOf(tar, kind), { entry: (e) => (out.push(e), false) }, { reporter: silentReporter, step: "" });
  return out;
}

describe("where archive paths land", () => {
  it("maps a container's rootfs and its snapshots to the paths the instance sees, and leaves the rest out", () => {
    expect(locate("instance", "backup/container/rootfs")).toEqual({ snapshot: "", path: "/" });
    expect(locate("instance", "backup/container/rootfs/etc/hostname")).toEqual({ snapshot: "", path: "/etc/hostname" });
    expect(locate("instance", "backup/snapshots/snap0/rootfs/etc/")).toEqual({ snapshot: "snap0", path: "/etc" });
    expect(locate("instance", "backup/index.yaml")).toBeUndefined();
    expect(locate("instance", "backup/container/metadata.yaml")).toBeUndefined();
    expect(locate("instance", "backup/container/rootfsx/etc")).toBeUndefined();
    expect(locate("volume", "backup/volume/data/x")).toEqual({ snapshot: "", path: "/data/x" });
    expect(locate("volume", "backup/volume-snapshots/s1/x")).toEqual({ snapshot: "s1", path: "/x" });
    expect(locate("volume", "backup/container/rootfs/x")).toBeUndefined();
  });

  it("archivePathOf is the reverse", () => {
    for (const [kind, snap, path] of [["instance", "", "/etc/x"], ["instance", "s", "/"], ["volume", "", "/a"], ["volume", "v1", "/b/c"]] as const) {
      expect(locate(kind, archivePathOf(kind, snap, path))).toEqual({ snapshot: snap, path });
    }
  });
});

describe.each(["gnu", "pax"] as const)("the catalog of a %s tar", (format) => {
  it("has every entry of the rootfs and the snapshot, with type, mode, owner, size, time and link", async () => {
    const entries = await list(await containerArchive(format));
    const now = entries.filter((e) => e.snapshot === "");
    const conf = now.find((e) => e.path === "/etc/nginx/nginx.conf")!;
    expect(conf).toMatchObject({ type: "file", mode: 0o644, uid: 0, gid: 0, size: 20, mtime: 1_700_000_000 });
    expect(now.find((e) => e.path === "/usr/bin/sudo")).toMatchObject({ type: "file", mode: 0o4755 });
    expect(now.find((e) => e.path === "/etc/link")).toMatchObject({ type: "symlink", link: "/etc/nginx/nginx.conf" });
    // The second name of a hard link is stored as a link to the first, named as the instance sees it.
    const hard = now.filter((e) => e.type === "hardlink");
    expect(hard).toHaveLength(1);
    expect(hard[0]).toMatchObject({ path: "/etc/x-hard", link: "/etc/nginx/nginx.conf" });
    expect(now.find((e) => e.path === `/${LONG}`)).toMatchObject({ type: "file", size: 3000 });
    expect(now.find((e) => e.path === "/")).toMatchObject({ type: "dir" });
    expect(entries.filter((e) => e.snapshot === "snap0").map((e) => e.path).sort()).toEqual(["/", "/etc", "/etc/nginx", "/etc/nginx/nginx.conf"]);
    expect(entries.some((e) => /index\.yaml|metadata/.test(e.path))).toBe(false);
  });
});

describe("walkArchive", () => {
  it("hands over the data of the entries asked for, and stops reading after stopAfter entries", async () => {
    const tar = await containerArchive("pax");
    const all = await list(tar);
    const at = all.findIndex((e) => e.snapshot === "" && e.path === "/etc/nginx/nginx.conf");
    const seen: string[] = [];
    const data: string[] = [];
    const r = await walkArchive(
      storeOf(tar),
      sourceOf(tar),
      {
        entry: (e, i) => (seen.push(e.path), i === at),
        data: async (_e, _i, stream) => {
          for await (const c of stream) data.push((c as Buffer).toString());
        },
        stopAfter: at + 1,
      },
      { reporter: silentReporter, step: "" },
    );
    expect(r.complete).toBe(false);
    expect(seen).toHaveLength(at + 1);
    expect(data.join("")).toBe("worker_processes 1;\n");
    expect((await walkArchive(storeOf(tar), sourceOf(tar), { entry: () => false }, { reporter: silentReporter, step: "" })).complete).toBe(true);
  });

  it("refuses an archive shorter or longer than its manifest says", async () => {
    const tar = await containerArchive("pax");
    const src = sourceOf(tar);
    src.file.size += 1;
    await expect(walkArchive(storeOf(tar), src, { entry: () => false }, { reporter: silentReporter, step: "" })).rejects.toThrow(/the manifest says/);
  });

  it("rejects a damaged header with an IntegrityError", async () => {
    const tar = await containerArchive("pax");
    const bad = Buffer.from(tar);
    bad[600] = bad[600]! ^ 0xff;
    bad[1200] = bad[1200]! ^ 0xff;
    await expect(list(bad)).rejects.toThrow(/test\/instance\.tar: not a valid archive/);
  });
});

describe("stored catalogs", () => {
  const entries: CatalogEntry[] = [
    { snapshot: "", path: "/", type: "dir", mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1 },
    { snapshot: "", path: "/etc/passwd", type: "file", mode: 0o644, uid: 0, gid: 0, user: "root", group: "root", size: 30, mtime: 2 },
    { snapshot: "s0", path: "/bin/sh", type: "symlink", mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 3, link: "busybox" },
  ];
  const sha = "a".repeat(64);

  async function stored(): Promise<Buffer> {
    const w = new CatalogWriter();
    for (const e of entries) w.add(e);
    const { data, header } = await w.finish("instance.tar.zst", sha);
    expect(header).toEqual({ format: 1, file: "instance.tar.zst", sha256: sha, entries: 3, snapshots: ["s0"] });
    return data;
  }

  it("round-trip: the same entries come back", async () => {
    const got: CatalogEntry[] = [];
    const header = await readCatalog(await stored(), "instance.tar.zst", sha, (e) => got.push(e));
    expect(header?.entries).toBe(3);
    expect(got).toEqual(entries);
  });

  it("a catalog of another archive, a cut one, or garbage is no catalog", async () => {
    const data = await stored();
    expect(await readCatalog(data, "instance.tar.zst", "b".repeat(64), () => undefined)).toBeUndefined();
    expect(await readCatalog(data, "instance.tar.gz", sha, () => undefined)).toBeUndefined();
    const lines = gunzipSync(data).toString().split("\n");
    expect(await readCatalog(gzipSync(lines.slice(0, 2).join("\n")), "instance.tar.zst", sha, () => undefined)).toBeUndefined();
    expect(await readCatalog(data.subarray(0, data.length - 5), "instance.tar.zst", sha, () => undefined)).toBeUndefined();
    expect(await readCatalog(Buffer.from("not gzip"), "instance.tar.zst", sha, () => undefined)).toBeUndefined();
  });
});

describe("paths and patterns", () => {
  it("normalPath makes paths absolute and refuses ..", () => {
    expect(normalPath("/")).toBe("/");
    expect(normalPath("etc//nginx/")).toBe("/etc/nginx");
    expect(normalPath("/./etc")).toBe("/etc");
    expect(() => normalPath("/etc/../root")).toThrow(/has a "\.\." component/);
    expect(() => normalPath("../x")).toThrow(/has a "\.\." component/);
    expect(() => normalPath("")).toThrow(/empty/);
  });

  it("within", () => {
    expect(within("/etc/x", "/etc")).toBe(true);
    expect(within("/etc", "/etc")).toBe(true);
    expect(within("/etcx", "/etc")).toBe(false);
    expect(within("/anything", "/")).toBe(true);
  });

  it("globMatcher: a bare pattern matches names, one with a slash whole paths", () => {
    const conf = globMatcher("*.conf");
    expect(conf("/etc/nginx/nginx.conf")).toBe(true);
    expect(conf("/etc/nginx.conf.d/x")).toBe(false);
    expect(globMatcher("nginx?.c[oa]nf")("/a/nginx2.conf")).toBe(true);
    expect(globMatcher("[!a]*")("/x/abc")).toBe(false);
    expect(globMatcher("/etc/*/nginx.conf")("/etc/nginx/nginx.conf")).toBe(true);
    expect(globMatcher("/etc/*/nginx.conf")("/etc/a/b/nginx.conf")).toBe(false);
    expect(globMatcher("/etc/**/nginx.conf")("/etc/a/b/nginx.conf")).toBe(true);
    expect(globMatcher("/etc/**/nginx.conf")("/etc/nginx.conf")).toBe(true);
    expect(globMatcher("nginx/*.conf")("/etc/nginx/a.conf")).toBe(true);
    expect(globMatcher("a.b")("/x/aXb")).toBe(false);
    expect(() => globMatcher("")).toThrow(/--find needs a pattern/);
  });

  it("modeString is ls -l's", () => {
    expect(modeString({ type: "file", mode: 0o644 })).toBe("-rw-r--r--");
    expect(modeString({ type: "dir", mode: 0o1777 })).toBe("drwxrwxrwt");
    expect(modeString({ type: "file", mode: 0o4755 })).toBe("-rwsr-xr-x");
    expect(modeString({ type: "file", mode: 0o2644 })).toBe("-rw-r-Sr--");
    expect(modeString({ type: "symlink", mode: 0o777 })).toBe("lrwxrwxrwx");
  });
});

describe("what a listing shows", () => {
  const e = (path: string, type: CatalogEntry["type"] = "file", snapshot = ""): CatalogEntry => ({ snapshot, path, type, mode: 0o644, uid: 0, gid: 0, size: 1, mtime: 0 });
  const all = [e("/", "dir"), e("/etc", "dir"), e("/etc/b"), e("/etc/a"), e("/etc/sub", "dir"), e("/etc/sub/c.conf"), e("/etc/a", "file", "s0"), e("/x.conf")];
  const run = (path: string, snapshot = "", find?: string) => {
    const l = listing(path, snapshot, find);
    return l.select(all.filter(l.accept))?.map((x) => x.path);
  };

  it("a directory's own entries, sorted; a file itself; nothing for a path not there", () => {
    expect(run("/etc")).toEqual(["/etc/a", "/etc/b", "/etc/sub"]);
    expect(run("/etc/a")).toEqual(["/etc/a"]);
    expect(run("/")).toEqual(["/etc", "/x.conf"]);
    expect(run("/nope")).toBeUndefined();
    expect(run("/etc", "s0")).toEqual(["/etc/a"]);
  });

  it("--find searches below PATH", () => {
    expect(run("/", "", "*.conf")).toEqual(["/etc/sub/c.conf", "/x.conf"]);
    expect(run("/etc", "", "*.conf")).toEqual(["/etc/sub/c.conf"]);
    expect(run("/etc", "", "*.none")).toEqual([]);
    expect(run("/nope", "", "*")).toBeUndefined();
  });

  it("prints like ls -l, links with their targets", () => {
    const lines = longListing([
      { snapshot: "", path: "/etc", type: "dir", mode: 0o755, uid: 0, gid: 0, user: "root", group: "root", size: 0, mtime: 1_700_000_000 },
      { snapshot: "", path: "/etc/link", type: "symlink", mode: 0o777, uid: 1000, gid: 1000, size: 0, mtime: 1_700_000_000, link: "target" },
    ]);
    expect(lines).toEqual(["drwxr-xr-x root root 0 2023-11-14 22:13 /etc/", "lrwxrwxrwx 1000 1000 0 2023-11-14 22:13 /etc/link -> target"]);
  });
});
