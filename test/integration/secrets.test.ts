// Issue 6, security: secret values from the server's configuration (a server password, a
// profile's and an instance's password-like keys) are in the backup (that is its job; files are
// 0600), but never in what the tool prints or sends: command output, `status`, the daemon's log,
// its notifications, run records and state files. (Modes under any umask: cli-commands.test.ts
// and the kill tests; the container's privileges and listening sockets: deploy.test.ts.)
import { randomBytes } from "node:crypto";
import { readFile, readdir } from "node:fs/promises";
import { createServer, type IncomingMessage } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiGet, incusOk, launchInstance, tracker } from "../lab/lab";
import { isolatedServer, repoDir, wrongModes } from "./helpers/server";
import { startTool, toolOk } from "./helpers/tool";

describe("secrets from the server's configuration", () => {
  const track = tracker();
  const secret = (what: string) => `${what}-${randomBytes(8).toString("hex")}`;
  const secrets = {
    server: secret("srvpw"),
    serverNow: secret("srvpw2"),
    profile: secret("dbpw"),
    instance: secret("envpw"),
    token: secret("tok"),
    cloudInit: secret("cloudinit"),
    sshKey: secret("sshkey"),
  };
  let socket: string;
  let dir: string;
  /** Everything the tool printed, logged or sent, with where it came from. */
  const seen: Array<[string, string]> = [];
  const record = (where: string, r: { stdout: string; stderr: string }) => seen.push([where, `${r.stdout}\n${r.stderr}`]);

  beforeAll(async () => {
    socket = await isolatedServer(track);
    const on = { socket };
    await incusOk(["config", "set", "loki.auth.password", secrets.server], on);
    await incusOk(["profile", "set", "default", "user.db_password", secrets.profile], on);
    // cloud-init data and environment keys named like a key are secrets too (issue 13).
    await incusOk(["profile", "set", "default", "cloud-init.user-data", `#cloud-config\npassword: ${secrets.cloudInit}\n`], on);
    await incusOk(["profile", "set", "default", "environment.SSH_KEY", secrets.sshKey], on);
    await launchInstance("web", { socket, config: { "environment.DB_PASSWORD": secrets.instance, "user.api_token": secrets.token } });
    dir = await repoDir(track);
  });
  afterAll(() => track.cleanup());

  const leaks = (text: string) => Object.entries(secrets).filter(([, v]) => text.includes(v)).map(([k]) => k);

  it("commands print none of them: backup, list, verify, status, restore --database (plan and changes)", async () => {
    record("backup --all", await toolOk(["backup", "--all", `--dir=${dir}`], { socket }));
    // The backup itself holds them (so the absence below means something), privately.
    const dbVersion = (await readdir(join(dir, "database")))[0]!;
    const config = await readFile(join(dir, "database", dbVersion, "config.json"), "utf8");
    expect(leaks(config)).toEqual(expect.arrayContaining(["server", "profile"]));
    expect(await wrongModes(dir)).toEqual([]);

    for (const args of [["list"], ["list", "--json"], ["list", "--instances", "--name", "web", "--json"], ["verify", "--deep"], ["verify", "--json"], ["status"], ["status", "--json"]]) {
      record(args.join(" "), await toolOk([...args, `--dir=${dir}`], { socket }));
    }
    // The server's password changes; the restore's plan says so without saying what it was or is.
    await incusOk(["config", "set", "loki.auth.password", secrets.serverNow], { socket });
    await incusOk(["profile", "set", "default", "user.db_password", "changed"], { socket });
    await incusOk(["profile", "set", "default", "cloud-init.user-data", "#cloud-config\n"], { socket });
    await incusOk(["profile", "unset", "default", "environment.SSH_KEY"], { socket });
    const plan = await toolOk(["restore", "--database", "--server-config", "--dry-run", `--dir=${dir}`], { socket });
    record("restore --database --dry-run", plan);
    expect(plan.stdout).toMatch(/config\.loki\.auth\.password: \(secret value changed\)/);
    expect(plan.stdout).toMatch(/config\.user\.db_password: \(secret value changed\)/);
    expect(plan.stdout).toMatch(/config\.cloud-init\.user-data: \(secret value changed\)/);
    expect(plan.stdout).toMatch(/config\.environment\.SSH_KEY: \(secret value added\)/);
    record("restore --database --force", await toolOk(["restore", "--database", "--server-config", "--force", `--dir=${dir}`], { socket }));
    expect((await apiGet("/1.0", { socket })).config["loki.auth.password"]).toBe(secrets.server);
    const found = seen.flatMap(([where, text]) => leaks(text).map((k) => `${k} in ${where}`));
    console.log(`secrets: ${seen.length} command outputs checked for ${Object.keys(secrets).length} secret values: ${found.length ? found.join(", ") : "none found"}`);
    expect(found).toEqual([]);
  });

  it("the daemon's log, its notifications, status, run records and state files contain none of them", async () => {
    const bodies: string[] = [];
    const receiver = createServer((q: IncomingMessage, s) => {
      let b = "";
      q.on("data", (c: Buffer) => (b += c.toString()));
      q.on("end", () => {
        bodies.push(b);
        s.end("ok");
      });
    });
    await new Promise<void>((res) => receiver.listen(0, "127.0.0.1", res));
    track.defer(() => new Promise<void>((res) => receiver.close(() => res())));
    const port = (receiver.address() as { port: number }).port;
    const env = {
      INCUS_BACKUP_DIR: dir,
      INCUS_BACKUP_TZ: "UTC",
      INCUS_BACKUP_SCHEDULE: "*/3 * * * * *",
      INCUS_BACKUP_VERIFY_SCHEDULE: "*/4 * * * * *",
      INCUS_BACKUP_VERIFY_DEEP: "true",
      INCUS_BACKUP_KEEP_LAST: "2",
      INCUS_BACKUP_NOTIFY_URL: `http://127.0.0.1:${port}/hook/${secret("urlpath")}`,
      INCUS_BACKUP_NOTIFY: "always",
    };
    const daemon = startTool(["daemon"], { socket, env, timeoutMs: 120_000 });
    const kinds = () => bodies.map((b) => (JSON.parse(b) as { kind: string }).kind);
    const t0 = Date.now();
    while (!(kinds().includes("backup") && kinds().includes("verify"))) {
      if (Date.now() - t0 > 60_000) throw new Error(`no backup and verify notifications within 60 s; log:\n${daemon.output().stdout}`);
      if (daemon.child.exitCode !== null) throw new Error(`the daemon ended: ${daemon.output().stderr}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    daemon.child.kill("SIGTERM");
    const done = await daemon.done;
    // 0 when stopped while idle, 130 when a run was cut short.
    expect([0, 130], done.stderr).toContain(done.code);
    // The service was just stopped: status says so (exit 12); only its output matters here.
    const status = await toolOk(["status", `--dir=${dir}`], { socket, env }, 12);
    const statusJson = await toolOk(["status", "--json", `--dir=${dir}`], { socket, env }, 12);
    const files: Array<[string, string]> = [];
    for (const sub of ["runs", "state"]) {
      for (const f of await readdir(join(dir, sub))) files.push([`${sub}/${f}`, await readFile(join(dir, sub, f), "utf8")]);
    }
    const sources: Array<[string, string]> = [
      ["the daemon's log", `${done.stdout}\n${done.stderr}`],
      ...bodies.map((b, i): [string, string] => [`notification ${i + 1} (${kinds()[i]})`, b]),
      ["status", status.stdout + status.stderr],
      ["status --json", statusJson.stdout + statusJson.stderr],
      ...files,
    ];
    const found = sources.flatMap(([where, text]) => leaks(text).map((k) => `${k} in ${where}`));
    console.log(
      `secrets: the daemon ran ${Date.now() - t0} ms, sent ${bodies.length} notification(s) (${[...new Set(kinds())].join(", ")}); ` +
        `checked its log, the notifications, status, ${files.length} run and state file(s): ${found.length ? found.join(", ") : "none found"}`,
    );
    expect(found).toEqual([]);
    // The webhook's path is a secret of its own: the log shows scheme and host only.
    expect(done.stdout).not.toContain(env.INCUS_BACKUP_NOTIFY_URL);
    expect(done.stdout).toContain(`notified http://127.0.0.1:${port}/`);
  });
});
