// Issue 6, corruption: damage a backup in every way a disk, a copy or a hand can (a byte flipped,
// a file truncated or deleted, a manifest or SHA256SUMS edited), one case per copy of a pristine
// repository, for each kind of item. `verify` and `verify --deep` catch every one (exit 9) and
// name the file; `restore` refuses before it changes anything (exit 9) and names the file.
import { createHash } from "node:crypto";
import { cp, readFile, readdir, rm, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, checksumTree, createVolumeWithData, incusOk, launchInstance, tracker, uniqueName, writeTestData, type Manifest } from "../lab/lab";
import { allInstanceNames, allVolumeNames, flipByte, repoDir, tempDir } from "./helpers/server";
import { listJson, tool, toolOk, type ListRow } from "./helpers/tool";

const INTEGRITY = 9;

interface FileEntry {
  name: string;
  size: number;
  sha256: string;
}

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

/** Rewrites manifest.json; with `sums`, SHA256SUMS too, so the two agree again (a careful hand). */
async function editManifest(dir: string, edit: (m: { files: FileEntry[] } & Record<string, unknown>) => void, sums: boolean): Promise<void> {
  const m = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as { files: FileEntry[] } & Record<string, unknown>;
  edit(m);
  const text = JSON.stringify(m, null, 2) + "\n";
  await writeFile(join(dir, "manifest.json"), text);
  if (sums) await writeSums(dir, m.files, text);
}

async function writeSums(dir: string, files: FileEntry[], manifestText: string): Promise<void> {
  const lines = [...files.map((f) => `${f.sha256}  ${f.name}\n`), `${sha(manifestText)}  manifest.json\n`];
  await writeFile(join(dir, "SHA256SUMS"), lines.join(""));
}

/** The item's main data file: the archive, the image's rootfs or unified tarball, the configuration export. */
async function mainFile(dir: string): Promise<string> {
  const names = await readdir(dir);
  return (
    names.find((n) => /^(instance|volume)\.tar/.test(n)) ??
    names.find((n) => n === "image.rootfs" || n === "image.tarball") ??
    names.find((n) => n === "config.json")!
  );
}

interface Damage {
  name: string;
  /** Damages the version in `dir`; returns the file the error must name. */
  apply: (dir: string) => Promise<string>;
  /** Only a deep verify can see it: every checksum was made to agree with the damage. */
  deepOnly?: boolean;
}

const DAMAGES: Damage[] = [
  { name: "a byte flipped in the data file", apply: async (d) => (await flipByte(join(d, await mainFile(d))), await mainFile(d)) },
  {
    name: "the data file truncated to half",
    apply: async (d) => {
      const f = await mainFile(d);
      const m = JSON.parse(await readFile(join(d, "manifest.json"), "utf8")) as { files: FileEntry[] };
      await truncate(join(d, f), Math.floor(m.files.find((x) => x.name === f)!.size / 2));
      return f;
    },
  },
  {
    name: "the data file deleted",
    apply: async (d) => {
      const f = await mainFile(d);
      await rm(join(d, f));
      return f;
    },
  },
  { name: "manifest.json deleted", apply: async (d) => (await rm(join(d, "manifest.json")), "manifest.json") },
  {
    name: "manifest.json: the data file's sha256 changed",
    apply: async (d) => {
      const f = await mainFile(d);
      await editManifest(d, (m) => (m.files.find((x) => x.name === f)!.sha256 = sha("tampered")), false);
      return "manifest.json";
    },
  },
  {
    name: "manifest.json and SHA256SUMS: the data file's sha256 changed in both",
    apply: async (d) => {
      const f = await mainFile(d);
      await editManifest(d, (m) => (m.files.find((x) => x.name === f)!.sha256 = sha("tampered")), true);
      return f;
    },
  },
  {
    name: "SHA256SUMS: the data file's line changed",
    apply: async (d) => {
      const f = await mainFile(d);
      const text = await readFile(join(d, "SHA256SUMS"), "utf8");
      await writeFile(join(d, "SHA256SUMS"), text.replace(new RegExp(`^[0-9a-f]{64}(  ${f.replace(/\./g, "\\.")})$`, "m"), `${sha("tampered")}$1`));
      return f;
    },
  },
  { name: "SHA256SUMS deleted", apply: async (d) => (await rm(join(d, "SHA256SUMS")), "SHA256SUMS") },
  {
    name: "manifest.json not JSON any more (SHA256SUMS made to agree)",
    apply: async (d) => {
      const m = JSON.parse(await readFile(join(d, "manifest.json"), "utf8")) as { files: FileEntry[] };
      const text = "{ this is not json\n";
      await writeFile(join(d, "manifest.json"), text);
      await writeSums(d, m.files, text);
      return "manifest.json";
    },
  },
  {
    name: "manifest.json: a file's size made a string (SHA256SUMS made to agree)",
    apply: async (d) => {
      await editManifest(d, (m) => ((m.files[0] as unknown as Record<string, unknown>).size = "12"), true);
      return "manifest.json";
    },
  },
  {
    name: "the data file truncated, manifest and SHA256SUMS rewritten to match",
    deepOnly: true,
    apply: async (d) => {
      const f = await mainFile(d);
      const m = JSON.parse(await readFile(join(d, "manifest.json"), "utf8")) as { files: FileEntry[]; kind: string };
      if (m.kind === "database") {
        await writeFile(join(d, f), '{"format": 1, "entities": ');
      } else {
        await truncate(join(d, f), Math.floor(m.files.find((x) => x.name === f)!.size / 2));
      }
      const data = await readFile(join(d, f));
      await editManifest(d, (mm) => Object.assign(mm.files.find((x) => x.name === f)!, { size: data.length, sha256: sha(data) }), true);
      return f;
    },
  },
];

