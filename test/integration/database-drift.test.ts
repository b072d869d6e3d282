// The database backup (issue 4): its files, `list --database`, and `restore --database` after the
// server drifted: field-level plan, refusal without a terminal, --force, and secrets never shown.
//
// `restore --database` acts on the whole server, so the server is an extra one of its own.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tracker } from "../lab/lab";
import { configObjects, extraServer, query } from "./helpers/config-objects";
import { repoDir } from "./helpers/server";
import { listJson, toolOk, type ToolResult } from "./helpers/tool";

type Obj = Record<string, unknown>;

describe("restore --database after drift", () => {
  const track = tracker();
  let socket: string;
  let repo: string;
  const net = `ibkdd${Math.random().toString(36).slice(2, 10)}`.slice(0, 15);
  const rnd = () => Math.random().toString(36).slice(2, 12);
  // Secret-looking values: a server key Incus 6.0 takes without side effects (no Loki URL is set,
  // so nothing connects anywhere) and a profile key named like a password.
  const secrets = { server: `srv-${rnd()}`, serverNow: `srv2-${rnd()}`, profile: `db-${rnd()}`, profileNow: `db2-${rnd()}` };
  const outputs: ToolResult[] = [];
  let backedUp: Record<string, Obj>;
  let drifted: Record<string, Obj>;

  const run = async (args: string[], code = 0) => {
    const r = await toolOk(args, { socket }, code);
    outputs.push(r);
    return r;
  };
  const serverConfig = async () => (await query<{ config: Record<string, string> }>(socket, "/1.0")).config;

  beforeAll(async () => {
    socket = (await extraServer(track)).socket;
    repo = await repoDir(track);
    await query(socket, "/1.0/networks", "POST", {
      name: net,
      type: "bridge",
      description: "drift net",
      config: { "ipv4.address": "none", "ipv6.address": "none", "user.tier": "1", "user.keep": "yes" },
    });
    await query(socket, "/1.0/profiles", "POST", {
      name: "web",
      description: "web v1",
      config: { "environment.APP": "v1", "user.removed": "soon", "user.db_password": secrets.profile },
      devices: { eth0: { type: "nic", network: net, name: "eth0" } },
    });
    await query(socket, "/1.0/profiles", "POST", { name: "gone", description: "deleted after the backup", config: { "user.x": "1" } });
    await query(socket, "/1.0", "PATCH", { config: { "loki.auth.password": secrets.server } });

    await run(["backup", "--database", `--dir=${repo}`]);
    await run(["backup", "--config", `--dir=${repo}`]);
    backedUp = await configObjects(socket);

    // The drift: a profile and a network changed, a profile deleted, one added, the secrets changed.
    await query(socket, "/1.0/profiles/web", "PUT", {
      description: "web v2",
      config: { "environment.APP": "v2", "user.added": "new", "user.db_password": secrets.profileNow },
      devices: { eth0: { type: "nic", network: net, name: "eth1" }, extra: { type: "none" } },
    });
    await query(socket, `/1.0/networks/${net}`, "PUT", {
      description: "drift net v2",
      config: { "ipv4.address": "none", "ipv6.address": "none", "user.tier": "2", "user.extra": "x" },
    });
    await query(socket, "/1.0/profiles/gone", "DELETE");
    await query(socket, "/1.0/profiles", "POST", { name: "newer", description: "made after the backup", config: {} });
    await query(socket, "/1.0", "PATCH", { config: { "loki.auth.password": secrets.serverNow } });
    drifted = await configObjects(socket);
  });
  afterAll(() => track.cleanup());

  it("keeps both SQL dumps beside the declarative export, private and non-empty", async () => {
    const rows = await listJson(repo, "--database");
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      expect(row).toMatchObject({ type: "database", project: "", name: "server" });
      for (const file of ["config.json", "global.sql", "local.sql"]) {
        const st = await stat(join(row.path, file));
        expect(st.size, file).toBeGreaterThan(0);
        expect(st.mode & 0o777, file).toBe(0o600);
      }
    }
    const global = await readFile(join(rows[0]!.path, "global.sql"), "utf8");
    const local = await readFile(join(rows[0]!.path, "local.sql"), "utf8");
    expect(global).toMatch(/CREATE TABLE/);
    expect(global).toContain("drift net");
    expect(local).toMatch(/CREATE TABLE/);
  });

  it("lists the database versions", async () => {
    const versions = (await listJson(repo, "--database")).map((r) => r.version).sort();
    expect(versions).toHaveLength(2);
    expect(versions[0]).not.toBe(versions[1]);
    const table = (await run(["list", "--database", `--dir=${repo}`])).stdout.trimEnd().split("\n");
    expect(table[0]!.trim().split(/\s{2,}/)).toEqual(["TYPE", "PROJECT", "NAME", "VERSIONS", "LATEST", "SIZE"]);
    // The database has no project: that cell is blank.
    expect(table.slice(1).map((l) => l.trim().split(/\s{2,}/))).toEqual([["database", "-", "2", versions[1], expect.stringMatching(/ KiB$/)]]);
  });

  it("plans field-level changes and, without a terminal or --force, refuses and changes nothing", async () => {
    const r = await run(["restore", "--database", `--dir=${repo}`], 6);
    const lines = r.stdout.split("\n");
    const block = (head: RegExp) => {
      const at = lines.findIndex((l) => head.test(l));
      expect(at, `${head} in:\n${r.stdout}`).toBeGreaterThanOrEqual(0);
      const out: string[] = [];
      for (let i = at + 1; i < lines.length && /^ {13}\S/.test(lines[i]!); i++) out.push(lines[i]!.trim());
      return out;
    };
    expect(block(new RegExp(`^  UPDATE +network default/${net}:$`))).toEqual([
      "config.user.extra: x -> (unset)",
      "config.user.keep: (unset) -> yes",
      "config.user.tier: 2 -> 1",
      "description: drift net v2 -> drift net",
    ]);
    expect(block(/^ {2}UPDATE +profile default\/web:$/)).toEqual([
      "config.environment.APP: v2 -> v1",
      "config.user.added: new -> (unset)",
      "config.user.db_password: (secret value changed)",
      "config.user.removed: (unset) -> soon",
      "description: web v2 -> web v1",
      "devices.eth0.name: eth1 -> eth0",
      "devices.extra: type=none -> (unset)",
    ]);
    expect(r.stdout).toMatch(/^ {2}create +profile default\/gone$/m);
    expect(r.stdout).toMatch(/^ {2}keep +profile default\/newer \(not in the backup; left alone\)$/m);
    // The server configuration is opt-in.
    expect(r.stdout).not.toContain("server configuration");
    expect(r.stderr).toMatch(/^error: .*no terminal to ask; nothing was changed.*--force/m);
    expect(await configObjects(socket)).toEqual(drifted);
  });

  it("shows that a secret in the server configuration changes, never its value", async () => {
    const r = await run(["restore", "--database", "--server-config", `--dir=${repo}`], 6);
    expect(r.stdout).toMatch(/^ {2}UPDATE +server configuration:\n {13}config\.loki\.auth\.password: \(secret value changed\)$/m);
    expect((await serverConfig())["loki.auth.password"]).toBe(secrets.serverNow);
    expect(await configObjects(socket)).toEqual(drifted);
  });

  it("with --force, puts the objects and the secrets back and leaves the newer profile alone", async () => {
    const r = await run(["restore", "--database", "--server-config", "--force", `--dir=${repo}`]);
    expect(r.stdout).toMatch(/^configuration: \d+ change\(s\) applied$/m);
    expect(await configObjects(socket)).toEqual({ ...backedUp, "profile default/newer": drifted["profile default/newer"] });
    expect((backedUp["profile default/web"]!.config as Record<string, string>)["user.db_password"]).toBe(secrets.profile);
    expect((await serverConfig())["loki.auth.password"]).toBe(secrets.server);

    // Nothing left to do: a second run plans no change.
    const again = await run(["restore", "--database", "--server-config", "--dry-run", `--dir=${repo}`]);
    expect(again.stdout).not.toMatch(/UPDATE|create /);
    expect(again.stdout).toMatch(/same +\d+ object\(s\) already as in the backup/);
  });

  it("never printed a secret value", () => {
    expect(outputs.length).toBeGreaterThanOrEqual(6);
    const all = outputs.map((o) => o.stdout + o.stderr).join("\n");
    for (const value of Object.values(secrets)) expect(all).not.toContain(value);
  });
});
