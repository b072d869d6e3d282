// restic's failures as the tool's errors, on 0.14 (exit 1 and a message) and 0.17+ (exit codes).

import { describe, expect, it } from "vitest";
import { ExitCode, InterruptedError, LockedError, RepositoryError, UsageError } from "../../../../src/errors";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CONNECT_TIMEOUT_MS, STOP_GRACE_MS, checkPassword, displayRepository, jsonLines, parseConnectTimeout, parseResticVersion, resticError, resticReason, runRestic } from "../../../../src/repository/restic/run";

describe("resticError", () => {
  const where = "/srv/restic";
  it.each<[string, number, string, string]>([
    ["no repository (0.14)", 1, "Fatal: unable to open config file: stat /srv/restic/config: no such file or directory\nIs there a repository at the following location?\n/srv/restic", "there is no restic repository at /srv/restic"],
    ["no repository (0.17+)", 10, "Fatal: repository does not exist: unable to open config file", "there is no restic repository at /srv/restic"],
    ["wrong password (0.14)", 1, "Fatal: wrong password or no key found", "wrong password for the restic repository /srv/restic (from RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND)"],
    ["wrong password (0.17.1+)", 12, "Fatal: wrong password or no key found", "wrong password for the restic repository /srv/restic (from RESTIC_PASSWORD_FILE or RESTIC_PASSWORD_COMMAND)"],
    ["anything else", 1, "some warning\nFatal: unable to save snapshot: disk full", "restic backup failed (exit 1) on /srv/restic: unable to save snapshot: disk full"],
  ])("%s", (_name, code, stderr, message) => {
    const e = resticError("backup", code, stderr, where);
    expect(e).toBeInstanceOf(RepositoryError);
    expect(e.message).toBe(message);
    expect(e.exitCode).toBe(ExitCode.Repository);
  });

  it.each<[number, string]>([
    [1, "unable to create lock in backend: repository is already locked exclusively by PID 4242 on nas by root (UID 0, GID 0)\nlock was created at 2025-09-14 03:00:00 (1m0s ago)\nstorage ID 1234abcd"],
    [11, "Fatal: unable to create lock in backend: repository is already locked exclusively by PID 4242 on nas by root (UID 0, GID 0)"],
  ])("a lock (exit %d) is exit 7 and names its holder", (code, stderr) => {
    const e = resticError("forget", code, stderr, where);
    expect(e).toBeInstanceOf(LockedError);
    expect(e.message).toBe("the restic repository /srv/restic is locked by PID 4242 on nas by root (UID 0, GID 0) (restic forget)");
  });

  it.each<[string, string, string]>([
    [
      "a REST server that is down (0.14 asks whether there is a repository)",
      'Fatal: unable to open config file: client.Head: Head "http://127.0.0.1:1/config": dial tcp 127.0.0.1:1: connect: connection refused\nIs there a repository at the following location?\nrest:http://127.0.0.1:1/',
      "connect: connection refused",
    ],
    [
      "an sshd that is down",
      "subprocess ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused\nFatal: unable to open repository at sftp:root@127.0.0.1:/r: unable to start the sftp session, error: EOF",
      "connect to host 127.0.0.1 port 1: Connection refused",
    ],
    ["a name that does not resolve", 'Fatal: unable to open config file: Head "https://nas.invalid/config": dial tcp: lookup nas.invalid: no such host', "no such host"],
  ])("%s: cannot reach, not 'no repository'", (_name, stderr, reason) => {
    const e = resticError("snapshots", 1, stderr, "rest:http://127.0.0.1:1/");
    expect(e).toBeInstanceOf(RepositoryError);
    expect(e.message).toBe(`cannot reach the restic repository at rest:http://127.0.0.1:1/: ${reason}`);
    expect(e.exitCode).toBe(ExitCode.Repository);
  });

  it("an interrupted restic is an interruption", () => {
    expect(resticError("dump", 130, "", where).exitCode).toBe(ExitCode.Interrupted);
  });

  it("the reason is the last Fatal line", () => {
    expect(resticReason("a\nFatal: first\nb\n")).toBe("first");
    expect(resticReason("only a line\n")).toBe("only a line");
    expect(resticReason("")).toBe("no message");
  });
});

