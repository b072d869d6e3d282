// Restore planning: what each selected item restores from, what it replaces, what stops and starts.

import { describe, expect, it } from "vitest";
import { NotFoundError, UsageError } from "../../../src/errors";
import { isDestructive, olderRunNotes, planRestore, type Candidate, type LiveState, type Plan, type PlanOptions, type Step } from "../../../src/core/plan";
import { itemLabel, type Selection } from "../../../src/core/selection";
import type { NicIdentity } from "../../../src/core/nics";
import type { Manifest } from "../../../src/core/manifest";

const SHA = "a".repeat(64);

function instance(project: string, name: string, version: string, status = "Stopped"): Candidate {
  return candidate({ kind: "instance", project, name, version, status, files: [{ name: "instance.tar.zst", size: 100, sha256: SHA }] });
}

function volume(project: string, pool: string, name: string, version: string): Candidate {
  return candidate({ kind: "volume", project, pool, name, version, files: [{ name: "volume.tar.zst", size: 200, sha256: SHA }] });
}

function candidate(m: Pick<Manifest, "kind" | "project" | "name" | "version" | "files"> & Partial<Manifest>): Candidate {
  const manifest: Manifest = {
    format: 1,
    created: "2025-09-14T03:00:02.000Z",
    tool: { name: "incus-backup", version: "test" },
    server: {},
    options: {},
    ...m,
  };
  const location = ["/repo", `${m.kind}s`, m.project, ...(m.pool === undefined ? [] : [m.pool]), m.name, m.version].join("/");
  return { manifest, location, size: manifest.files.reduce((n, f) => n + f.size, 0) };
}

type User = { project: string; name: string; running: boolean };

function image(project: string, fingerprint: string, version: string, aliases: string[]): Candidate {
  return candidate({ kind: "image", project, name: fingerprint, aliases, version, files: [{ name: "image.tar.zst", size: 300, sha256: SHA }] });
}

function live(
  instances: Record<string, string> = {},
  volumes: Record<string, User[]> = {},
  images: string[] = [],
  aliases: Record<string, string> = {},
): LiveState {
  return {
    instances: new Map(Object.entries(instances).map(([k, status]) => [k, { status }])),
    volumes: new Map(Object.entries(volumes).map(([k, users]) => [k, [{ users }]])),
    images: new Set(images),
    aliases: new Map(Object.entries(aliases)),
  };
}

function opts(selection: Partial<Selection>, rest: Partial<PlanOptions> = {}): PlanOptions {
  return { selection: { kinds: ["volume", "instance"], names: [], ...selection }, noStart: false, ...rest };
}

/** A compact view of the steps: "op target from version". */
function summary(plan: Plan): string[] {
  return plan.steps.map((s) => {
    const t = s.target;
    const where = t.kind === "volume" ? `${t.project}/${t.pool}/${t.name}` : `${t.project}/${t.name}`;
    return `${s.op} ${t.kind} ${where} from ${s.source.manifest.version}`;
  });
}

function only<T extends Step["op"]>(plan: Plan, op: T): Extract<Step, { op: T }> {
  expect(plan.steps).toHaveLength(1);
  const step = plan.steps[0]!;
  expect(step.op).toBe(op);
  return step as Extract<Step, { op: T }>;
}

describe("planRestore: missing items are created", () => {
  it.each<[string, boolean, boolean]>([
    ["Running", false, true],
    ["Running", true, false],
    ["Stopped", false, false],
    ["Frozen", false, false],
  ])("an instance backed up %s (noStart %s) -> start %s", (status, noStart, start) => {
    const plan = planRestore([instance("default", "web", "20250914-030002", status)], live(), opts({ kinds: ["instance"] }, { noStart }));
    const step = only(plan, "create");
    expect(step.start).toBe(start);
    expect(step.target).toEqual({ kind: "instance", project: "default", name: "web" });
    expect(isDestructive(plan)).toBe(false);
  });

  it("creates a missing volume and never starts anything for it", () => {
    const plan = planRestore([volume("default", "fast", "data", "20250914-030002")], live(), opts({ kinds: ["volume"] }));
    const step = only(plan, "create");
    expect(step.start).toBe(false);
    expect(step.target).toEqual({ kind: "volume", project: "default", pool: "fast", name: "data" });
  });

  it("does not take a same-named volume in another pool, or instance in another project, for the target", () => {
    const plan = planRestore(
      [volume("default", "fast", "data", "20250914-030002"), instance("default", "web", "20250914-030002")],
      live({ "prod/web": "Running" }, { "default/slow/data": [] }),
      opts({}),
    );
    expect(plan.steps.map((s) => s.op)).toEqual(["create", "create"]);
  });
});

