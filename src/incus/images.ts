// Images and image aliases, named after Incus's Go client. Split images (metadata + rootfs) travel
// as multipart bodies; unified ones as a single tarball.

import { PassThrough, Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import busboy from "busboy";
import { InterruptedError } from "../errors";
import { seg, signalOf, type IncusClient } from "./client";
import { IncusError } from "./errors";
import type { Signal } from "./instances";
import type { Operation } from "./operations";
import { byteCounter, type TransferOptions, type UploadSource } from "./transfer";

export interface ImageAlias {
  name: string;
  description: string;
}

export interface Image {
  fingerprint: string;
  project: string;
  aliases: ImageAlias[];
  architecture: string;
  auto_update: boolean;
  cached: boolean;
  filename: string;
  properties: Record<string, string>;
  public: boolean;
  profiles: string[];
  size: number;
  type: "container" | "virtual-machine" | string;
  expires_at?: string;
  created_at?: string;
  uploaded_at?: string;
  update_source?: unknown;
}

export interface ImageAliasEntry {
  name: string;
  description: string;
  target: string;
  type: string;
}

/** Images of one project, or of all projects when `project` is undefined. */
export async function getImages(c: IncusClient, project?: string, opts: Signal = {}): Promise<Image[]> {
  const query = project === undefined ? { recursion: 1, "all-projects": true } : { recursion: 1, project };
  const list = await c.list<Image>("/1.0/images", "List images", { query, ...opts });
  return list.map((i) => ({ ...i, project: i.project || project || "default" }));
}

export function getImageAliases(c: IncusClient, project: string, opts: Signal = {}): Promise<ImageAliasEntry[]> {
  return c.list<ImageAliasEntry>("/1.0/images/aliases", "List image aliases", { query: { recursion: 1, project }, ...opts });
}

export async function createImageAlias(c: IncusClient, project: string, alias: { name: string; description: string; target: string }, opts: Signal = {}) {
  await c.sync("POST", "/1.0/images/aliases", `Create image alias ${alias.name}`, { query: { project }, body: alias, ...opts });
}

export async function updateImageAlias(c: IncusClient, project: string, alias: { name: string; description: string; target: string }, opts: Signal = {}) {
  await c.sync("PUT", `/1.0/images/aliases/${seg(alias.name)}`, `Update image alias ${alias.name}`, {
    query: { project },
    body: { description: alias.description, target: alias.target },
    ...opts,
  });
}

/** Sets the writable fields of an image. */
export async function updateImage(
  c: IncusClient,
  project: string,
  fingerprint: string,
  put: { auto_update: boolean; properties: Record<string, string>; public: boolean; profiles: string[]; expires_at?: string },
  opts: Signal = {},
) {
  await c.sync("PUT", `/1.0/images/${seg(fingerprint)}`, `Update image ${fingerprint.slice(0, 12)}`, { query: { project }, body: put, ...opts });
}

export type ImagePart = "unified" | "meta" | "rootfs";

export interface ImageFileParts {
  /** Unified image: the tarball; split image: the metadata tarball. */
  meta: { name: string; size: number };
  /** Split image only. */
  rootfs?: { name: string; size: number; field: string };
}

/**
 * Streams an image's files. `sinkFor(part)` gives the writable for each part: "unified" for a
 * single-file image, "meta" then "rootfs" for a split one (the order they arrive in).
 */
export async function getImageFile(
  c: IncusClient,
  project: string,
  fingerprint: string,
  sinkFor: (part: ImagePart) => Promise<Writable>,
  opts: TransferOptions = {},
): Promise<ImageFileParts> {
  const what = `Download image ${fingerprint.slice(0, 12)}`;
  const res = await c.bulk("GET", `/1.0/images/${seg(fingerprint)}/export`, what, {
    query: { project },
    ...signalOf(opts),
    headersTimeout: 300_000,
    bodyTimeout: 300_000,
  });
  const ctype = String(res.headers["content-type"] ?? "application/octet-stream");
  const lengthHeader = res.headers["content-length"];
  const total = typeof lengthHeader === "string" ? Number(lengthHeader) : undefined;
  const counter = byteCounter(total, opts.onProgress);
  try {
    if (!ctype.startsWith("multipart/form-data")) {
      const disposition = String(res.headers["content-disposition"] ?? "");
      const name = /filename="?([^";]+)"?/.exec(disposition)?.[1] ?? `${fingerprint}.tar`;
      const sink = await sinkFor("unified");
      await pipeline(res.body, counter, sink, signalOf(opts));
      return { meta: { name, size: counter.bytes() } };
    }
    return await readMultipart(res.body, ctype, counter, sinkFor, opts.signal);
  } catch (err) {
    res.body.destroy();
    if (opts.signal?.aborted) throw new InterruptedError();
    if (err instanceof IncusError) throw err;
    throw new IncusError(`${what}: ${(err as Error).message}`, { cause: err });
  }
}

