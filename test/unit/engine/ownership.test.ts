// Which server's backups a repository holds: the first backup records it, another server's are refused, --adopt hands it over.

import { describe, expect, it } from "vitest";
import { adoptRepository, claimRepository, ownerFor } from "../../../src/engine/ownership";
import { ExitCode, RepositoryError } from "../../../src/errors";
import type { ServerInfo } from "../../../src/incus/client";
import { MemoryStore } from "../helpers/memory-store";

const NOW = new Date("2025-09-14T03:00:02Z");
const server = (name: string, fingerprint?: string): ServerInfo => ({ environment: { server_name: name, ...(fingerprint ? { certificate_fingerprint: fingerprint } : {}) } });
const A = server("incus01", "aa".repeat(32));
const B = server("incus01", "bb".repeat(32));

describe("claimRepository", () => {
  it("records the first server that backs up, then lets only it back up", async () => {
    const store = new MemoryStore();
    expect(await claimRepository(store, A, NOW)).toBe("claimed");
    expect(await store.serverOwner()).toEqual({ fingerprint: "aa".repeat(32), name: "incus01", since: NOW.toISOString() });
    expect(await claimRepository(store, A, new Date())).toBe("ours");
    expect((await store.serverOwner())!.since).toBe(NOW.toISOString());
  });

  it("refuses another server, even of the same name, with exit 8 and how to hand the repository over; nothing is written", async () => {
    const store = new MemoryStore();
    await claimRepository(store, A, NOW);
    const err = await claimRepository(store, B, NOW).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RepositoryError);
    expect((err as RepositoryError).exitCode).toBe(ExitCode.Repository);
    expect((err as Error).message).toBe(
      `${store.location} holds the backups of Incus server incus01 (certificate aaaaaaaaaaaa), not of this server, incus01 (certificate bbbbbbbbbbbb): two servers' backups never share a repository; nothing was written`,
    );
    expect((err as RepositoryError).hint).toMatch(/init --adopt/);
    expect((await store.serverOwner())!.fingerprint).toBe("aa".repeat(32));
  });

  it("passes, recording nothing, where the server does not say its certificate", async () => {
    const store = new MemoryStore();
    expect(await claimRepository(store, server("x"), NOW)).toBe("unknown");
    expect(await store.serverOwner()).toBeUndefined();
    expect(ownerFor(server("x"), NOW)).toBeUndefined();
  });
});

describe("adoptRepository", () => {
  it("hands the repository to this server and returns the one before; the old one is then refused", async () => {
    const store = new MemoryStore();
    await claimRepository(store, A, NOW);
    expect((await adoptRepository(store, B, NOW))!.fingerprint).toBe("aa".repeat(32));
    expect(await claimRepository(store, B, NOW)).toBe("ours");
    await expect(claimRepository(store, A, NOW)).rejects.toThrow(/holds the backups of Incus server incus01 \(certificate bbbbbbbbbbbb\)/);
    expect(await adoptRepository(store, B, NOW)).toMatchObject({ fingerprint: "bb".repeat(32) });
  });

  it("refuses a server without a certificate fingerprint", async () => {
    await expect(adoptRepository(new MemoryStore(), server("x"), NOW)).rejects.toThrow(/does not say its certificate fingerprint/);
  });
});