describe("planRestore: existing instances are replaced", () => {
  it.each<[string, boolean, boolean, boolean]>([
    ["Running", false, true, true],
    ["Running", true, true, false],
    ["Stopped", false, false, false],
    ["Stopped", true, false, false],
  ])("live status %s, noStart %s -> wasRunning %s, start %s", (status, noStart, wasRunning, start) => {
    const plan = planRestore(
      [instance("default", "web", "20250914-030002", "Running")],
      live({ "default/web": status }),
      opts({ kinds: ["instance"] }, { noStart }),
    );
    const step = only(plan, "replace");
    expect(step.wasRunning).toBe(wasRunning);
    expect(step.start).toBe(start);
    expect(isDestructive(plan)).toBe(true);
  });

  it("goes by the live status, not the status at backup time", () => {
    const plan = planRestore([instance("default", "web", "20250914-030002", "Stopped")], live({ "default/web": "Running" }), opts({}));
    expect(only(plan, "replace").start).toBe(true);
  });
});

describe("planRestore: NICs meet the server's other instances", () => {
  /** An instance backed up with eth0 on incusbr0 (MAC ...:01) and eth1 on lan with a static address. */
  function nicInstance(name: string, status = "Running"): Candidate {
    const c = instance("default", name, "20250914-030002", status);
    c.manifest.object = {
      config: { "volatile.eth0.hwaddr": "10:66:6a:00:00:01", "volatile.eth1.hwaddr": "10:66:6a:00:00:02" },
      expanded_devices: { eth0: { type: "nic", network: "incusbr0" }, eth1: { type: "nic", network: "lan", "ipv4.address": "10.0.0.5" } },
    };
    return c;
  }
  const theSame: NicIdentity[] = [
    { device: "eth0", network: "incusbr0", hwaddr: "10:66:6a:00:00:01" },
    { device: "eth1", network: "lan", hwaddr: "10:66:6a:00:00:02", ipv4: "10.0.0.5" },
  ];
  const withNics = (instances: Record<string, { status: string; nics: typeof theSame }>): LiveState => ({ ...live(), instances: new Map(Object.entries(instances)) });

  it("a replace keeps the backup's MACs and addresses: the instance it replaces does not count", () => {
    const plan = planRestore([nicInstance("web")], withNics({ "default/web": { status: "Running", nics: theSame } }), opts({ kinds: ["instance"] }));
    const step = only(plan, "replace");
    expect(step.freshMacs).toBe(false);
    expect(step.notes).toEqual([]);
    expect(step.start).toBe(true);
  });

  it("a copy under --target-name gets new MACs and, with the original's static address, is created stopped", () => {
    const plan = planRestore([nicInstance("web")], withNics({ "default/web": { status: "Running", nics: theSame } }), opts({ kinds: ["instance"] }, { targetName: "web-copy" }));
    const step = only(plan, "create");
    expect(step.freshMacs).toBe(true);
    expect(step.start).toBe(false);
    expect(step.notes).toEqual([
      "it gets new MACs, as a copy made by `incus copy` would",
      "eth1's ipv4.address 10.0.0.5 is held by default/web: it is left stopped (Incus would refuse to start it; change the address first)",
    ]);
  });

  it("a copy whose original is gone keeps nothing of it but gets new MACs too, and starts", () => {
    const plan = planRestore([nicInstance("web")], withNics({}), opts({ kinds: ["instance"] }, { targetName: "web-copy" }));
    const step = only(plan, "create");
    expect(step.freshMacs).toBe(true);
    expect(step.start).toBe(true);
  });

  it("an instance restored under its own name keeps its MACs, unless another instance uses one now", () => {
    const free = only(planRestore([nicInstance("web")], withNics({}), opts({ kinds: ["instance"] })), "create");
    expect(free.freshMacs).toBe(false);
    expect(free.notes).toEqual([]);
    const taken = only(
      planRestore([nicInstance("web")], withNics({ "default/newer": { status: "Stopped", nics: [{ device: "eth0", network: "incusbr0", hwaddr: "10:66:6a:00:00:01" }] } }), opts({ kinds: ["instance"] })),
      "create",
    );
    expect(taken.freshMacs).toBe(true);
    expect(taken.start).toBe(true);
    expect(taken.notes).toEqual(["it gets new MACs: eth0's MAC 10:66:6a:00:00:01 is in use by default/newer"]);
  });

  it("a replace whose static address another instance holds now says it will not start and the original comes back", () => {
    const plan = planRestore(
      [nicInstance("web")],
      withNics({ "default/web": { status: "Running", nics: [] }, "default/db": { status: "Stopped", nics: [{ device: "eth0", network: "lan", ipv4: "10.0.0.5" }] } }),
      opts({ kinds: ["instance"] }),
    );
    const step = only(plan, "replace");
    expect(step.start).toBe(true);
    expect(step.notes).toEqual(["eth1's ipv4.address 10.0.0.5 is held by default/db: the restored instance will fail to start, and the original is then put back"]);
  });
});

