// The container the tool runs in (INCUS_BACKUP_SELF): left out of backups unless named, never replaced by a restore.
import { afterAll, describe, expect, it } from "vitest";
import { apiGet, launchInstance, tracker, uniqueName } from "../lab/lab";
import { isolatedServer, repoDir } from "./helpers/server";
import { listJson, tool, toolOk } from "./helpers/tool";

describe("the tool's own container", () => {
  const track = tracker();
  afterAll(() => track.cleanup());

  it("is left out of `backup --instances`, backed up when named, and never replaced by a restore", async () => {
    // Kind-wide commands take everything a server has: a server of its own.
    const socket = await isolatedServer(track);
    const self = uniqueName("self");
    const other = uniqueName("other");
    await launchInstance(self, { socket });
    await launchInstance(other, { socket });
    const env = { INCUS_BACKUP_SELF: `default/${self}` };

    const all = await repoDir(track);
    const r = await toolOk(["backup", "--instances", "--dir", all], { socket, env });
    expect(r.stderr).not.toContain(`instance default/${self} `);
    expect((await listJson(all)).map((row) => row.name)).toEqual([other]);

    const named = await repoDir(track);
    await toolOk(["backup", "--instances", "--name", self, "--dir", named], { socket, env });
    expect((await listJson(named)).map((row) => row.name)).toEqual([self]);

    const before = (await apiGet(`/1.0/instances/${self}`, { socket })).created_at;
    const refused = await tool(["restore", "--instance", "--name", self, "--dir", named, "--force"], { socket, env });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/not replacing instance default\/\S+: it is the container running this restore/);
    expect((await apiGet(`/1.0/instances/${self}`, { socket })).created_at).toBe(before);

    // Under another name it is just a copy.
    const copy = uniqueName("self-copy");
    await toolOk(["restore", "--instance", "--name", self, "--target-name", copy, "--dir", named, "--no-start"], { socket, env });
    expect((await apiGet(`/1.0/instances/${copy}`, { socket })).name).toBe(copy);
  });
});
