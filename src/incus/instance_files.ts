// Files inside a running instance, through Incus's file API (/1.0/instances/NAME/files), named
// after Incus's Go client. Paths are as the instance sees them; Incus resolves them inside the
// instance, so a symlink there can never lead to the host.
//
// Checked on Incus 6.0 and 7.0: HEAD and GET report a symlink itself (not what it points to);
// a POST over an existing file replaces its data but keeps its owner and mode; a POST of an
// existing directory succeeds and changes nothing; DELETE removes a symlink, not its target.

import { createHash } from "node:crypto";
import type { Readable } from "node:stream";
import { seg, type IncusClient } from "./client";
import { IncusNotFoundError } from "./errors";

export interface InstanceFileInfo {
  type: "file" | "directory" | "symlink" | string;
  mode: number;
  uid: number;
  gid: number;
}

export interface InstanceFileArgs {
  type: "file" | "directory" | "symlink";
  uid: number;
  gid: number;
  mode: number;
  /** A file's data, or a symlink's target. */
  content?: Readable | string;
}

const path = (name: string) => `/1.0/instances/${seg(name)}/files`;

/** What is at `file` in the instance, or undefined if nothing is. */
export async function getInstanceFileInfo(c: IncusClient, project: string, name: string, file: string, signal?: AbortSignal): Promise<InstanceFileInfo | undefined> {
  try {
    const res = await c.raw("HEAD", path(name), `Look at ${file} in instance ${name}`, { query: { project, path: file }, ...(signal ? { signal } : {}) });
    await res.body.dump();
    const h = (k: string) => String(res.headers[k] ?? "");
    return { type: h("x-incus-type"), mode: parseInt(h("x-incus-mode") || "0", 8), uid: Number(h("x-incus-uid")), gid: Number(h("x-incus-gid")) };
  } catch (err) {
    if (err instanceof IncusNotFoundError) return undefined;
    throw err;
  }
}

/** A file's data (or a symlink's target) as a stream. */
export async function getInstanceFile(c: IncusClient, project: string, name: string, file: string, signal?: AbortSignal): Promise<Readable> {
  const res = await c.raw("GET", path(name), `Read ${file} in instance ${name}`, { query: { project, path: file }, ...(signal ? { signal } : {}), bodyTimeout: 300_000 });
  return res.body;
}

/** The sha256 of a file in the instance, streamed. */
export async function instanceFileSha256(c: IncusClient, project: string, name: string, file: string, signal?: AbortSignal): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of await getInstanceFile(c, project, name, file, signal)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** Creates a file, directory or symlink (a file that exists gets the new data, keeping its owner and mode). */
export async function createInstanceFile(c: IncusClient, project: string, name: string, file: string, args: InstanceFileArgs, signal?: AbortSignal): Promise<void> {
  const headers: Record<string, string> = {
    "x-incus-type": args.type,
    "x-incus-uid": String(args.uid),
    "x-incus-gid": String(args.gid),
    "x-incus-mode": args.mode.toString(8).padStart(4, "0"),
    "content-type": "application/octet-stream",
  };
  if (args.type === "file") headers["x-incus-write"] = "overwrite";
  const what = `Write ${file} in instance ${name}`;
  const query = { project, path: file };
  const res =
    typeof args.content === "string" || args.content === undefined
      ? await c.raw("POST", path(name), what, { query, headers, ...(signal ? { signal } : {}) }, args.content ?? "")
      : await c.raw("POST", path(name), what, { query, headers, body: args.content, headersTimeout: 0, ...(signal ? { signal } : {}) });
  await res.body.dump();
}

/** Removes a file or symlink (or an empty directory). */
export async function deleteInstanceFile(c: IncusClient, project: string, name: string, file: string, signal?: AbortSignal): Promise<void> {
  const res = await c.raw("DELETE", path(name), `Remove ${file} in instance ${name}`, { query: { project, path: file }, ...(signal ? { signal } : {}) });
  await res.body.dump();
}