describe("planRestore: existing volumes get their contents replaced", () => {
  const users: User[] = [
    { project: "default", name: "app", running: true },
    { project: "default", name: "idle", running: false },
    { project: "other", name: "worker", running: true },
  ];

  it("stops the running users and starts them again", () => {
    const plan = planRestore([volume("default", "fast", "data", "20250914-030002")], live({}, { "default/fast/data": users }), opts({}));
    const step = only(plan, "replace-contents");
    expect(step.restart).toEqual([
      { project: "default", name: "app", running: true },
      { project: "other", name: "worker", running: true },
    ]);
    expect(step.stopOnly).toEqual([]);
    expect(isDestructive(plan)).toBe(true);
  });

  it("with noStart, stops the running users and leaves them stopped", () => {
    const plan = planRestore([volume("default", "fast", "data", "20250914-030002")], live({}, { "default/fast/data": users }), opts({}, { noStart: true }));
    const step = only(plan, "replace-contents");
    expect(step.restart).toEqual([]);
    expect(step.stopOnly.map((u) => u.name)).toEqual(["app", "worker"]);
  });

  it("only stops users that are replaced later in the same plan; their own step starts them", () => {
    const plan = planRestore(
      [instance("default", "app", "20250914-030002", "Running"), volume("default", "fast", "data", "20250914-030002")],
      live({ "default/app": "Running", "other/worker": "Running" }, { "default/fast/data": users }),
      opts({ project: "default" }),
    );
    expect(summary(plan)).toEqual([
      "replace-contents volume default/fast/data from 20250914-030002",
      "replace instance default/app from 20250914-030002",
    ]);
    const [vol, inst] = plan.steps as [Extract<Step, { op: "replace-contents" }>, Extract<Step, { op: "replace" }>];
    expect(vol.restart.map((u) => `${u.project}/${u.name}`)).toEqual(["other/worker"]);
    expect(vol.stopOnly.map((u) => `${u.project}/${u.name}`)).toEqual(["default/app"]);
    expect(inst.wasRunning).toBe(true);
    expect(inst.start).toBe(true);
  });

  it("restarts a user that is created (not replaced) by the plan like any other", () => {
    // An instance in the plan that does not exist yet cannot be a user of the volume; one of the
    // same name in another project is a different instance.
    const plan = planRestore(
      [instance("prod", "app", "20250914-030002", "Running"), volume("default", "fast", "data", "20250914-030002")],
      live({ "default/app": "Running" }, { "default/fast/data": [{ project: "default", name: "app", running: true }] }),
      opts({}),
    );
    const vol = plan.steps[0] as Extract<Step, { op: "replace-contents" }>;
    expect(vol.restart.map((u) => u.name)).toEqual(["app"]);
    expect(vol.stopOnly).toEqual([]);
    expect(plan.steps[1]?.op).toBe("create");
  });
});

