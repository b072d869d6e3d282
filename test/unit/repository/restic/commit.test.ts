// A version's manifest is the last thing a restic backup saves. When the server went away right
// then, restic retries for many minutes: a run stopped meanwhile (its signal) must end at once,
// with nothing listed. A stand-in restic answers `cat config` and `snapshots`, and retries
// forever on `backup`, as 0.18 does against a REST server that is gone.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { InterruptedError } from "../../../../src/errors";
import { ResticStore } from "../../../../src/repository/restic/store";
import { STOP_GRACE_MS } from "../../../../src/repository/restic/run";
import { manifestFields } from "../../helpers/repo";

const ID = "ab".repeat(32);
let dir: string | undefined;

afterEach(async () => {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function standIn(): Promise<{ binary: string; state: string }> {
  dir = await mkdtemp(join(tmpdir(), "ibk-commit-"));
  const binary = join(dir, "restic");
  const retry = 'Save(<lock/0123>) returned error, retrying after 1.2s: Post \\"http://127.0.0.1:9/locks/0123\\": dial tcp 127.0.0.1:9: connect: connection refused';
  await writeFile(
    binary,
    `#!/bin/sh
case "$1" in
cat) echo '{"version":2,"id":"${ID}","chunker_polynomial":"3da3358b4dc173"}' ;;
snapshots) echo '[]' ;;
backup) cat >/dev/null; echo "${retry}" >&2; exec sleep 30 ;;
*) echo "unexpected: $*" >&2; exit 1 ;;
esac
`,
    { mode: 0o755 },
  );
  return { binary, state: join(dir, "state") };
}

describe("saving a version's manifest into restic", () => {
  it("stops at once with the run (InterruptedError) while restic retries a server that went away", async () => {
    const { binary, state } = await standIn();
    const store = new ResticStore({ repository: "rest:http://127.0.0.1:9/", binary, env: { RESTIC_PASSWORD: "x" } }, state);
    const key = { kind: "instance", project: "default", name: "web", pool: "default" } as const;
    const writer = await store.begin(key, "20261207-030000");
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const started = Date.now();
    const err = await writer.commit(manifestFields(key, "20261207-030000"), ac.signal).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InterruptedError);
    expect(Date.now() - started).toBeLessThan(STOP_GRACE_MS);
    await writer.abort();
  });
});