async function readMultipart(
  body: Readable,
  ctype: string,
  counter: PassThrough | NodeJS.ReadWriteStream,
  sinkFor: (part: ImagePart) => Promise<Writable>,
  signal?: AbortSignal,
): Promise<ImageFileParts> {
  const parts: Partial<ImageFileParts> = {};
  const bb = busboy({ headers: { "content-type": ctype }, limits: { fileSize: Number.MAX_SAFE_INTEGER, files: 2, fields: 0 } });
  const pending: Promise<void>[] = [];
  bb.on("file", (field, stream, info) => {
    const role = field === "metadata" ? "meta" : field === "rootfs" || field === "rootfs.img" ? "rootfs" : undefined;
    if (!role) {
      stream.resume();
      return;
    }
    const sizer = byteCounter(undefined);
    const previous = pending.at(-1);
    pending.push(
      (async () => {
        // Hold the part's data until its sink exists; busboy pauses on backpressure. A part
        // starts only once the one before it is completely written: sinks may share a hash of
        // all parts in order (an image's fingerprint), and the first part's last chunks may
        // still be queued in its sink when the next part begins to arrive.
        stream.pause();
        await previous;
        const sink = await sinkFor(role);
        await pipeline(stream, sizer, sink, signal === undefined ? {} : { signal });
        const entry = { name: info.filename ?? field, size: sizer.bytes() };
        if (role === "meta") parts.meta = entry;
        else parts.rootfs = { ...entry, field };
      })(),
    );
  });
  const done = new Promise<void>((resolve, reject) => {
    bb.on("close", resolve);
    bb.on("error", reject);
  });
  await pipeline(body, counter as NodeJS.ReadWriteStream, bb, signal === undefined ? {} : { signal });
  await done;
  await Promise.all(pending);
  if (!parts.meta || !parts.rootfs) throw new Error("the server sent an incomplete split image");
  return parts as ImageFileParts;
}

/**
 * Uploads an image: one file (unified) or metadata + rootfs (split, sent as multipart with the
 * same field names Incus's own client uses). Returns the operation that adds it.
 */
export async function createImage(
  c: IncusClient,
  project: string,
  files: { meta: UploadSource & { name: string }; rootfs?: UploadSource & { name: string; field: string } },
  headers: Record<string, string>,
  opts: TransferOptions = {},
): Promise<Operation> {
  const what = "Import image";
  let body: Readable;
  let length: number;
  let ctype: string;
  if (!files.rootfs) {
    length = files.meta.size;
    body = files.meta.stream;
    ctype = "application/octet-stream";
  } else {
    const boundary = `incus-backup-${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
    const head = (field: string, name: string) =>
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${field}"; filename="${name.replace(/"/g, "")}"\r\n` +
          `Content-Type: application/octet-stream\r\n\r\n`,
      );
    const metaHead = head("metadata", files.meta.name);
    const rootHead = Buffer.concat([Buffer.from("\r\n"), head(files.rootfs.field, files.rootfs.name)]);
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
    length = metaHead.length + files.meta.size + rootHead.length + files.rootfs.size + tail.length;
    const { meta, rootfs } = files;
    body = Readable.from(
      (async function* () {
        yield metaHead;
        yield* meta.stream;
        yield rootHead;
        yield* rootfs.stream;
        yield tail;
      })(),
    );
    ctype = `multipart/form-data; boundary=${boundary}`;
  }
  const counter = byteCounter(length, opts.onProgress);
  body.on("error", (err) => counter.destroy(err));
  body.pipe(counter);
  const res = await c
    .raw("POST", "/1.0/images", what, {
      query: { project },
      headers: { "content-type": ctype, "content-length": String(length), ...headers },
      body: counter,
      ...signalOf(opts),
      headersTimeout: 0,
      bodyTimeout: 300_000,
    })
    .finally(() => {
      body.destroy();
      files.meta.stream.destroy();
      files.rootfs?.stream.destroy();
    });
  return c.operationFrom(await res.body.json(), what);
}

export async function deleteImage(c: IncusClient, project: string, fingerprint: string, opts: Signal = {}) {
  const op = await c.operation("DELETE", `/1.0/images/${seg(fingerprint)}`, `Delete image ${fingerprint.slice(0, 12)}`, { query: { project }, ...opts });
  await op.wait(opts);
}