describe("corrupted backups", () => {
  const track = tracker();
  const inst = uniqueName("corr");
  const vol = uniqueName("corr-vol");
  let pristine: string;
  let rows: ListRow[];
  let live: { inst: Manifest; vol: Manifest; pid: number };
  const figures = { cases: 0, verifyCaught: 0, deepCaught: 0, restoreRefused: 0, restoreCases: 0 };

  beforeAll(async () => {
    await launchInstance(inst, { track });
    await writeTestData(inst, "/root/data", { sizeMiB: 1 });
    await createVolumeWithData("default", vol, { attachTo: inst, path: "/mnt/vol", sizeMiB: 1, track });
    pristine = await repoDir(track);
    await toolOk(["backup", "--instances", "--volumes", "--name", inst, "--name", vol, `--dir=${pristine}`]);
    await toolOk(["backup", "--database", `--dir=${pristine}`]);
    await toolOk(["backup", "--images", "--name", "busybox", `--dir=${pristine}`]);
    rows = await listJson(pristine);
    expect(rows.map((r) => r.type).sort()).toEqual(["database", "image", "instance", "volume"]);
    await toolOk(["verify", "--deep", `--dir=${pristine}`]);
    // The live items differ from the backup, so a restore that went through would show.
    await incusOk(["exec", inst, "--", "sh", "-c", "echo live >/root/data/live && echo live >/mnt/vol/live && sync"]);
    live = { inst: await checksumTree(inst, "/root/data"), vol: await checksumTree(inst, "/mnt/vol"), pid: await pid() };
  });
  afterAll(async () => {
    console.log(
      `corruption figures: ${figures.cases} damaged versions; verify caught ${figures.verifyCaught} of ${figures.cases - deepOnlyCount()} it can see, ` +
        `verify --deep ${figures.deepCaught} of ${figures.cases}; restore refused ${figures.restoreRefused} of ${figures.restoreCases}`,
    );
    await track.cleanup();
  });

  const deepOnlyCount = () => DAMAGES.filter((d) => d.deepOnly).length * 4;
  async function pid(): Promise<number> {
    return ((await apiGet(`/1.0/instances/${inst}/state`)) as { pid: number }).pid;
  }

  const kinds = ["instance", "volume", "image", "database"] as const;
  it.each(DAMAGES.flatMap((d) => kinds.map((k) => [`${k}: ${d.name}`, k, d] as const)))("%s", async (_label, kind, damage) => {
    const repo = await tempDir(track, "ibk-copy-");
    await cp(pristine, repo, { recursive: true });
    const row = rows.find((r) => r.type === kind)!;
    const versionDir = row.path.replace(pristine, repo);
    const file = await damage.apply(versionDir);
    figures.cases++;

    const verify = await tool(["verify", `--dir=${repo}`]);
    const deep = await tool(["verify", "--deep", "--json", `--dir=${repo}`]);
    const deepRows = JSON.parse(deep.stdout || "[]") as Array<{ ok: boolean; problems: string[]; path: string }>;
    const bad = deepRows.filter((r) => !r.ok);
    const said = `${verify.stdout}${verify.stderr}`;
    if (damage.deepOnly) {
      expect(verify.code, said).toBe(0);
    } else {
      expect(verify.code, said).toBe(INTEGRITY);
      expect(said).toContain(file);
      expect(said).toContain(row.version);
      figures.verifyCaught++;
    }
    expect(deep.code, deep.stdout + deep.stderr).toBe(INTEGRITY);
    expect(bad.length).toBe(1);
    expect(bad[0]!.path).toBe(versionDir);
    // An image's deep check hashes its files together into the fingerprint: it names them as one.
    expect(bad[0]!.problems.join(" ")).toContain(kind === "image" && damage.deepOnly ? "image files" : file);
    figures.deepCaught++;
    expect(`${verify.stdout}${verify.stderr}${deep.stdout}${deep.stderr}`).not.toMatch(/\n\s+at /);

    let restoreSaid = "";
    if ((kind === "instance" || kind === "volume") && !damage.deepOnly) {
      figures.restoreCases++;
      const before = await serverNames();
      const r = await tool(["restore", `--${kind}`, "--name", kind === "instance" ? inst : vol, "--force", `--dir=${repo}`]);
      restoreSaid = r.stderr.trim().split("\n").pop() ?? "";
      expect(r.code, r.stdout + r.stderr).toBe(INTEGRITY);
      expect(r.stderr).toContain(file);
      expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /);
      // Nothing changed: the same process, the same data, no temporary copies.
      expect(await pid()).toBe(live.pid);
      expect(await checksumTree(inst, "/root/data")).toEqual(live.inst);
      expect(await checksumTree(inst, "/mnt/vol")).toEqual(live.vol);
      expect(await serverNames()).toEqual(before);
      figures.restoreRefused++;
    }
    console.log(
      `${kind} ${row.version}, ${damage.name}: verify exit ${verify.code}${damage.deepOnly ? " (cannot see it)" : ""}, ` +
        `--deep exit ${deep.code}: ${bad[0]!.problems.join("; ").replace(repo, "REPO")}` +
        `${restoreSaid ? `; restore refused: ${restoreSaid.replace(repo, "REPO")}` : ""}`,
    );
  });

  async function serverNames(): Promise<string[]> {
    return [...(await allInstanceNames()), ...(await allVolumeNames())].filter((n) => n.startsWith("ibk-") || n === inst || n === vol).sort();
  }
});
