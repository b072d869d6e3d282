// The client loads two files of undici directly instead of the package root. If an undici update
// moves or changes them, this fails before anything else does.
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IncusClient } from "../../../src/incus/client";
import { IncusError } from "../../../src/incus/errors";

describe("the client's undici parts", () => {
  let dir: string;
  let server: Server;
  let socket: string;
  const seen: string[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "ibk-undici-"));
    socket = join(dir, "s.sock");
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers["user-agent"]}`);
      res.setHeader("content-type", "application/json");
      if (req.url?.startsWith("/1.0/missing")) {
        res.statusCode = 404;
        res.end(JSON.stringify({ type: "error", error: "Instance not found", error_code: 404 }));
        return;
      }
      res.end(JSON.stringify({ type: "sync", status: "Success", status_code: 200, metadata: { api_version: "1.0", url: req.url } }));
    });
    await new Promise<void>((r) => server.listen(socket, r));
  });

  afterAll(async () => {
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it("sends requests over the unix socket with the path and query", async () => {
    const c = new IncusClient(socket);
    try {
      const md = await c.get<{ url: string }>("/1.0/instances", "List instances", { query: { recursion: 1, project: "a b" } });
      expect(md.url).toBe("/1.0/instances?recursion=1&project=a+b");
      expect(seen.at(-1)).toBe("GET /1.0/instances?recursion=1&project=a+b incus-backup");
    } finally {
      await c.close();
    }
  });

  it("turns an error answer into a typed error with the server's text", async () => {
    const c = new IncusClient(socket);
    try {
      const err = await c.get("/1.0/missing", "Get instance x").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(IncusError);
      expect((err as IncusError).status).toBe(404);
      expect((err as Error).message).toMatch(/Instance not found/);
    } finally {
      await c.close();
    }
  });
});
