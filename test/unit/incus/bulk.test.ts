// The lean download client (src/incus/bulk.ts) against Node's own HTTP server on a unix socket:
// an independent implementation writes the framing (Content-Length, chunked, Range, errors), so
// the decoder is checked against what a real server sends, byte for byte.
import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createNetServer, type Socket } from "node:net";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { BULK_CHUNK, bulkRequest } from "../../../src/incus/bulk";
import { IncusClient } from "../../../src/incus/client";
import { IncusError, IncusNotFoundError, IncusSocketError } from "../../../src/incus/errors";
import { downloadTo, postForStream } from "../../../src/incus/transfer";
import { InterruptedError } from "../../../src/errors";
import { tempDir } from "../helpers/repo";

const servers: Array<{ close(): void }> = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const path = join(await tempDir(), "incus.sock");
  const server: Server = createServer(handler);
  const sockets = new Set<Socket>();
  server.on("connection", (s) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(path, r));
  servers.push({
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  });
  return path;
}

/** A server that writes these bytes on every connection, whatever was asked, then closes (or not). */
async function serveRaw(reply: (socket: Socket) => void): Promise<string> {
  const path = join(await tempDir(), "raw.sock");
  const server = createNetServer((s) => {
    s.once("data", () => reply(s));
    s.on("error", () => undefined);
  });
  await new Promise<void>((r) => server.listen(path, r));
  servers.push({ close: () => server.close() });
  return path;
}

async function collect(body: AsyncIterable<Buffer>): Promise<{ data: Buffer; chunks: number[] }> {
  const parts: Buffer[] = [];
  for await (const b of body) parts.push(b);
  return { data: Buffer.concat(parts), chunks: parts.map((p) => p.length) };
}

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("bulkRequest", () => {
  it("reads a Content-Length body of several MiB exactly, in chunks of at most 1 MiB", async () => {
    const data = randomBytes(3 * BULK_CHUNK + 12345);
    const path = await serve((_req, res) => {
      res.writeHead(200, { "content-length": String(data.length), "content-type": "application/octet-stream" });
      // Many small writes: the decoder must not depend on how the bytes arrive.
      for (let off = 0; off < data.length; off += 7919) res.write(data.subarray(off, off + 7919));
      res.end();
    });
    const r = await bulkRequest(path, { method: "GET", path: "/x" });
    expect(r.statusCode).toBe(200);
    expect(r.headers["content-length"]).toBe(String(data.length));
    const got = await collect(r.body);
    expect(sha(got.data)).toBe(sha(data));
    expect(Math.max(...got.chunks)).toBeLessThanOrEqual(BULK_CHUNK);
    expect(got.chunks.slice(0, 3)).toEqual([BULK_CHUNK, BULK_CHUNK, BULK_CHUNK]);
  });

  it("decodes a chunked body (no length announced, as a streamed backup comes)", async () => {
    const data = randomBytes(2 * BULK_CHUNK + 999);
    const path = await serve((_req, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      let off = 0;
      const next = () => {
        if (off >= data.length) return res.end();
        const n = 1 + Math.floor(Math.random() * 200_000);
        res.write(data.subarray(off, off + n), next);
        off += n;
      };
      next();
    });
    const r = await bulkRequest(path, { method: "POST", path: "/x", body: "{}" });
    expect(r.headers["transfer-encoding"]).toBe("chunked");
    expect(sha((await collect(r.body)).data)).toBe(sha(data));
  });

  it("sends the method, path, headers and a JSON body", async () => {
    let seen: { method?: string; url?: string; type?: string; body?: string } = {};
    const path = await serve((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d));
      req.on("end", () => {
        seen = { method: req.method, url: req.url, type: req.headers["content-type"], body };
        res.end("ok");
      });
    });
    const r = await bulkRequest(path, { method: "POST", path: "/1.0/instances/a%20b/backups?project=p", headers: { "content-type": "application/json" }, body: '{"x":1}' });
    expect((await collect(r.body)).data.toString()).toBe("ok");
    expect(seen).toEqual({ method: "POST", url: "/1.0/instances/a%20b/backups?project=p", type: "application/json", body: '{"x":1}' });
  });

  it("refuses a header that would change the request's shape", async () => {
    const path = await serve((_req, res) => res.end());
    await expect(bulkRequest(path, { method: "GET", path: "/", headers: { range: "bytes=0-\r\nX-Evil: 1" } })).rejects.toThrow(/invalid HTTP header/);
  });

  it("fails the body when the connection ends before the announced length (code ECONNRESET)", async () => {
    const path = await serveRaw((s) => {
      s.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
      s.end(Buffer.alloc(400, 1));
    });
    const r = await bulkRequest(path, { method: "GET", path: "/" });
    await expect(collect(r.body)).rejects.toMatchObject({ code: "ECONNRESET", message: expect.stringMatching(/after 400 bytes, 600 bytes before its end/) });
  });

  it("fails the body when a chunked answer stops before its last chunk", async () => {
    const path = await serveRaw((s) => {
      s.end("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    });
    const r = await bulkRequest(path, { method: "GET", path: "/" });
    await expect(collect(r.body)).rejects.toMatchObject({ code: "ECONNRESET", message: expect.stringMatching(/after 5 bytes, before its last chunk/) });
  });

  it("refuses a chunk that is longer than announced", async () => {
    const path = await serveRaw((s) => s.end("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"));
    const r = await bulkRequest(path, { method: "GET", path: "/" });
    await expect(collect(r.body)).rejects.toThrow(/chunk longer than announced/);
  });

  it("reads a body that ends with the connection when no length is given", async () => {
    const path = await serveRaw((s) => s.end("HTTP/1.0 200 OK\r\n\r\nall of it"));
    const r = await bulkRequest(path, { method: "GET", path: "/" });
    expect((await collect(r.body)).data.toString()).toBe("all of it");
  });

  it("rejects when the connection closes before the answer, and when the answer is not HTTP", async () => {
    const closes = await serveRaw((s) => s.end());
    await expect(bulkRequest(closes, { method: "GET", path: "/" })).rejects.toMatchObject({ code: "ECONNRESET" });
    const garbage = await serveRaw((s) => s.end("SSH-2.0-OpenSSH\r\n\r\n"));
    await expect(bulkRequest(garbage, { method: "GET", path: "/" })).rejects.toThrow(/not an HTTP response/);
  });

  it("stops reading while the reader does not want more, and goes on when it does", async () => {
    const data = randomBytes(12 * BULK_CHUNK);
    let sent = 0;
    const path = await serve((_req, res) => {
      res.writeHead(200, { "content-length": String(data.length) });
      const more = () => {
        while (sent < data.length) {
          const piece = data.subarray(sent, sent + 65536);
          sent += piece.length;
          if (!res.write(piece)) return res.once("drain", more);
        }
        res.end();
      };
      more();
    });
    const r = await bulkRequest(path, { method: "GET", path: "/" });
    // Nobody reads for a while: the server must be held back well before the end.
    await new Promise((res) => setTimeout(res, 300));
    expect(sent).toBeLessThan(data.length);
    expect(sha((await collect(r.body)).data)).toBe(sha(data));
  });

  it("an abort ends the request with an AbortError, before and after the answer", async () => {
    const path = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "100" });
      res.write("x");
    });
    const early = new AbortController();
    early.abort();
    await expect(bulkRequest(path, { method: "GET", path: "/", signal: early.signal })).rejects.toMatchObject({ name: "AbortError" });
    const late = new AbortController();
    const r = await bulkRequest(path, { method: "GET", path: "/", signal: late.signal });
    const reading = collect(r.body);
    late.abort();
    await expect(reading).rejects.toMatchObject({ name: "AbortError" });
  });

  it("gives up on an answer that does not come, and on a body that stalls", async () => {
    const silent = await serve(() => undefined);
    await expect(bulkRequest(silent, { method: "GET", path: "/", headersTimeout: 200 })).rejects.toThrow(/no answer from Incus within/);
    const stalls = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "100" });
      res.write("x");
    });
    const r = await bulkRequest(stalls, { method: "GET", path: "/", bodyTimeout: 200 });
    await expect(collect(r.body)).rejects.toThrow(/no data from Incus for/);
  });
});