describe("planRestore: order and versions", () => {
  const candidates = [
    instance("default", "web", "20250913-030000"),
    instance("default", "web", "20250914-150000"),
    instance("default", "web", "20250914-030002"),
    instance("default", "web", "20250915-030000"),
    volume("default", "fast", "data", "20250914-030002"),
    volume("default", "fast", "data", "20250915-030000"),
    instance("default", "db", "20250914-030002"),
  ];

  it("puts volumes before instances whatever the candidates' order", () => {
    for (const order of [candidates, [...candidates].reverse()]) {
      const kinds = planRestore(order, live(), opts({})).steps.map((s) => s.target.kind);
      expect(kinds).toEqual(["volume", "instance", "instance"]);
    }
  });

  it("picks the latest version of each item by default, with no notes", () => {
    const plan = planRestore(candidates, live(), opts({}));
    expect(summary(plan).sort()).toEqual([
      "create instance default/db from 20250914-030002",
      "create instance default/web from 20250915-030000",
      "create volume default/fast/data from 20250915-030000",
    ]);
    expect(plan.notes).toEqual([]);
    expect(plan.skipped).toEqual([]);
  });

  it("picks the latest version of the day for a day prefix and says so", () => {
    const plan = planRestore(candidates, live(), opts({ kinds: ["instance"], names: ["web"] }, { version: "20250914" }));
    expect(summary(plan)).toEqual(["create instance default/web from 20250914-150000"]);
    expect(plan.notes).toEqual(["instance default/web: --version 20250914 picked 20250914-150000"]);
  });

  it("adds no note when --version is a full version", () => {
    const plan = planRestore(candidates, live(), opts({ names: ["web"] }, { version: "20250914-030002" }));
    expect(summary(plan)).toEqual(["create instance default/web from 20250914-030002"]);
    expect(plan.notes).toEqual([]);
  });

  it("skips the items that have no matching version and restores the others", () => {
    const plan = planRestore(candidates, live(), opts({}, { version: "20250915" }));
    expect(summary(plan)).toEqual([
      "create volume default/fast/data from 20250915-030000",
      "create instance default/web from 20250915-030000",
    ]);
    expect(plan.skipped).toEqual([{ item: { kind: "instance", project: "default", name: "db" }, reason: "no version matching 20250915" }]);
  });

  it("refuses a version that nothing has, listing the available ones newest first", () => {
    const run = () => planRestore(candidates, live(), opts({ names: ["web"] }, { version: "2024" }));
    expect(run).toThrow(NotFoundError);
    expect(run).toThrow('no version matching "2024"; available: 20250915-030000, 20250914-150000, 20250914-030002, 20250913-030000');
  });

  it("lists only the available versions of the selected items", () => {
    const run = () => planRestore(candidates, live(), opts({ kinds: ["volume"] }, { version: "20250913" }));
    expect(run).toThrow(/available: 20250915-030000, 20250914-030002$/);
  });

  it("shortens a long list of available versions", () => {
    const many = Array.from({ length: 25 }, (_, i) => instance("default", "web", `202509${String(i + 1).padStart(2, "0")}-000000`));
    let message = "";
    try {
      planRestore(many, live(), opts({}, { version: "2024" }));
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/available: 20250925-000000, .*, 20250906-000000, \.\.\.$/);
    expect(message.split(", ")).toHaveLength(21);
  });
});

