// Notifications against a real HTTP receiver on 127.0.0.1: the body, failures named without the URL's secret.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { postJson } from "../../../src/engine/notify";
import { notificationPayload, type RunSummary } from "../../../src/engine/daemon";

let server: Server | undefined;
afterEach(async () => {
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = undefined;
});

async function receiver(handler: (req: IncomingMessage, body: string, res: ServerResponse) => void): Promise<string> {
  server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (body += c));
    req.on("end", () => handler(req, body, res));
  });
  await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const summary: RunSummary = {
  kind: "backup",
  trigger: "schedule",
  slot: "2025-05-05T03:00:00.000Z",
  status: "ok",
  started: "2025-05-05T03:00:00.000Z",
  finished: "2025-05-05T03:00:10.000Z",
  version: "20250505-030000",
  items: [{ label: "instance default/web", ok: true, bytes: 1024, seconds: 1.5 }],
  prune: { removed: 1, kept: 4, bytesFreed: 10, failed: 0 },
};

describe("postJson", () => {
  it("POSTs the JSON summary", async () => {
    let got: { method?: string; type?: string; agent?: string; body?: unknown } = {};
    const base = await receiver((req, body, res) => {
      got = { method: req.method, type: req.headers["content-type"], agent: req.headers["user-agent"], body: JSON.parse(body) };
      res.end("ok");
    });
    await postJson(`${base}/hook/s3cr3t`, notificationPayload(summary, { host: "backup", toolVersion: "1.2.3" }), { userAgent: "incus-backup/1.2.3" });
    expect(got.method).toBe("POST");
    expect(got.type).toBe("application/json");
    expect(got.agent).toBe("incus-backup/1.2.3");
    expect(got.body).toMatchObject({
      tool: "incus-backup",
      toolVersion: "1.2.3",
      host: "backup",
      kind: "backup",
      status: "ok",
      version: "20250505-030000",
      items: [{ label: "instance default/web", ok: true }],
      prune: { removed: 1, kept: 4 },
    });
    expect((got.body as { text: string }).text).toMatch(/^incus-backup on backup: backup ok in 10\.0s: 20250505-030000; 1 of 1 item\(s\) backed up/);
  });

  it("fails on a non-2xx answer, naming the receiver by host only", async () => {
    const base = await receiver((_req, _body, res) => {
      res.statusCode = 503;
      res.end("down");
    });
    await expect(postJson(`${base}/hook/s3cr3t?token=x`, {})).rejects.toThrow(/^http:\/\/127\.0\.0\.1:\d+\/… answered HTTP 503$/);
  });

  it("fails clearly when nothing listens, without the URL's path", async () => {
    const base = await receiver((_req, _body, res) => res.end());
    await new Promise((r) => server!.close(r));
    server = undefined;
    const e = await postJson(`${base}/hook/s3cr3t`, {}).catch((err: Error) => err);
    expect((e as Error).message).toMatch(/^cannot reach http:\/\/127\.0\.0\.1:\d+\/…: ECONNREFUSED$/);
  });

  it("gives up after its timeout", async () => {
    const base = await receiver(() => {
      /* never answers */
    });
    const t0 = Date.now();
    await expect(postJson(`${base}/slow`, {}, { timeoutMs: 300 })).rejects.toThrow(/no answer in time/);
    expect(Date.now() - t0).toBeLessThan(5000);
    server!.closeAllConnections();
  });
});
