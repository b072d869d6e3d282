// backup --stop (vzdump's stop mode): the instance is down only while the server makes its backup,
// is running again afterwards, and is started again by the next run if the tool dies meanwhile.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { launchInstance, tracker, uniqueName, writeTestData } from "../lab/lab";
import { instanceStatus, repoDir } from "./helpers/server";
import { listJson, startTool, toolOk } from "./helpers/tool";

describe("backup --stop", () => {
  const track = tracker();
  afterAll(() => track.cleanup());

  it("stops the instance for its backup and starts it again", async () => {
    const name = uniqueName("stop-mode");
    await launchInstance(name, { track });
    const dir = await repoDir(track);
    await toolOk(["backup", "--instances", "--name", name, "--stop", "--dir", dir]);
    expect(await instanceStatus(name)).toBe("Running");
    const [row] = await listJson(dir);
    const manifest = JSON.parse(await readFile(join(row!.path, "manifest.json"), "utf8")) as { options: { stopped: boolean } };
    expect(manifest.options.stopped).toBe(true);
  });

  it("killed while the instance is down: the next run starts it again", async () => {
    const name = uniqueName("stop-kill");
    const other = uniqueName("stop-other");
    await launchInstance(name, { track });
    await launchInstance(other, { track, start: false });
    // Big enough that the server takes a moment to make the backup while the instance is down.
    await writeTestData(name, "/root/data", { sizeMiB: 150 });
    const dir = await repoDir(track);
    const run = startTool(["backup", "--instances", "--name", name, "--stop", "--dir", dir]);
    let down = false;
    for (let i = 0; i < 400 && !down; i++) {
      down = (await instanceStatus(name)) === "Stopped";
      if (!down) await new Promise((r) => setTimeout(r, 25));
    }
    expect(down).toBe(true);
    run.child.kill("SIGKILL");
    await run.done.catch(() => undefined);
    expect(await instanceStatus(name)).toBe("Stopped");

    // Any later run that writes to the repository finishes the job.
    const r = await toolOk(["backup", "--instances", "--name", other, "--dir", dir]);
    console.log(`after the kill: ${r.stderr.trim().split("\n").filter((l) => l.includes(name)).join(" | ")}`);
    expect(r.stderr).toContain("started again");
    expect(await instanceStatus(name)).toBe("Running");
  });
});