describe("planRestore: what the selection designates", () => {
  it("refuses a selection that matches nothing", () => {
    const run = () => planRestore([instance("default", "web", "20250914-030002")], live(), opts({ names: ["nope"] }));
    expect(run).toThrow(NotFoundError);
    expect(run).toThrow(/no backup of volumes, instances named "nope" in the repository/);
  });

  it("names what the repository has, images by alias and fingerprint", () => {
    const fp = (c: string) => c.repeat(64);
    const candidates = [
      image("default", fp("b"), "20250914-030002", ["web-base", "web"]),
      image("default", fp("c"), "20250914-030002", []),
      instance("default", "web", "20250914-030002"),
    ];
    const run = () => planRestore(candidates, live(), opts({ kinds: ["image"], names: ["nope"] }));
    expect(run).toThrow(NotFoundError);
    expect(run).toThrow(`no backup of images named "nope" in the repository; it has image default/cccccccccccc, image default/web-base,web (bbbbbbbbbbbb)`);
  });

  it("says so when the repository has nothing at all", () => {
    expect(() => planRestore([], live(), opts({ project: "prod" }))).toThrow(/^no backup of volumes, instances in project prod in the repository$/);
  });

  it("ignores kinds that are not selected", () => {
    const plan = planRestore(
      [instance("default", "data", "20250914-030002"), volume("default", "fast", "data", "20250914-030002")],
      live(),
      opts({ kinds: ["volume"], names: ["data"] }),
    );
    expect(summary(plan)).toEqual(["create volume default/fast/data from 20250914-030002"]);
  });

  it("refuses a bare volume name found in two pools, listing both", () => {
    const run = () =>
      planRestore(
        [volume("default", "fast", "data", "20250914-030002"), volume("default", "slow", "data", "20250914-030002")],
        live(),
        opts({ names: ["data"] }),
      );
    expect(run).toThrow(UsageError);
    expect(run).toThrow('"data" matches 2 volumes: volume default/fast/data, volume default/slow/data; name the volume as POOL/NAME, or add --project');
  });

  it("takes POOL/NAME to tell such volumes apart", () => {
    const plan = planRestore(
      [volume("default", "fast", "data", "20250914-030002"), volume("default", "slow", "data", "20250914-030002")],
      live(),
      opts({ names: ["slow/data"] }),
    );
    expect(summary(plan)).toEqual(["create volume default/slow/data from 20250914-030002"]);
  });

  it("refuses an instance name found in two projects", () => {
    const run = () =>
      planRestore([instance("default", "web", "20250914-030002"), instance("prod", "web", "20250914-030002")], live(), opts({ names: ["web"] }));
    expect(run).toThrow(UsageError);
    expect(run).toThrow('"web" matches 2 instances: instance default/web, instance prod/web; add --project');
  });

  it("allows the same name for an instance and a volume", () => {
    const plan = planRestore(
      [instance("default", "data", "20250914-030002"), volume("default", "fast", "data", "20250914-030002")],
      live(),
      opts({ names: ["data"] }),
    );
    expect(plan.steps).toHaveLength(2);
  });

  it("restores everything in every project without names", () => {
    const plan = planRestore([instance("default", "web", "20250914-030002"), instance("prod", "web", "20250914-030002")], live(), opts({}));
    expect(summary(plan)).toHaveLength(2);
  });

  it("filters by --project", () => {
    const plan = planRestore(
      [instance("default", "web", "20250914-030002"), instance("prod", "web", "20250914-030002"), volume("prod", "fast", "data", "20250914-030002")],
      live(),
      opts({ names: ["web"], project: "prod" }),
    );
    expect(summary(plan)).toEqual(["create instance prod/web from 20250914-030002"]);
    expect(plan.notes).toEqual([]);
  });

  it("restores into a --project that has no backups when the rest of the selection matches", () => {
    const plan = planRestore(
      [instance("default", "web", "20250914-030002", "Running"), instance("default", "db", "20250914-030002")],
      live({ "staging/web": "Stopped" }),
      opts({ kinds: ["instance"], names: ["web"], project: "staging" }),
    );
    const step = only(plan, "replace");
    expect(step.target).toEqual({ kind: "instance", project: "staging", name: "web" });
    expect(step.source.manifest.project).toBe("default");
    expect(plan.notes).toEqual(["instance default/web goes into project staging"]);
  });

  it("refuses to bring two items onto the same name in the target project", () => {
    const run = () =>
      planRestore(
        [instance("default", "web", "20250914-030002"), instance("prod", "web", "20250914-030002"), instance("prod", "db", "20250914-030002")],
        live(),
        opts({ project: "staging" }),
      );
    expect(run).toThrow(UsageError);
    expect(run).toThrow("instance default/web and instance prod/web would both be restored as instance staging/web; add --name, or restore one project at a time");
  });

  it("still refuses an ambiguous name when restoring into another project", () => {
    const run = () =>
      planRestore(
        [instance("default", "web", "20250914-030002"), instance("prod", "web", "20250914-030002")],
        live(),
        opts({ names: ["web"], project: "staging" }),
      );
    expect(run).toThrow(UsageError);
  });

  it("refuses --project naming no backups when nothing else matches either", () => {
    expect(() => planRestore([instance("default", "web", "20250914-030002")], live(), opts({ names: ["db"], project: "staging" }))).toThrow(NotFoundError);
  });
});

describe("planRestore: a --name that matches nothing", () => {
  it("is refused even when other names match, and nothing is planned", () => {
    const run = () =>
      planRestore(
        [instance("default", "web", "20250914-030002"), volume("default", "fast", "data", "20250914-030002")],
        live({ "default/web": "Running" }),
        opts({ kinds: ["instance", "volume", "image"], names: ["web", "a/b/c"] }),
      );
    expect(run).toThrow(NotFoundError);
    expect(run).toThrow(/nothing in the repository is named "a\/b\/c" among the instance, volume, image backups; nothing was changed/);
  });

  it("counts names matched in another project when restoring into --project", () => {
    const plan = planRestore([instance("default", "web", "20250914-030002")], live(), opts({ kinds: ["instance"], names: ["web"], project: "staging" }));
    expect(only(plan, "create").target).toEqual({ kind: "instance", project: "staging", name: "web" });
  });
});

