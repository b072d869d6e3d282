// The shipped service with a restic repository, with the lab as the "host": install.sh --repo
// restic:..., the password and credentials in a state volume (never in the config or a log), the
// upgrade that keeps them, --ssh-dir, and uninstall keeping the volume.
//
// As in deploy.test.ts: install.sh runs in the lab container with the incus CLI, the NAS is a
// directory there, and everything happens on an extra incusd of its own in the lab, removed with
// all it holds at the end.
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  apiGet,
  execRead,
  incus,
  incusOk,
  labEnv,
  labRead,
  labShell,
  labShellCaptured,
  launchInstance,
  startExtraServer,
  stopExtraServer,
  tracker,
  uniqueName,
  writeTestData,
} from "../lab/lab";
import { DEPLOY, ROOT, quote, runHost, seconds, toolIn } from "./helpers/deploy";

describe("deploy with a restic repository: install.sh --repo restic:..., the secrets in a state volume, upgrade", () => {
  const track = tracker();
  const server = `rst${randomBytes(4).toString("hex")}`;
  const incusDir = `/var/lib/incus-${server}`;
  const deployDir = `${DEPLOY}-restic`;
  const name = uniqueName("ibk-rst");
  const nas = `/srv/nas-${name}`;
  const web = uniqueName("web");
  const stateDir = "/var/lib/incus-backup";
  // The secrets: none of them may show up in install.sh's output, the Incus config or a log.
  const password = `pw-${randomBytes(12).toString("hex")}`;
  const awsSecret = `aws-${randomBytes(12).toString("hex")}`;
  const marker = `m-${randomBytes(6).toString("hex")}`;
  const passwordFile = `${deployDir}/restic-password`;
  const envFile = `${deployDir}/restic.env`;
  const sshDir = `${deployDir}/ssh`;
  const repoArgs = ["--dir", nas, "--repo", "restic:/backups/restic", "--name", name, "--nas-mode", "shift"];
  let socket: string;
  let imageFingerprint: string;
  let repoId: string;
  let firstVersion: string;
  const on = () => ({ socket });

  const deploy = (script: string, args: string[], allowFail = false) =>
    labShellCaptured(`cd ${deployDir} && INCUS_DIR=${incusDir} bash ${script} ${args.map(quote).join(" ")}`, { allowFail, timeoutMs: 300_000 });
  const tool = (args: string[], allowFail = false) => toolIn(name, socket, args, { timeoutMs: 300_000, allowFail });
  // A read in the container, with execRead's end marker: `incus exec` without a terminal now and
  // then loses a quick command's output (seen in CI on sha256sum of a small file).
  const inContainer = (cmd: string) => execRead(name, ["sh", "-c", cmd], on());
  const config = async () => (await apiGet(`/1.0/instances/${name}`, on())) as { config: Record<string, string>; status: string };
  const build = (args: string[] = []) => runHost("bash", [join(ROOT, "image/build.sh"), ...args], labEnv(socket));
  /** The daemon's environment (what the wrapper gave it at start-up), one VAR=value a line. */
  const daemonEnv = () =>
    inContainer(`for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null | grep -q 'incus-backup.mjs daemon' && tr '\\0' '\\n' <$p/environ; done; true`);
  const daemonStarted = async () => (await inContainer(`ls -d ${stateDir}/restic-*/state >/dev/null && cat ${stateDir}/restic-*/state/daemon.json`)).match(/"started": "([^"]+)"/)?.[1];
  const noSecrets = (text: string) => {
    expect(text).not.toContain(password);
    expect(text).not.toContain(awsSecret);
  };
  const listed = async () => {
    const r = await tool(["list", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    noSecrets(r.stdout + r.stderr);
    return r.stdout;
  };

  beforeAll(async () => {
    const t0 = performance.now();
    track.defer(() => stopExtraServer(server));
    track.defer(() => labShell(`rm -rf ${nas} ${deployDir}`));
    socket = await startExtraServer(server);
    const tmp = await mkdtemp(join(tmpdir(), "ibk-deploy-restic-"));
    track.defer(() => rm(tmp, { recursive: true, force: true }));
    await incusOk(["image", "export", "busybox", join(tmp, "busybox")]);
    await incusOk(["image", "import", join(tmp, "busybox"), join(tmp, "busybox.root"), "--alias", "busybox"], on());
    const b = await build();
    if (b.code !== 0) throw new Error(`image/build.sh failed: ${b.stderr}`);
    imageFingerprint = b.stdout.trim();
    await labShell(`mkdir -p ${deployDir} ${nas} && chmod 0700 ${nas} ${deployDir}`);
    for (const f of ["install.sh", "uninstall.sh"]) {
      await labShell(`cat > ${deployDir}/${f}`, { input: await readFile(join(ROOT, "deploy", f)) });
    }
    // The secrets as an admin keeps them on the host: written through stdin, never on a command line.
    await labShell(`umask 077 && cat > ${passwordFile}`, { input: `${password}\n` });
    await labShell(`umask 077 && cat > ${envFile}`, { input: `# backend credentials\nAWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY='${awsSecret}'\nINCUS_BACKUP_TEST_MARKER=${marker}\n` });
    await labShell(`umask 077 && mkdir -p ${sshDir} && printf 'Host nas2\\n  User backup\\n  IdentityFile ~/.ssh/id_ed25519\\n' > ${sshDir}/config && echo 'not a real key' > ${sshDir}/id_ed25519 && echo 'nas2 ssh-ed25519 AAAA' > ${sshDir}/known_hosts && chmod 0644 ${sshDir}/config`);
    await launchInstance(web, { socket });
    await writeTestData(web, "/root/data", { sizeMiB: 1, socket });
    console.log(`setup: ${seconds(t0)} s`);
  });
  afterAll(async () => {
    await deploy("uninstall.sh", ["--name", name], true);
    await track.cleanup();
  });

  it("a restic repository without --restic-password-file on a first install: one error line, nothing created; other misuses are refused the same way", async () => {
    const fresh = uniqueName("ibk-nopw");
    const r = await deploy("install.sh", ["--dir", nas, "--repo", "restic:/backups/restic", "--name", fresh], true);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe("");
    expect(r.stderr.trim().split("\n")).toEqual(["install: error: --restic-password-file FILE is required to set up a restic repository (later runs keep the installed one)"]);
    expect((await incus(["info", fresh], { ...on(), allowFail: true })).code).not.toBe(0);
    expect((await incus(["profile", "show", `incus-backup-${fresh}`], { ...on(), allowFail: true })).code).not.toBe(0);
    expect((await incus(["storage", "volume", "show", "default", `${fresh}-state`], { ...on(), allowFail: true })).code).not.toBe(0);
    expect((await labRead(`ls -A ${nas}`)).trim()).toBe("");

    const refused: Array<[string[], RegExp]> = [
      [["--repo", "restic:/backups/restic", "--restic-password-file", passwordFile], /is a local path: it needs --dir HOSTPATH/],
      [["--dir", nas, "--repo", "restic:/srv/restic", "--restic-password-file", passwordFile], /a local restic repository must be under \/backups/],
      [["--dir", nas, "--repo", "/backups/restic", "--restic-password-file", passwordFile], /--repo must be restic:LOCATION/],
      [["--repo", "restic:rest:https://u:hunter2@nas2:8000/incus", "--restic-password-file", passwordFile], /put no password in the location/],
      [["--dir", nas, "--restic-password-file", passwordFile], /--restic-password-file is for a restic repository/],
      [["--repo", "restic:sftp:nas2:/srv/restic", "--restic-password-file", `${deployDir}/missing`], /is not a readable file/],
    ];
    for (const [args, message] of refused) {
      const bad = await deploy("install.sh", [...args, "--name", fresh], true);
      expect(bad.code, args.join(" ")).not.toBe(0);
      expect(bad.stderr.trim().split("\n"), args.join(" ")).toHaveLength(1);
      expect(bad.stderr, args.join(" ")).toMatch(message);
      expect(bad.stderr).not.toContain("hunter2");
    }
    expect((await incus(["info", fresh], { ...on(), allowFail: true })).code).not.toBe(0);
  });

  it("a remote LOCATION needs no --dir: no backups device, and a repository that cannot be reached fails install in one line", async () => {
    const remote = uniqueName("ibk-sftp");
    track.defer(() => deploy("uninstall.sh", ["--name", remote], true));
    const location = "restic:sftp:backup@nas2.invalid:/srv/restic/incus";
    const r = await deploy("install.sh", ["--repo", location, "--restic-password-file", passwordFile, "--name", remote], true);
    console.log(`install.sh with an unreachable sftp repository: exit ${r.code}: ${r.stderr.trim()}`);
    noSecrets(r.stdout + r.stderr);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^install: error: cannot make or open the restic repository ${location.replace(/[.]/g, "\\.")}: error: `));
    const profile = (await apiGet(`/1.0/profiles/incus-backup-${remote}`, on())) as { devices: Record<string, unknown> };
    expect(Object.keys(profile.devices)).toEqual(["incus-socket"]);
    const c = (await apiGet(`/1.0/instances/${remote}`, on())) as { config: Record<string, string> };
    expect(c.config["environment.INCUS_BACKUP_REPO"]).toBe(location);
    expect(c.config["raw.idmap"]).toBeUndefined();
    noSecrets(await incusOk(["config", "show", remote, "--expanded"], on()));
    const u = await deploy("uninstall.sh", ["--name", remote]);
    expect(u.stdout).toMatch(new RegExp(`kept the storage volume default/${remote}-state`));
    await incusOk(["storage", "volume", "delete", "default", `${remote}-state`], on());
  });

  it("install.sh --repo restic:/backups/restic --restic-password-file: restic init, the pin, the secrets only in the state volume (0600); backup --all and list", async () => {
    const t0 = performance.now();
    const r = await deploy("install.sh", [...repoArgs, "--restic-password-file", passwordFile, "--restic-env-file", envFile]);
    console.log(`install.sh (restic, new container): ${seconds(t0)} s\n${r.stdout}`);
    noSecrets(r.stdout + r.stderr);
    expect(r.stdout).toMatch(new RegExp(`container ${name}: created`));
    expect(r.stdout).toMatch(new RegExp(`^state volume default/${name}-state: created, at ${stateDir} \\(restic password installed, restic.env installed\\)$`, "m"));
    repoId = /^repository restic:\/backups\/restic: created \(id ([0-9a-f]+)\)$/m.exec(r.stdout)?.[1] ?? "";
    expect(repoId, r.stdout).not.toBe("");
    expect(r.stdout).toMatch(/keep the restic password somewhere off this host too/);
    expect(r.stdout).toMatch(/Without it no restore from restic:\/backups\/restic is possible/);
    // restic made the repository on the NAS.
    expect((await labShell(`test -f ${nas}/restic/config`, { allowFail: true })).code).toBe(0);

    const c = await config();
    expect(c.status).toBe("Running");
    expect(c.config).toMatchObject({
      "environment.INCUS_BACKUP_REPO": "restic:/backups/restic",
      "environment.RESTIC_PASSWORD_FILE": `${stateDir}/secrets/restic-password`,
      "environment.INCUS_BACKUP_REPOSITORY_ID": repoId,
    });
    expect(c.config["environment.INCUS_BACKUP_DIR"]).toBeUndefined();
    noSecrets(await incusOk(["config", "show", name, "--expanded"], on()));
    noSecrets(await incusOk(["profile", "show", `incus-backup-${name}`], on()));
    noSecrets(await incusOk(["storage", "volume", "show", "default", `${name}-state`], on()));

    // The state volume is attached at /var/lib/incus-backup and holds the secrets, root's and 0600.
    const volume = await incusOk(["storage", "volume", "show", "default", `${name}-state`], on());
    expect(volume).toMatch(new RegExp(`/1\\.0/instances/${name}`));
    expect(await incusOk(["config", "device", "get", name, "state", "path"], on())).toBe(`${stateDir}\n`);
    const modes = await inContainer(`cd ${stateDir} && stat -c '%a %u:%g %n' . secrets secrets/*`);
    expect(modes.trim().split("\n")).toEqual(["700 0:0 .", "700 0:0 secrets", "600 0:0 secrets/restic-password", "600 0:0 secrets/restic.env"]);
    // On the volume itself (the server's dir pool), not in the container's root filesystem.
    const onVolume = await labRead(`stat -c %a ${incusDir}/storage-pools/default/custom/default_${name}-state/secrets/restic-password`);
    expect(onVolume.trim()).toBe("600");
    const [installed, given] = await Promise.all([
      labRead(`sha256sum < ${incusDir}/storage-pools/default/custom/default_${name}-state/secrets/restic-password`),
      labRead(`sha256sum < ${passwordFile}`),
    ]);
    expect(installed).toBe(given);

    // The daemon got the env file through the wrapper, and no secret in its environment but from it.
    const env = await daemonEnv();
    expect(env).toContain(`INCUS_BACKUP_TEST_MARKER=${marker}`);
    expect(env).toContain(`RESTIC_PASSWORD_FILE=${stateDir}/secrets/restic-password`);
    expect(env).not.toContain(password);
    expect((await incusOk(["console", name, "--show-log"], on())).replace(/\r/g, "")).toMatch(new RegExp(`daemon, repository restic:/backups/restic \\(id ${repoId}\\)`));

    const t1 = performance.now();
    const b = await tool(["backup", "--all"]);
    console.log(`backup --all (restic): ${seconds(t1)} s: ${b.stdout.trim()}`);
    expect(b.code, b.stderr).toBe(0);
    noSecrets(b.stdout + b.stderr);
    firstVersion = /backup (\d{8}-\d{6})/.exec(b.stdout)?.[1] ?? "";
    expect(firstVersion, b.stdout).not.toBe("");
    const list = await listed();
    expect(list).toContain(web);
    expect(list).toContain(firstVersion);
    // The container's own state volume (the password, the run records) is not backed up.
    expect(list).not.toContain(`${name}-state`);
    const l = await tool(["list"]);
    expect(l.code).toBe(0);
    expect(l.stdout).toContain(web);
    noSecrets((await incusOk(["console", name, "--show-log"], on())));
  });

  it("a new image and a re-run without --restic-password-file upgrade the container: the password, restic.env, the state and the backups survive", async () => {
    const runsBefore = (await inContainer(`ls ${stateDir}/restic-*/runs`)).trim().split("\n");
    expect(runsBefore.some((f) => f.startsWith(firstVersion))).toBe(true);
    const tmp = await mkdtemp(join(tmpdir(), "ibk-bundle-"));
    track.defer(() => rm(tmp, { recursive: true, force: true }));
    const bundle = join(tmp, "incus-backup.mjs");
    await writeFile(bundle, `${await readFile(join(ROOT, "dist/incus-backup.mjs"), "utf8")}\n// rebuilt for the restic upgrade test ${randomBytes(4).toString("hex")}\n`);
    const b = await build(["--bundle", bundle]);
    expect(b.code, b.stderr).toBe(0);
    const fingerprint = b.stdout.trim();
    expect(fingerprint).not.toBe(imageFingerprint);

    const t0 = performance.now();
    const r = await deploy("install.sh", repoArgs);
    console.log(`install.sh (restic, upgrade): ${seconds(t0)} s\n${r.stdout}`);
    noSecrets(r.stdout + r.stderr);
    expect(r.stdout).toMatch(new RegExp(`container ${name}: upgraded`));
    expect(r.stdout).toMatch(new RegExp(`^state volume default/${name}-state: in use, at ${stateDir} \\(restic password kept, restic.env kept\\)$`, "m"));
    expect(r.stdout).toMatch(new RegExp(`^repository restic:/backups/restic: in use \\(id ${repoId}\\)$`, "m"));
    const c = await config();
    expect(c.status).toBe("Running");
    expect(c.config["volatile.base_image"]).toBe(fingerprint);
    expect(c.config["environment.INCUS_BACKUP_REPOSITORY_ID"]).toBe(repoId);
    noSecrets(await incusOk(["config", "show", name, "--expanded"], on()));

    // A new root filesystem, the same volume: the password, the env file and the run records.
    expect(await inContainer(`stat -c '%a' ${stateDir}/secrets/restic-password`)).toBe("600\n");
    expect((await inContainer(`ls ${stateDir}/restic-*/runs`)).trim().split("\n")).toEqual(expect.arrayContaining(runsBefore));
    expect(await daemonEnv()).toContain(`INCUS_BACKUP_TEST_MARKER=${marker}`);
    const list = await listed();
    expect(list).toContain(web);
    expect(list).toContain(firstVersion);
    const status = JSON.parse((await tool(["status", "--json"], true)).stdout) as { lastRun: { version: string } | null };
    expect(status.lastRun?.version).toBe(firstVersion);
    // And the repository still opens with it: another backup.
    expect((await tool(["backup", "--database"])).code).toBe(0);
  });

  it("--ssh-dir goes to secrets/ssh (0700/0600) with /root/.ssh pointing at it; the same re-run changes nothing; uninstall.sh keeps the volume", async () => {
    const r = await deploy("install.sh", [...repoArgs, "--ssh-dir", sshDir]);
    noSecrets(r.stdout + r.stderr);
    expect(r.stdout).toMatch(new RegExp(`container ${name}: updated`));
    expect(r.stdout).toMatch(/\(restic password kept, restic.env kept, ssh installed\)/);
    const modes = await inContainer(`cd ${stateDir}/secrets && stat -c '%a %u:%g %n' ssh ssh/*`);
    expect(modes.trim().split("\n")).toEqual(["700 0:0 ssh", "600 0:0 ssh/config", "600 0:0 ssh/id_ed25519", "600 0:0 ssh/known_hosts"]);
    expect(await inContainer("readlink /root/.ssh")).toBe(`${stateDir}/secrets/ssh\n`);
    expect(await inContainer("cat /root/.ssh/known_hosts")).toBe("nas2 ssh-ed25519 AAAA\n");

    const started = await daemonStarted();
    expect(started).toBeDefined();
    const again = await deploy("install.sh", [...repoArgs, "--ssh-dir", sshDir]);
    expect(again.stdout).toMatch(new RegExp(`container ${name}: unchanged`));
    expect(again.stdout).toMatch(/\(restic password kept, restic.env kept, ssh unchanged\)/);
    expect(await daemonStarted()).toBe(started);

    const u = await deploy("uninstall.sh", ["--name", name]);
    expect(u.stdout).toMatch(new RegExp(`kept the storage volume default/${name}-state`));
    expect((await incus(["info", name], { ...on(), allowFail: true })).code).not.toBe(0);
    expect((await incus(["storage", "volume", "show", "default", `${name}-state`], on())).code).toBe(0);
  });
});
