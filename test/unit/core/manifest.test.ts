// The manifest shape check: everything read back from a repository passes through it.

import { describe, expect, it } from "vitest";
import { manifestProblem, type Manifest } from "../../../src/core/manifest";

const SHA = "0123456789abcdef".repeat(4);

function good(): Manifest {
  return {
    format: 1,
    kind: "volume",
    project: "default",
    pool: "fast",
    name: "data",
    version: "20250914-030002",
    created: "2025-09-14T03:00:02.123Z",
    tool: { name: "incus-backup", version: "0.1.0" },
    server: { name: "host", version: "6.0" },
    options: { compression: "zstd" },
    files: [
      { name: "volume.tar.zst", size: 1234, sha256: SHA },
      { name: "volume.json", size: 0, sha256: SHA },
    ],
  };
}

/** A manifest with one change applied, as a plain object (it may not fit the type any more). */
function with_(change: (m: Record<string, unknown> & { files: Array<Record<string, unknown>> }) => void): unknown {
  const m = JSON.parse(JSON.stringify(good())) as Record<string, unknown> & { files: Array<Record<string, unknown>> };
  change(m);
  return m;
}

describe("manifestProblem", () => {
  it("accepts a sound manifest", () => {
    expect(manifestProblem(good())).toBeUndefined();
    expect(manifestProblem(JSON.parse(JSON.stringify(good())))).toBeUndefined();
  });

  it("accepts an instance manifest without a pool and with no files", () => {
    expect(manifestProblem(with_((m) => ((m.kind = "instance"), delete m.pool, (m.files = []))))).toBeUndefined();
  });

  it.each<[string, unknown, RegExp]>([
    ["null", null, /not a JSON object/],
    ["an array", [], /not a JSON object/],
    ["a string", "manifest", /not a JSON object/],
    ["wrong format", with_((m) => (m.format = 2)), /unsupported manifest format 2/],
    ["format as a string", with_((m) => (m.format = "1")), /unsupported manifest format "1"/],
    ["no format", with_((m) => delete m.format), /unsupported manifest format/],
    ["unknown kind", with_((m) => (m.kind = "network")), /unknown kind "network"/],
    ["no kind", with_((m) => delete m.kind), /unknown kind/],
    ["project not a string", with_((m) => (m.project = 1)), /project/],
    ["unsafe name", with_((m) => (m.name = "../x")), /name is missing or unsafe/],
    ["dot-dot name", with_((m) => (m.name = "..")), /name is missing or unsafe/],
    ["empty name", with_((m) => (m.name = "")), /name is missing or unsafe/],
    ["no name", with_((m) => delete m.name), /name is missing or unsafe/],
    ["unsafe pool", with_((m) => (m.pool = "a/b")), /pool is unsafe/],
    ["pool not a string", with_((m) => (m.pool = 3)), /pool is unsafe/],
    ["bad version", with_((m) => (m.version = "20250230-000000")), /version/],
    ["version with a path", with_((m) => (m.version = "../20250914-030002")), /version/],
    ["no version", with_((m) => delete m.version), /version/],
    ["bad created", with_((m) => (m.created = "yesterday")), /created/],
    ["files not a list", with_((m) => ((m as Record<string, unknown>).files = {})), /files is not a list/],
    ["a null file entry", with_((m) => (m.files[0] = null as unknown as Record<string, unknown>)), /bad name/],
    ["file name with a path", with_((m) => (m.files[0]!.name = "../../etc/passwd")), /bad name/],
    ["file named manifest.json", with_((m) => (m.files[0]!.name = "manifest.json")), /bad name/],
    ["file named SHA256SUMS", with_((m) => (m.files[0]!.name = "SHA256SUMS")), /bad name/],
    ["negative size", with_((m) => (m.files[0]!.size = -1)), /volume.tar.zst: bad size/],
    ["fractional size", with_((m) => (m.files[0]!.size = 1.5)), /bad size/],
    ["size as a string", with_((m) => (m.files[0]!.size = "12")), /bad size/],
    ["short sha256", with_((m) => (m.files[0]!.sha256 = SHA.slice(1))), /volume.tar.zst: bad sha256/],
    ["upper-case sha256", with_((m) => (m.files[0]!.sha256 = SHA.toUpperCase())), /bad sha256/],
    ["non-hex sha256", with_((m) => (m.files[1]!.sha256 = "g".repeat(64))), /volume.json: bad sha256/],
    ["no sha256", with_((m) => delete m.files[0]!.sha256), /bad sha256/],
  ])("refuses %s", (_label, manifest, problem) => {
    expect(manifestProblem(manifest)).toMatch(problem);
  });
});