describe("planRestore: --target-name", () => {
  it("refuses more than one item, naming them", () => {
    const run = () =>
      planRestore(
        [instance("default", "web", "20250914-030002"), instance("default", "db", "20250914-030002")],
        live(),
        opts({ kinds: ["instance"] }, { targetName: "copy" }),
      );
    expect(run).toThrow(UsageError);
    expect(run).toThrow("--target-name needs exactly one item, but the selection matches 2: instance default/web, instance default/db");
  });

  it("renames the target and leaves the source alone", () => {
    const plan = planRestore(
      [instance("default", "web", "20250914-030002", "Running"), instance("default", "db", "20250914-030002")],
      live({ "default/web": "Running" }),
      opts({ names: ["web"] }, { targetName: "web-restored" }),
    );
    const step = only(plan, "create");
    expect(step.target).toEqual({ kind: "instance", project: "default", name: "web-restored" });
    expect(step.source.manifest.name).toBe("web");
    expect(step.source.location).toBe("/repo/instances/default/web/20250914-030002");
    expect(step.start).toBe(true);
    expect(isDestructive(plan)).toBe(false);
  });

  it("checks it as an instance name when the one item is an instance, whatever the selectors", () => {
    const run = (targetName: string) =>
      planRestore(
        [instance("default", "web", "20250914-030002"), volume("default", "fast", "data", "20250914-030002")],
        live(),
        opts({ kinds: ["instance", "volume"], names: ["web"] }, { targetName }),
      );
    expect(() => run("name\u00a0nbsp")).toThrow(UsageError);
    expect(() => run("a_b")).toThrow(/invalid --target-name "a_b"/);
    expect(only(run("web-copy"), "create").target.name).toBe("web-copy");
  });

  it("replaces an existing item of the target name", () => {
    const plan = planRestore(
      [volume("default", "fast", "data", "20250914-030002")],
      live({}, { "default/fast/copy": [] }),
      opts({ names: ["fast/data"] }, { targetName: "copy" }),
    );
    const step = only(plan, "replace-contents");
    expect(step.target).toEqual({ kind: "volume", project: "default", pool: "fast", name: "copy" });
    expect(isDestructive(plan)).toBe(true);
  });
});

describe("planRestore: images", () => {
  const FP = "9f3c1e2a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e";
  const OTHER = "1".repeat(64);
  const sel = { kinds: ["image" as const, "volume" as const, "instance" as const] };

  it("uploads a missing image and creates its aliases, before volumes and instances", () => {
    const plan = planRestore(
      [instance("default", "web", "20250914-030002"), image("default", FP, "20250914-030002", ["noble", "ubuntu/24.04"])],
      live(),
      opts(sel),
    );
    expect(plan.steps.map((s) => s.op)).toEqual(["image", "create"]);
    expect(plan.steps[0]).toMatchObject({ exists: false, createAliases: ["noble", "ubuntu/24.04"], moveAliases: [] });
    expect(isDestructive(plan)).toBe(false);
  });

  it("does not upload an image that is there, and leaves aliases that point at it", () => {
    const plan = planRestore([image("default", FP, "20250914-030002", ["noble"])], live({}, {}, [`default/${FP}`], { "default/noble": FP }), opts(sel));
    expect(only(plan, "image")).toMatchObject({ exists: true, createAliases: [], moveAliases: [] });
    expect(isDestructive(plan)).toBe(false);
  });

  it("moves an alias that points at another image, which is destructive", () => {
    const plan = planRestore([image("default", FP, "20250914-030002", ["noble"])], live({}, {}, [], { "default/noble": OTHER }), opts(sel));
    expect(only(plan, "image")).toMatchObject({ exists: false, createAliases: [], moveAliases: [{ name: "noble", from: OTHER }] });
    expect(isDestructive(plan)).toBe(true);
  });

  it("finds an image by alias or fingerprint prefix, and keeps its name under --target-name", () => {
    expect(only(planRestore([image("default", FP, "20250914-030002", ["noble"])], live(), opts({ ...sel, names: ["noble"] })), "image").target.name).toBe(FP);
    expect(only(planRestore([image("default", FP, "20250914-030002", [])], live(), opts({ ...sel, names: [FP.slice(0, 12)] })), "image")).toBeDefined();
    const renamed = planRestore([image("default", FP, "20250914-030002", ["noble"])], live(), opts({ ...sel, names: ["noble"] }, { targetName: "x" }));
    expect(only(renamed, "image").target.name).toBe(FP);
  });

  it("finds an image by an alias only an older version had, and restores the latest version", () => {
    const plan = planRestore(
      [image("default", FP, "20250914-030002", ["noble", "old-name"]), image("default", FP, "20250915-030002", ["noble"])],
      live(),
      opts({ ...sel, names: ["old-name"] }),
    );
    expect(only(plan, "image").source.manifest.version).toBe("20250915-030002");
  });

  it("refuses an alias found in two projects", () => {
    const run = () =>
      planRestore([image("default", FP, "20250914-030002", ["noble"]), image("prod", OTHER, "20250914-030002", ["noble"])], live(), opts({ ...sel, names: ["noble"] }));
    expect(run).toThrow(UsageError);
    expect(run).toThrow('"noble" matches 2 images: image default/noble, image prod/noble; add --project');
  });

  it("lets the same image from two projects go into one project", () => {
    const plan = planRestore(
      [image("default", FP, "20250914-030002", ["noble"]), image("prod", FP, "20250914-030002", ["noble"])],
      live(),
      opts({ kinds: ["image"], project: "staging" }),
    );
    expect(plan.steps.map((s) => `${s.op} ${s.target.project}/${s.target.name}`)).toEqual([`image staging/${FP}`, `image staging/${FP}`]);
  });
});

