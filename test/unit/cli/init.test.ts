// `init`, the only way a repository is made: an empty directory, idempotent, safe against itself.

import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli";
import { tempDir } from "../helpers/repo";

describe("init", () => {
  it("makes an empty directory a repository with a random id, and says so in JSON", async () => {
    const dir = await tempDir();
    const r = await runCli(["init", "--dir", dir, "--json"]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { location: string; id: string; created: boolean };
    // No backup yet: no server recorded (the first backup records its own).
    expect(j).toEqual({ location: dir, id: expect.stringMatching(/^[0-9a-f]{16}$/), created: true, server: null });
    expect(await readdir(dir)).toEqual(["incus-backup.json"]);
    expect(JSON.parse(await readFile(join(dir, "incus-backup.json"), "utf8"))).toMatchObject({ format: "incus-backup", version: 1, id: j.id });
    const text = await runCli(["init", "--dir", dir]);
    expect(text).toMatchObject({ code: 0, stdout: `${dir} is an incus-backup repository already (id ${j.id})\n` });
  });

  it("leaves a repository that exists as it is (the same id), so install.sh can run it every time", async () => {
    const dir = await tempDir();
    const first = JSON.parse((await runCli(["init", "--dir", dir, "--json"])).stdout) as { id: string };
    const again = JSON.parse((await runCli(["init", "--dir", dir, "--json"])).stdout) as { id: string; created: boolean };
    expect(again).toMatchObject({ id: first.id, created: false });
  });

  it("of many at once on one directory, exactly one makes it, and all end well with its id", async () => {
    const dir = await tempDir();
    const runs = await Promise.all(Array.from({ length: 8 }, () => runCli(["init", "--dir", dir, "--json"])));
    expect(runs.map((r) => r.code)).toEqual(Array(8).fill(0));
    const results = runs.map((r) => JSON.parse(r.stdout) as { id: string; created: boolean });
    expect(results.filter((x) => x.created)).toHaveLength(1);
    expect(new Set(results.map((x) => x.id)).size).toBe(1);
    expect(await readdir(dir)).toEqual(["incus-backup.json"]);
  });

  it("refuses a directory with other things in it, and a missing one (exit 8), writing nothing", async () => {
    const dir = await tempDir();
    await writeFile(join(dir, "photos.tar"), "mine");
    const r = await runCli(["init", "--dir", dir]);
    expect(r.code).toBe(8);
    expect(r.stderr).toMatch(/is not an incus-backup repository \(no incus-backup\.json\) and is not empty/);
    expect(await readdir(dir)).toEqual(["photos.tar"]);
    const missing = await runCli(["init", "--dir", join(dir, "not-mounted")]);
    expect(missing.code).toBe(8);
    expect(missing.stderr).toMatch(/cannot open backup directory .*not-mounted: no such file or directory/);
  });

  it("gives a repository made before repositories had ids one, keeping the rest of its marker", async () => {
    const dir = await tempDir();
    await mkdir(join(dir, "instances"));
    await writeFile(join(dir, "incus-backup.json"), JSON.stringify({ format: "incus-backup", version: 1, created: "2025-01-01T00:00:00.000Z" }));
    const r = JSON.parse((await runCli(["init", "--dir", dir, "--json"])).stdout) as { id: string; created: boolean };
    expect(r).toMatchObject({ id: expect.stringMatching(/^[0-9a-f]{16}$/), created: false });
    expect(JSON.parse(await readFile(join(dir, "incus-backup.json"), "utf8"))).toEqual({ format: "incus-backup", version: 1, created: "2025-01-01T00:00:00.000Z", id: r.id });
  });
});
