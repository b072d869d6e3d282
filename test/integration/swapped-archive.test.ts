// A backup archive replaced by another item's, with manifest.json and SHA256SUMS rewritten to
// match: every checksum agrees, but the archive's own index names another instance. Restore
// refuses it before anything changes.
import { createHash } from "node:crypto";
import { copyFile, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { checksumTree, launchInstance, tracker, uniqueName, writeTestData } from "../lab/lab";
import { repoDir } from "./helpers/server";
import { listJson, tool, toolOk } from "./helpers/tool";

describe("a swapped archive with a consistent manifest", () => {
  const track = tracker();
  afterAll(() => track.cleanup());

  it("is refused by restore (exit 9), naming what the archive holds; the instance is untouched", async () => {
    const a = uniqueName("swap-a");
    const b = uniqueName("swap-b");
    await launchInstance(a, { track });
    await launchInstance(b, { track });
    const dataA = await writeTestData(a, "/root/data", { sizeMiB: 1 });
    await writeTestData(b, "/root/data", { sizeMiB: 1 });
    const dir = await repoDir(track);
    await toolOk(["backup", "--instances", "--name", a, "--name", b, "--dir", dir]);
    const rows = await listJson(dir);
    const rowA = rows.find((r) => r.name === a)!;
    const rowB = rows.find((r) => r.name === b)!;

    // Put B's archive in A's version and make manifest.json and SHA256SUMS agree with it.
    const archive = "instance.tar.zst";
    await copyFile(join(rowB.path, archive), join(rowA.path, archive));
    const bytes = await readFile(join(rowA.path, archive));
    const sha = createHash("sha256").update(bytes).digest("hex");
    const manifestPath = join(rowA.path, "manifest.json");
    const manifest = JSON.parse(await readFile(manifestPath, "utf8")) as { files: Array<{ name: string; size: number; sha256: string }> };
    for (const f of manifest.files) if (f.name === archive) Object.assign(f, { size: bytes.length, sha256: sha });
    const text = JSON.stringify(manifest, null, 2) + "\n";
    await writeFile(manifestPath, text);
    const sums = [...manifest.files.map((f) => `${f.sha256}  ${f.name}`), `${createHash("sha256").update(text).digest("hex")}  manifest.json`];
    await writeFile(join(rowA.path, "SHA256SUMS"), sums.join("\n") + "\n");
    expect((await tool(["verify", "--instance", "--name", a, "--dir", dir])).code).toBe(0);

    const r = await tool(["restore", "--instance", "--name", a, "--dir", dir, "--force"]);
    console.log(`swapped archive: restore exit ${r.code}: ${r.stdout.trim().split("\n").at(-1)}`);
    expect(r.code).toBe(9);
    expect(r.stdout + r.stderr).toContain(`holds a backup of "${b}"`);
    expect(await checksumTree(a, "/root/data")).toEqual(dataA);
    expect((await tool(["verify", "--deep", "--instance", "--name", a, "--dir", dir])).code).toBe(9);
  });
});
