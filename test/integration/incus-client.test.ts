// The Incus client (src/incus/) against a real daemon: listing, operations, typed errors, streamed transfers.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, rm, stat, writeFile } from "node:fs/promises";
import { create as createTar } from "tar";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IncusClient } from "../../src/incus/client";
import { IncusAlreadyExistsError, IncusNotFoundError, IncusOperationError, IncusSocketError } from "../../src/incus/errors";
import {
  createInstanceBackup,
  createInstanceFromBackup,
  deleteInstance,
  deleteInstanceBackup,
  getInstance,
  getInstanceBackupFile,
  getInstances,
  updateInstanceState,
} from "../../src/incus/instances";
import { HashingFileWriter } from "../../src/repository/files";
import { incusOk, labSocket, launchInstance, tracker, uniqueName } from "../lab/lab";
import { repoDir } from "./helpers/server";

/** A file as an upload's source. */
async function fileSource(path: string): Promise<{ stream: ReturnType<typeof createReadStream>; size: number }> {
  return { stream: createReadStream(path), size: (await stat(path)).size };
}

describe("the Incus client", () => {
  const track = tracker();
  let client: IncusClient;
  beforeAll(() => {
    client = new IncusClient(labSocket());
  });
  afterAll(async () => {
    await client.close();
    await track.cleanup();
  });

  it("reads the server and its API extensions", async () => {
    const server = await client.server();
    expect(server.environment?.server_version).toMatch(/^\d+\.\d+/);
    expect(server.api_extensions).toContain("container_backup");
    expect(server.api_extensions).not.toContain("no_such_extension");
  });

  it("lists instances across all projects and in one project", async () => {
    const name = uniqueName("client-list");
    await launchInstance(name, { track, start: false });
    const all = await getInstances(client);
    expect(all.find((i) => i.name === name)?.project).toBe("default");
    expect((await getInstances(client, "default")).some((i) => i.name === name)).toBe(true);
  });

  it("creates an instance through an operation and waits for it, with progress", async () => {
    const name = uniqueName("client-create");
    track.instance(name);
    const op = await client.operation("POST", "/1.0/instances", "Create instance", {
      query: { project: "default" },
      body: { name, source: { type: "image", alias: "busybox" }, type: "container" },
    });
    const seen: unknown[] = [];
    const done = await op.wait({ onProgress: (m) => seen.push(m) });
    expect(done.status_code).toBe(200);
    expect((await getInstance(client, "default", name)).status).toBe("Stopped");
    await updateInstanceState(client, "default", name, { action: "start" });
    expect((await getInstance(client, "default", name)).status).toBe("Running");
  });

  it("raises the server's own error text when an operation fails (the HTTP status says nothing)", async () => {
    const dir = await repoDir(track);
    const name = uniqueName("client-junk");
    // A backup whose index is fine but which holds no instance: the upload is accepted (202 and
    // an operation), and unpacking fails inside the operation.
    await mkdir(join(dir, "backup"));
    await writeFile(join(dir, "backup/index.yaml"), `name: ${name}\nbackend: dir\npool: default\noptimized: false\ntype: container\nconfig:\n  container:\n    name: ${name}\n    architecture: x86_64\n`);
    const junk = join(dir, "junk.tar");
    await createTar({ file: junk, cwd: dir }, ["backup"]);
    const op = await createInstanceFromBackup(client, { project: "default", source: await fileSource(junk), name });
    const err = await op.wait().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncusOperationError);
    const text = (err as IncusOperationError).serverMessage;
    expect(text.length).toBeGreaterThan(0);
    expect((err as Error).message).toContain(text);
    console.log(`failed operation: ${text}`);
  });

  it("throws IncusNotFoundError on a missing instance", async () => {
    const err = await getInstance(client, "default", uniqueName("nope")).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncusNotFoundError);
    expect((err as IncusNotFoundError).status).toBe(404);
  });

  it("names the socket it tried when there is none", async () => {
    const missing = new IncusClient("/nonexistent/incus.sock");
    const err = await missing.server().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncusSocketError);
    expect((err as IncusSocketError).problem).toBe("missing");
    expect((err as Error).message).toContain("/nonexistent/incus.sock");
    await missing.close();
  });

  it("streams a >= 100 MB backup down and up again with progress, in little memory, and refuses an existing name", async () => {
    const name = uniqueName("client-xfer");
    await launchInstance(name, { track });
    await incusOk(["exec", name, "--", "sh", "-c", "dd if=/dev/urandom of=/root/big bs=1M count=110 2>/dev/null"]);
    const dir = await repoDir(track);
    const file = join(dir, "backup.tar");

    const backupName = "client-test";
    const op = await createInstanceBackup(client, "default", name, { name: backupName, instance_only: true, compression_algorithm: "none" });
    await op.wait();
    const rssBefore = process.memoryUsage().rss;
    let peak = rssBefore;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    const downProgress: number[] = [];
    const sink = await HashingFileWriter.create(file);
    const { bytes } = await getInstanceBackupFile(client, "default", name, backupName, sink, { onProgress: (done) => downProgress.push(done) });
    await deleteInstanceBackup(client, "default", name, backupName);
    expect(bytes).toBeGreaterThanOrEqual(100 * 1024 * 1024);
    expect((await stat(file)).size).toBe(bytes);
    expect(sink.entry().sha256).toBe(await sha256(file));
    expect(downProgress.length).toBeGreaterThan(2);
    expect(downProgress.at(-1)).toBe(bytes);

    // Importing under the existing name fails inside the operation, as "already exists".
    const dup = await createInstanceFromBackup(client, { project: "default", source: await fileSource(file), name });
    const dupErr = await dup.wait().catch((e: unknown) => e);
    expect(dupErr).toBeInstanceOf(IncusAlreadyExistsError);
    expect((dupErr as Error).message).toMatch(/already exists/i);

    const copy = uniqueName("client-xfer-copy");
    track.instance(copy);
    const upProgress: number[] = [];
    const up = await createInstanceFromBackup(client, { project: "default", source: await fileSource(file), name: copy }, { onProgress: (done) => upProgress.push(done) });
    await up.wait();
    clearInterval(sampler);
    expect(upProgress.at(-1)).toBe(bytes);
    expect((await getInstance(client, "default", copy)).name).toBe(copy);
    // Streaming, not buffering: memory grows by far less than the file's size.
    expect(peak - rssBefore).toBeLessThan(bytes / 2);
    console.log(`transfer of ${(bytes / 1048576).toFixed(0)} MiB: rss grew by ${((peak - rssBefore) / 1048576).toFixed(0)} MiB`);
    await deleteInstance(client, "default", copy);
    await rm(file, { force: true });
  });

});

async function sha256(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}
