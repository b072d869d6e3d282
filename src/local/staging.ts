// A staging directory on this machine for a file restore: the entries' data is kept here once
// read out of the archive, and written to the target only after the plan is checked and confirmed.

import { createHash } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { AppError, ExitCode } from "../errors";
import type { Stage } from "../engine/file_restore";

export class Staging implements Stage {
  private constructor(readonly dir: string) {}

  /** A fresh staging directory under `parent` (in the target directory itself for --to: the same file system, so files are renamed into place). */
  static async create(parent: string): Promise<Staging> {
    try {
      return new Staging(await mkdtemp(join(parent, ".incus-backup-staging-")));
    } catch (err) {
      throw new AppError(`cannot write in ${parent}: ${(err as Error).message}; nothing was changed`, ExitCode.Failure, { cause: err });
    }
  }

  /** The data goes to a file of its own (0600); its path is the ref. */
  async put(name: string, data: Readable): Promise<{ ref: string; sha256: string }> {
    const file = join(this.dir, name);
    const h = createHash("sha256");
    const tap = new Transform({
      transform(chunk: Buffer, _enc, done) {
        h.update(chunk);
        done(null, chunk);
      },
    });
    try {
      await pipeline(data, tap, createWriteStream(file, { mode: 0o600 }));
    } catch (err) {
      throw new AppError(`cannot stage ${file}: ${(err as Error).message}`, ExitCode.Failure, { cause: err });
    }
    return { ref: file, sha256: h.digest("hex") };
  }

  open(ref: string): Readable {
    return createReadStream(ref);
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