describe("restic helpers", () => {
  it("leave credentials out of the repository shown", () => {
    expect(displayRepository("rest:https://user:secret@backup.example:8000/incus")).toBe("rest:https://backup.example:8000/incus");
    expect(displayRepository("sftp:backup@nas:/srv/restic")).toBe("sftp:backup@nas:/srv/restic");
    expect(displayRepository("/srv/restic")).toBe("/srv/restic");
  });

  it("want a password from the environment, never stdin", () => {
    expect(() => checkPassword({}, "/r")).toThrow("no password for the restic repository /r: set RESTIC_PASSWORD_FILE (or RESTIC_PASSWORD_COMMAND)");
    expect(() => checkPassword({ RESTIC_PASSWORD_FILE: "" }, "/r")).toThrow(RepositoryError);
    expect(() => checkPassword({ RESTIC_PASSWORD_FILE: "/etc/pw" }, "/r")).not.toThrow();
    expect(() => checkPassword({ RESTIC_PASSWORD_COMMAND: "cat /etc/pw" }, "/r")).not.toThrow();
  });

  it("read JSON lines and skip plain ones", () => {
    expect(jsonLines('{"message_type":"status"}\nwarning: x\n{"message_type":"summary","snapshot_id":"0123abcd"}\n{broken\n')).toEqual([
      { message_type: "status" },
      { message_type: "summary", snapshot_id: "0123abcd" },
    ]);
  });

  it("read restic's version", () => {
    expect(parseResticVersion("restic 0.14.0 compiled with go1.19.8 on linux/amd64")).toEqual([0, 14, 0]);
    expect(parseResticVersion("restic 0.18.0 compiled with go1.24.4 on linux/amd64")).toEqual([0, 18, 0]);
    expect(parseResticVersion("nope")).toBeUndefined();
  });
});

describe("displayRepository in a command line", () => {
  it("drops credentials wherever the URL is in an argument", () => {
    expect(displayRepository("--repo=restic:rest:https://user:secret@nas:8000/incus")).toBe("--repo=restic:rest:https://nas:8000/incus");
    expect(displayRepository("--all")).toBe("--all");
  });
});

describe("first contact with a server restic cannot reach", () => {
  it("INCUS_BACKUP_RESTIC_CONNECT_TIMEOUT is seconds above 0, 60 by default", () => {
    expect(parseConnectTimeout(undefined)).toBe(CONNECT_TIMEOUT_MS);
    expect(parseConnectTimeout("")).toBe(60_000);
    expect(parseConnectTimeout("2.5")).toBe(2500);
    expect(() => parseConnectTimeout("0")).toThrow(/must be a number of seconds above 0, not "0"/);
    expect(() => parseConnectTimeout("soon")).toThrow(UsageError);
  });

  // A stand-in for restic 0.18 retrying a server that is down: it says so on stderr, then waits.
  async function retryingRestic(): Promise<{ binary: string; dir: string }> {
    const dir = await mkdtemp(join(tmpdir(), "ibk-fake-restic-"));
    const binary = join(dir, "restic");
    const line = 'Stat(<config/>) returned error, retrying after 1.2s: Head \\"http://:***@127.0.0.1:9/config\\": dial tcp 127.0.0.1:9: connect: connection refused';
    await writeFile(binary, `#!/bin/sh\necho "${line}" >&2\nexec sleep 30\n`, { mode: 0o755 });
    return { binary, dir };
  }

  it("gives up after the connect timeout, naming the reason", async () => {
    const { binary, dir } = await retryingRestic();
    const target = { repository: "rest:http://127.0.0.1:9/", binary, env: { RESTIC_PASSWORD: "x" }, connectTimeoutMs: 200 };
    const started = Date.now();
    const err = await runRestic(target, ["cat", "config"], { firstContact: true }).catch((e: unknown) => e);
    await rm(dir, { recursive: true, force: true });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(err).toBeInstanceOf(RepositoryError);
    expect((err as Error).message).toBe(
      'cannot reach the restic repository at rest:http://127.0.0.1:9/ (retried for 0 s): Head "http://127.0.0.1:9/config": dial tcp 127.0.0.1:9: connect: connection refused',
    );
  });

  it("a call stopped by the run (its signal aborted) while restic retries a server that went away: an interruption, at once", async () => {
    const { binary, dir } = await retryingRestic();
    const target = { repository: "rest:http://127.0.0.1:9/", binary, env: { RESTIC_PASSWORD: "x" } };
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    const started = Date.now();
    // As the manifest of a version is saved: a small backup from stdin, with the run's signal.
    const err = await runRestic(target, ["backup", "--stdin"], { input: "{}", signal: ac.signal }).catch((e: unknown) => e);
    await rm(dir, { recursive: true, force: true });
    expect(err).toBeInstanceOf(InterruptedError);
    expect(Date.now() - started).toBeLessThan(STOP_GRACE_MS);
  });

  it("later calls keep restic's own retries", async () => {
    const { binary, dir } = await retryingRestic();
    const target = { repository: "rest:http://127.0.0.1:9/", binary, env: { RESTIC_PASSWORD: "x" }, connectTimeoutMs: 200 };
    // Three times the connect timeout: long enough that a first-contact limit would have cut it.
    const err = await runRestic(target, ["forget", "abc"], { timeoutMs: 600 }).catch((e: unknown) => e);
    await rm(dir, { recursive: true, force: true });
    expect((err as Error).message).toBe("restic forget took longer than 1 s on rest:http://127.0.0.1:9/ and was stopped");
  });
});