describe("isDestructive", () => {
  const c = instance("default", "web", "20250914-030002");
  const t = { kind: "instance" as const, project: "default", name: "web" };
  it.each<[string, Step[], boolean]>([
    ["no steps", [], false],
    ["only creates", [{ op: "create", source: c, target: t, start: false }], false],
    ["a replace", [{ op: "create", source: c, target: t, start: false }, { op: "replace", source: c, target: t, wasRunning: false, start: false }], true],
    ["a contents replace", [{ op: "replace-contents", source: c, target: t, restart: [], stopOnly: [] }], true],
  ])("%s -> %s", (_label, steps, expected) => {
    expect(isDestructive({ steps, skipped: [], notes: [] })).toBe(expected);
  });
});

describe("olderRunNotes: one point in time", () => {
  const candidates = [
    instance("default", "web", "20250914-030000"),
    instance("default", "web", "20250915-030000"),
    // db failed in the latest run: its latest complete version is the day before
    instance("default", "db", "20250914-030000"),
    volume("default", "tank", "data", "20250915-030000"),
  ];

  it("names every item that comes from an older run than the latest, and the database too", () => {
    const plan = planRestore(candidates, live(), opts({}));
    expect(summary(plan)).toContain("create instance default/db from 20250914-030000");
    expect(olderRunNotes(plan)).toEqual(["instance default/db comes from 20250914-030000, an older run than 20250915-030000: that run has no complete backup of it"]);
    expect(olderRunNotes(plan, "20250913-030000")).toEqual([
      "instance default/db comes from 20250914-030000, an older run than 20250915-030000: that run has no complete backup of it",
      "database comes from 20250913-030000, an older run than 20250915-030000: that run has no complete backup of it",
    ]);
  });

  it("says nothing when every item comes from the same run, or there is only one", () => {
    expect(olderRunNotes(planRestore(candidates, live(), opts({ names: ["web", "data"] })))).toEqual([]);
    expect(olderRunNotes(planRestore(candidates, live(), opts({ names: ["db"] })))).toEqual([]);
  });

  it("applies --version to every item: an item without a matching version is skipped, not taken from another run", () => {
    const plan = planRestore(candidates, live(), opts({}, { version: "20250915" }));
    expect(summary(plan).join("\n")).not.toMatch(/db/);
    expect(plan.skipped).toEqual([{ item: expect.objectContaining({ name: "db" }), reason: "no version matching 20250915" }]);
  });
});