describe("IncusClient.bulk and the downloads built on it", () => {
  it("turns an error answer into the typed error, with the server's message", async () => {
    const path = await serve((_req, res) => {
      res.writeHead(404, { "content-type": "application/json" });
      res.end(JSON.stringify({ type: "error", error: "Backup not found", error_code: 404 }));
    });
    const c = new IncusClient(path);
    const err = await c.bulk("GET", "/1.0/instances/x/backups/b/export", "Download backup of instance x").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncusNotFoundError);
    expect((err as Error).message).toBe("Download backup of instance x: Backup not found");
  });

  it("names the socket when it is missing", async () => {
    const c = new IncusClient(join(await tempDir(), "nothing.sock"));
    await expect(c.bulk("GET", "/", "Download")).rejects.toBeInstanceOf(IncusSocketError);
  });

  it("downloadTo resumes with a Range request where the connection broke off", async () => {
    const data = randomBytes(3 * BULK_CHUNK);
    let calls = 0;
    const path = await serve((req, res) => {
      calls++;
      const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
      if (!range) {
        // The first answer breaks off after a third of the file.
        res.writeHead(200, { "content-length": String(data.length) });
        res.write(data.subarray(0, BULK_CHUNK + 5), () => res.destroy());
        return;
      }
      const from = Number(range[1]);
      res.writeHead(206, { "content-length": String(data.length - from), "content-range": `bytes ${from}-${data.length - 1}/${data.length}` });
      res.end(data.subarray(from));
    });
    const parts: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _e, done) {
        parts.push(chunk);
        done();
      },
    });
    const r = await downloadTo(new IncusClient(path), "/f", "Download", sink, { retryDelayMs: 10 });
    expect(r.bytes).toBe(data.length);
    expect(sha(Buffer.concat(parts))).toBe(sha(data));
    expect(calls).toBe(2);
  });

  it("postForStream refuses an answer in JSON where the data was expected", async () => {
    const path = await serve((_req, res) => {
      res.writeHead(202, { "content-type": "application/json" });
      res.end(JSON.stringify({ type: "async", operation: "/1.0/operations/x" }));
    });
    const sink = new Writable({ write: (_c, _e, done) => done() });
    const err = await postForStream(new IncusClient(path), "/x", "Stream a backup", {}, sink).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IncusError);
    expect((err as Error).message).toMatch(/expected the backup data, got: \{"type":"async"/);
  });

  it("an interrupted download is an InterruptedError", async () => {
    const path = await serve((_req, res) => {
      res.writeHead(200, { "content-length": "1000000" });
      res.write("x");
    });
    const ac = new AbortController();
    const sink = new Writable({ write: (_c, _e, done) => done() });
    const p = downloadTo(new IncusClient(path), "/f", "Download", sink, { signal: ac.signal });
    setTimeout(() => ac.abort(), 100);
    await expect(p).rejects.toBeInstanceOf(InterruptedError);
  });
});
