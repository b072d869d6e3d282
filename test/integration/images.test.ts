// Images (issue 4): a split and a unified image backed up by alias, deleted, restored with the same
// fingerprints and aliases; a second restore is a no-op; a moved alias needs confirmation; a name
// the backup does not have is refused with a list of what it has.
//
// On the lab's main daemon: every command names its images, so nothing else there is touched.
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { incusOk, labSocket, tracker, uniqueName } from "../lab/lab";
import { buildTestImages, imageObjects, importImage, query } from "./helpers/config-objects";
import { repoDir } from "./helpers/server";
import { listJson, toolOk } from "./helpers/tool";

describe("images", () => {
  const track = tracker();
  const socket = labSocket();
  let repo: string;
  const alias = { split: uniqueName("img-split"), split2: uniqueName("img-split-two"), unified: uniqueName("img-unified") };
  const fp = { split: "", unified: "" };
  let before: Record<string, unknown>;

  const run = (args: string[], code = 0) => toolOk([...args, `--dir=${repo}`], { socket }, code);
  const ours = async () => {
    const all = await imageObjects(socket);
    return Object.fromEntries(Object.entries(all).filter(([k]) => k === `default/${fp.split}` || k === `default/${fp.unified}`));
  };
  const aliasTarget = async (name: string) => (await query<{ target: string }>(socket, `/1.0/images/aliases/${name}`)).target;

  beforeAll(async () => {
    const built = await buildTestImages(uniqueName("img"), track);
    fp.split = track.image(await importImage([built.split.meta, built.split.rootfs], { socket, aliases: [alias.split, alias.split2] }));
    fp.unified = track.image(await importImage([built.unified], { socket, aliases: [alias.unified], public: true }));
    await query(socket, `/1.0/images/aliases/${alias.split2}`, "PUT", { description: "second name", target: fp.split });
    await query(socket, `/1.0/images/${fp.unified}`, "PATCH", { properties: { ...(await query<{ properties: object }>(socket, `/1.0/images/${fp.unified}`)).properties, "user.kind": "unified" } });
    before = await ours();
    expect(Object.keys(before)).toHaveLength(2);

    repo = await repoDir(track);
    await run(["backup", "--images", "--name", alias.split, "--name", alias.unified]);
    for (const f of Object.values(fp)) await incusOk(["image", "delete", f], { socket });
  });
  afterAll(() => track.cleanup());

  it("keeps a split image as metadata + rootfs and a unified one as one tarball", async () => {
    const rows = await listJson(repo, "--images");
    expect(rows.map((r) => r.name).sort()).toEqual([fp.split, fp.unified].sort());
    const files = async (f: string) => {
      const row = rows.find((r) => r.name === f)!;
      const m = JSON.parse(await readFile(join(row.path, "manifest.json"), "utf8")) as { files: Array<{ name: string }>; aliases: string[] };
      return { files: m.files.map((x) => x.name).sort(), aliases: m.aliases.sort() };
    };
    expect(await files(fp.split)).toEqual({ files: ["image.metadata", "image.rootfs"], aliases: [alias.split, alias.split2].sort() });
    expect(await files(fp.unified)).toEqual({ files: ["image.tarball"], aliases: [alias.unified] });
  });

  it("restores both with the same fingerprints, aliases and settings; the split one stays split", async () => {
    const r = await run(["restore", "--image", "--name", alias.split, "--name", alias.unified]);
    expect(r.stdout).toMatch(new RegExp(`create +image default/${alias.split} .*add alias ${alias.split}, add alias ${alias.split2}`));
    expect(r.stdout).toContain("restore: 2 of 2 item(s) restored");
    expect(await ours()).toEqual(before);
    expect(await aliasTarget(alias.split2)).toBe(fp.split);

    // Exported again, the split image comes as two files, the unified one as one.
    const dir = await mkdtemp(join(tmpdir(), "ibk-export-"));
    track.defer(() => rm(dir, { recursive: true, force: true }));
    for (const kind of ["split", "unified"] as const) {
      await mkdir(join(dir, kind));
      await incusOk(["image", "export", fp[kind], join(dir, kind, "image")], { socket });
    }
    expect(await readdir(join(dir, "split"))).toHaveLength(2);
    expect(await readdir(join(dir, "unified"))).toHaveLength(1);
  });

  it("restoring an image that is already there is a no-op, and says so", async () => {
    const uploaded = (await query<{ uploaded_at: string }>(socket, `/1.0/images/${fp.split}`)).uploaded_at;
    const r = await run(["restore", "--image", "--name", alias.split, "--name", fp.unified]);
    expect(r.stdout).toMatch(new RegExp(`keep +image default/${alias.split} already on the server \\(same fingerprint\\): not uploaded$`, "m"));
    expect(r.stdout).toMatch(new RegExp(`keep +image default/${alias.unified} already on the server \\(same fingerprint\\): not uploaded$`, "m"));
    expect(r.stderr).toContain(`image ${fp.split.slice(0, 12)} is already on the server (same fingerprint, same content): not uploaded again`);
    expect(r.stdout).toContain("restore: 2 of 2 item(s) restored");
    expect((await query<{ uploaded_at: string }>(socket, `/1.0/images/${fp.split}`)).uploaded_at).toBe(uploaded);
    expect(await ours()).toEqual(before);
  });

  it("moving back an alias that points elsewhere now needs confirmation", async () => {
    await query(socket, `/1.0/images/aliases/${alias.split2}`, "PUT", { description: "moved", target: fp.unified });
    const refused = await run(["restore", "--image", "--name", fp.split], 6);
    expect(refused.stdout).toMatch(new RegExp(`REPLACE +image default/${alias.split} .*MOVE alias ${alias.split2} from ${fp.unified.slice(0, 12)}`));
    expect(refused.stderr).toContain("nothing was changed");
    expect(await aliasTarget(alias.split2)).toBe(fp.unified);

    await run(["restore", "--image", "--name", fp.split, "--force"]);
    expect(await aliasTarget(alias.split2)).toBe(fp.split);
    expect(await ours()).toEqual(before);
  });

  it("an image the backup does not have: exit 5, naming the images it has", async () => {
    for (const missing of [uniqueName("no-such-alias"), "0123456789abcdef".repeat(4)]) {
      const r = await run(["restore", "--image", "--name", missing], 5);
      expect(r.stderr).toContain(missing);
      expect(r.stderr).toContain(alias.split);
      expect(r.stderr).toContain(alias.unified);
      expect(r.stderr).toContain(fp.unified.slice(0, 12));
    }
  });
});