describe("planRestore: a cluster's volumes of one name on two members (a local pool), each its own item", () => {
  const V = "20250914-030002";
  const onMember = (member: string, version = V) => candidate({ kind: "volume", project: "default", pool: "local", name: "vd", member, version, files: [{ name: "volume.tar.zst", size: 200, sha256: SHA }] });
  const cluster = { clustered: true, connected: "node1", members: ["node1", "node2"] };
  const users = (name: string) => [{ project: "default", name, running: true }];
  const both = (): LiveState => ({
    ...live(),
    volumes: new Map([
      [
        "default/local/vd",
        [
          { users: users("c1"), location: "node1" },
          { users: users("c2"), location: "node2" },
        ],
      ],
    ]),
  });
  const vdOnly = (s: Partial<Selection> = {}) => opts({ kinds: ["volume"], names: ["vd"], ...s });

  it("into the cluster: each replaces its own member's volume, stopping only that member's users", () => {
    const plan = planRestore([onMember("node1"), onMember("node2")], both(), { ...vdOnly(), cluster });
    expect(plan.steps.map((s) => [s.op, itemLabel(s.target), s.op === "replace-contents" ? [s.member, s.restart.map((u) => u.name), s.notes] : []])).toEqual([
      ["replace-contents", "volume default/local/vd on node1", ["node1", ["c1"], ["on member node1, where it is"]]],
      ["replace-contents", "volume default/local/vd on node2", ["node2", ["c2"], ["on member node2, where it is"]]],
    ]);
  });

  it("into the cluster, where only the other member has one of that name: created on its own member, the other left alone", () => {
    const state: LiveState = { ...live(), volumes: new Map([["default/local/vd", [{ users: users("c1"), location: "node1" }]]]) };
    const step = only(planRestore([onMember("node2")], state, { ...vdOnly(), cluster }), "create");
    expect([step.member, itemLabel(step.target), step.notes]).toEqual(["node2", "volume default/local/vd on node2", ["on member node2, where it was backed up"]]);
  });

  it("onto a single server: refused before anything changes, naming both members and how to restore one", () => {
    const state: LiveState = { ...live(), volumes: new Map([["default/local/vd", [{ users: users("c1"), location: "none" }]]]) };
    for (const server of [undefined, { clustered: false, members: [] }]) {
      const run = () => planRestore([onMember("node1"), onMember("node2")], state, { ...vdOnly(), ...(server ? { cluster: server } : {}) });
      expect(run).toThrow(UsageError);
      expect(run).toThrow(
        "volume default/local/vd on node1 and volume default/local/vd on node2 would both be restored as volume default/local/vd (this server is not a cluster); nothing was changed: restore one at a time, with --member node1 or --member node2 (and --target-name NEW to restore the other beside it)",
      );
    }
  });

  it("onto a cluster that has neither member: refused as well (both would land on the member talked to)", () => {
    const other = { clustered: true, connected: "a", members: ["a", "b"] };
    const run = () => planRestore([onMember("node1"), onMember("node2")], live(), { ...vdOnly(), cluster: other });
    expect(run).toThrow(/volume default\/local\/vd on node1 and volume default\/local\/vd on node2 would both be restored as volume default\/local\/vd on a; nothing was changed: restore one at a time, with --member node1 or --member node2/);
    // With --target-member, too: one member, one volume of a name.
    expect(() => planRestore([onMember("node1"), onMember("node2")], live(), { ...vdOnly(), cluster: other, targetMember: "b" })).toThrow(/would both be restored as volume default\/local\/vd on b/);
  });

  it("--member takes one of them; with --target-name it goes beside the other", () => {
    const state: LiveState = { ...live(), volumes: new Map([["default/local/vd", [{ users: users("c1"), location: "none" }]]]) };
    const one = planRestore([onMember("node1"), onMember("node2")], state, vdOnly({ member: "node2" }));
    expect(only(one, "replace-contents").source.manifest.member).toBe("node2");
    const beside = planRestore([onMember("node1"), onMember("node2")], state, { ...vdOnly({ member: "node2" }), targetName: "vd-from-node2" });
    const step = only(beside, "create");
    expect([step.target.name, step.source.manifest.member]).toEqual(["vd-from-node2", "node2"]);
    expect(() => planRestore([onMember("node1"), onMember("node2")], state, { ...vdOnly(), targetName: "x" })).toThrow(/--target-name needs exactly one item, but the selection matches 2: volume default\/local\/vd on node1, volume default\/local\/vd on node2/);
    expect(() => planRestore([onMember("node1")], state, vdOnly({ member: "node2" }))).toThrow(/no backup of volumes named "vd" on member node2 in the repository; it has volume default\/local\/vd on node1/);
  });

  it("--member takes an instance's versions by the member each was backed up on", () => {
    const on = (member: string, version: string) => candidate({ kind: "instance", project: "default", name: "web", member, version, status: "Stopped", files: [{ name: "instance.tar.zst", size: 100, sha256: SHA }] });
    const versions = [on("node1", "20250913-030002"), on("node2", "20250914-030002"), on("node1", "20250915-030002")];
    expect(only(planRestore(versions, live(), opts({ kinds: ["instance"], member: "node2" })), "create").source.manifest.version).toBe("20250914-030002");
    expect(only(planRestore(versions, live(), opts({ kinds: ["instance"] })), "create").source.manifest.version).toBe("20250915-030002");
  });

  it("a bare name on two members is not ambiguous; in two pools it still is", () => {
    const other = candidate({ kind: "volume", project: "default", pool: "fast", name: "vd", version: V, files: [{ name: "volume.tar.zst", size: 200, sha256: SHA }] });
    expect(planRestore([onMember("node1"), onMember("node2")], live(), { ...vdOnly(), cluster }).steps).toHaveLength(2);
    expect(() => planRestore([onMember("node1"), other], live(), vdOnly())).toThrow(/"vd" matches 2 volumes/);
  });
});
