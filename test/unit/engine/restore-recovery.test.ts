// recoverJournals: a restore (or a backup --stop) that died in any phase is finished or undone by
// the next run, against a fake Incus and an in-memory store.

import { describe, expect, it } from "vitest";
import { recoverJournals, type RestoreDeps } from "../../../src/engine/restore";
import { silentReporter } from "../../../src/engine/reporter";
import { inertConfig, savedIdentity } from "../../../src/core/nics";
import type { JournalEntry } from "../../../src/repository/store";
import { FakeIncus, type FakeInstance } from "../helpers/fake-incus";
import { MemoryStore } from "../helpers/memory-store";

const TEMP = "ibk-restore-0000aaaa";
const ASIDE = "ibk-old-0000bbbb";
const MAC0 = "00:16:3e:00:00:01";
const MAC1 = "00:16:3e:00:00:02";

/** The original instance: a NIC of its profile (eth0) and one of its own with a static address (eth1), protected, autostarted. */
const ORIGINAL: Pick<FakeInstance, "config" | "devices" | "profiles"> = {
  config: {
    "volatile.eth0.hwaddr": MAC0,
    "volatile.eth1.hwaddr": MAC1,
    "boot.autostart": "true",
    "security.protection.delete": "true",
    "user.origin": "original",
  },
  devices: { eth1: { type: "nic", network: "incusbr0", "ipv4.address": "10.0.0.5" } },
  profiles: ["default"],
};

/** The restored one, as imported from the backup of the original: the same MACs and devices. */
const RESTORED: Pick<FakeInstance, "config" | "devices" | "profiles"> = {
  config: { "volatile.eth0.hwaddr": MAC0, "volatile.eth1.hwaddr": MAC1, "user.origin": "restored" },
  devices: { eth1: { type: "nic", network: "incusbr0", "ipv4.address": "10.0.0.5" } },
  profiles: ["default"],
};

function world() {
  const fake = new FakeIncus();
  const store = new MemoryStore();
  const deps: RestoreDeps = { client: fake.client, store, reporter: silentReporter, now: () => new Date("2025-09-14T03:00:02Z") };
  return { fake, store, deps };
}

function instanceEntry(fake: FakeIncus, phase: JournalEntry["phase"], extra: Partial<JournalEntry> = {}): JournalEntry {
  return {
    id: "a1b2c3",
    kind: "instance",
    project: "default",
    name: "web",
    temp: TEMP,
    aside: ASIDE,
    phase,
    wasRunning: true,
    restart: [{ project: "default", name: "web" }],
    started: "2025-09-14T02:59:00Z",
    // From the swap on, the journal holds what the swap takes away from the original.
    ...(phase === "import" ? {} : { original: savedIdentity(fake.view(fake.addInstance({ name: "probe", ...ORIGINAL }))) }),
    ...extra,
  };
}

/** Sets an instance aside as the swap does: devices of type none for every NIC, no MACs, no autostart or protection. */
function makeInert(fake: FakeIncus, i: FakeInstance): void {
  Object.assign(i, inertConfig(fake.view(i)));
}

async function recover(fake: FakeIncus, store: MemoryStore, deps: RestoreDeps, entry: JournalEntry): Promise<string[]> {
  fake.instances.delete("default/probe");
  await store.journal.write(entry);
  return recoverJournals(deps);
}

/** The original is back under its name, running, with exactly its devices, MACs and config; nothing else is left. */
function expectOriginalBack(fake: FakeIncus): void {
  expect(fake.instanceNames()).toEqual(["web"]);
  const web = fake.instance("web")!;
  expect(web.status).toBe("Running");
  expect(web.config).toEqual(ORIGINAL.config);
  expect(web.devices).toEqual(ORIGINAL.devices);
  expect(fake.macs(web)).toEqual([MAC0, MAC1]);
}

/** The restored one has the name and runs with the backup's MACs; the original is gone. */
function expectRestoredInPlace(fake: FakeIncus): void {
  expect(fake.instanceNames()).toEqual(["web"]);
  const web = fake.instance("web")!;
  expect(web.status).toBe("Running");
  expect(web.config).toEqual(RESTORED.config);
  expect(fake.macs(web)).toEqual([MAC0, MAC1]);
}

describe("recoverJournals: instance replaced, phase import", () => {
  it("deletes the half-made temporary instance and leaves the original as it was", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: "web", status: "Running", ...ORIGINAL });
    fake.addInstance({ name: TEMP, ...RESTORED });
    const said = await recover(fake, store, deps, instanceEntry(fake, "import"));
    expect(said).toEqual(["instance default/web: an interrupted restore was undone; the original instance is in place"]);
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });

  it("waits for an import the dead run left going on the server, then deletes what it made", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: "web", status: "Running", ...ORIGINAL });
    fake.runningTask("Creating instance from backup", { instances: [`/1.0/instances/${TEMP}?project=default`] }, () => fake.addInstance({ name: TEMP, ...RESTORED }));
    await recover(fake, store, deps, instanceEntry(fake, "import"));
    // The temporary instance appeared only when the task ended; it was then deleted.
    expect(fake.calls(/operations\/op-1\/wait|DELETE/)).toEqual(["GET /1.0/operations/op-1/wait", `DELETE /1.0/instances/${TEMP}`]);
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });
});

describe("recoverJournals: instance replaced, phase swap", () => {
  it("original still under its name (stopped by the swap), the restored one beside it: the restored one goes, the original runs again", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: "web", status: "Stopped", ...ORIGINAL });
    fake.addInstance({ name: TEMP, ...RESTORED });
    const said = await recover(fake, store, deps, instanceEntry(fake, "swap"));
    expect(said).toEqual(["instance default/web: an interrupted restore was undone; the original instance is in place"]);
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });

  it("original renamed aside, the name free: it gets its name back and runs", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: ASIDE, status: "Stopped", ...ORIGINAL });
    fake.addInstance({ name: TEMP, ...RESTORED });
    const said = await recover(fake, store, deps, instanceEntry(fake, "swap"));
    expect(said).toEqual(["instance default/web: an interrupted restore was undone; the original instance is back in place"]);
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });

  it("original aside and made inert, the name free: it gets its devices, MACs, autostart and protection back, its name, and runs", async () => {
    const { fake, store, deps } = world();
    const aside = fake.addInstance({ name: ASIDE, status: "Stopped", ...ORIGINAL });
    makeInert(fake, aside);
    expect(aside.devices).toEqual({ eth0: { type: "none" }, eth1: { type: "none" } });
    expect(fake.macs(aside)).toEqual([]);
    fake.addInstance({ name: TEMP, ...RESTORED });
    const said = await recover(fake, store, deps, instanceEntry(fake, "swap"));
    expect(said).toEqual(["instance default/web: an interrupted restore was undone; the original instance is back in place"]);
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });

  it("original aside (inert) and the restored one under the name: the swap is finished", async () => {
    const { fake, store, deps } = world();
    makeInert(fake, fake.addInstance({ name: ASIDE, status: "Stopped", ...ORIGINAL }));
    fake.addInstance({ name: "web", ...RESTORED });
    const said = await recover(fake, store, deps, instanceEntry(fake, "swap"));
    expect(said).toEqual(["instance default/web: an interrupted restore was completed"]);
    expectRestoredInPlace(fake);
    expect(store.journal.all()).toEqual([]);
  });
});

describe("recoverJournals: instance replaced, phase finish", () => {
  it("restored under the name, original aside: starts the restored one and deletes the original", async () => {
    const { fake, store, deps } = world();
    makeInert(fake, fake.addInstance({ name: ASIDE, status: "Stopped", ...ORIGINAL }));
    fake.addInstance({ name: "web", ...RESTORED });
    const said = await recover(fake, store, deps, instanceEntry(fake, "finish"));
    expect(said).toEqual(["instance default/web: an interrupted restore was completed"]);
    expectRestoredInPlace(fake);
    expect(fake.calls(/^DELETE/)).toEqual([`DELETE /1.0/instances/${ASIDE}`]);
    expect(store.journal.all()).toEqual([]);
  });

  it("original already deleted: starts the restored one", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: "web", ...RESTORED });
    const said = await recover(fake, store, deps, instanceEntry(fake, "finish"));
    expect(said).toEqual(["instance default/web: an interrupted restore was completed"]);
    expectRestoredInPlace(fake);
    expect(store.journal.all()).toEqual([]);
  });

  it("restored one does not start: it is deleted and the original put back with its devices, MACs and running state", async () => {
    const { fake, store, deps } = world();
    makeInert(fake, fake.addInstance({ name: ASIDE, status: "Stopped", ...ORIGINAL }));
    fake.addInstance({ name: "web", ...RESTORED });
    fake.fail("start", "web", "Failed to start device \"eth1\": address 10.0.0.5 in use");
    const said = await recover(fake, store, deps, instanceEntry(fake, "finish"));
    expect(said).toEqual([
      'instance default/web: an interrupted restore could not be completed, so it was undone: the restored instance did not start: Start instance web: Failed to start device "eth1": address 10.0.0.5 in use; the original instance is back in place and running',
    ]);
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });

  it("restored one does not start and neither does the original: the journal stays, and the next run finishes putting it back", async () => {
    const { fake, store, deps } = world();
    makeInert(fake, fake.addInstance({ name: ASIDE, status: "Stopped", ...ORIGINAL }));
    fake.addInstance({ name: "web", ...RESTORED });
    fake.fail("start", "web", "no free memory", { times: 2 });
    const entry = instanceEntry(fake, "finish");
    const said = await recover(fake, store, deps, entry);
    expect(said).toHaveLength(1);
    expect(said[0]).toMatch(/^instance default\/web: recovery of an interrupted restore failed, will retry next run: .*putting the original back failed too/);
    // The entry now says the replace is being undone: with the original back under its name, the
    // server alone would look like a completed swap.
    expect(store.journal.all()).toEqual([{ ...entry, phase: "undo" }]);
    expect(fake.instanceNames()).toEqual(["web"]);
    expect(fake.instance("web")).toMatchObject({ status: "Stopped", config: ORIGINAL.config, devices: ORIGINAL.devices });

    expect(await recoverJournals(deps)).toEqual(["instance default/web: an interrupted restore was undone; the original instance is in place"]);
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });

  it("phase undo, restored under the name and the original aside: undone, not completed", async () => {
    const { fake, store, deps } = world();
    makeInert(fake, fake.addInstance({ name: ASIDE, status: "Stopped", ...ORIGINAL }));
    fake.addInstance({ name: "web", status: "Running", ...RESTORED });
    const said = await recover(fake, store, deps, instanceEntry(fake, "undo"));
    expect(said).toEqual(["instance default/web: an interrupted restore was undone; the original instance is back in place"]);
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });

  it("restored copy of a protected instance does not start: the original is still put back", async () => {
    const { fake, store, deps } = world();
    makeInert(fake, fake.addInstance({ name: ASIDE, status: "Stopped", ...ORIGINAL }));
    fake.addInstance({ name: "web", ...RESTORED, config: { ...RESTORED.config, "security.protection.delete": "true" } });
    fake.fail("start", "web", "Failed to start device \"eth1\": address 10.0.0.5 in use");
    await recover(fake, store, deps, instanceEntry(fake, "finish"));
    expectOriginalBack(fake);
    expect(store.journal.all()).toEqual([]);
  });
});

describe("recoverJournals: volume contents replaced", () => {
  function volumeWorld(db: "Running" | "Stopped", content = "original") {
    const w = world();
    w.fake.addVolume({ name: "data", content });
    w.fake.addVolume({ name: TEMP, content: "restored" });
    w.fake.addInstance({ name: "db", status: db, devices: { data: { type: "disk", pool: "default", source: "data", path: "/srv" } } });
    w.fake.addInstance({ name: "app", status: "Running", devices: { data: { type: "disk", pool: "default", source: "data", path: "/srv" } } });
    return w;
  }
  const users = [
    { project: "default", name: "db" },
    { project: "default", name: "app" },
  ];
  const volumeEntry = (phase: JournalEntry["phase"]): JournalEntry => ({
    id: "d4e5f6",
    kind: "volume",
    project: "default",
    pool: "default",
    name: "data",
    temp: TEMP,
    phase,
    stop: users,
    restart: users,
    started: "2025-09-14T02:59:00Z",
  });
  const statuses = (fake: FakeIncus) => ["db", "app"].map((n) => fake.instance(n)!.status);
  const volumes = (fake: FakeIncus) => [...fake.volumes.values()].map((v) => `${v.name}=${v.content}`);

  it("import: deletes the temporary volume; the volume and its instances are untouched", async () => {
    const { fake, store, deps } = volumeWorld("Running");
    await store.journal.write(volumeEntry("import"));
    expect(await recoverJournals(deps)).toEqual(["volume default/default/data: an interrupted restore was undone; the volume was not touched"]);
    expect(volumes(fake)).toEqual(["data=original"]);
    expect(statuses(fake)).toEqual(["Running", "Running"]);
    expect(fake.calls(/state$/)).toEqual([]);
    expect(store.journal.all()).toEqual([]);
  });

  it("stop (one user stopped so far): stops the rest, replaces the contents, starts them all, deletes the temporary volume", async () => {
    const { fake, store, deps } = volumeWorld("Stopped");
    await store.journal.write(volumeEntry("stop"));
    expect(await recoverJournals(deps)).toEqual(["volume default/default/data: an interrupted restore was completed"]);
    expect(volumes(fake)).toEqual(["data=restored"]);
    expect(statuses(fake)).toEqual(["Running", "Running"]);
    // app is stopped before the copy, and everything starts after it.
    expect(fake.calls(/state$|volumes\/custom$/)).toEqual([
      "PUT /1.0/instances/app/state",
      "POST /1.0/storage-pools/default/volumes/custom",
      "PUT /1.0/instances/db/state",
      "PUT /1.0/instances/app/state",
    ]);
    expect(store.journal.all()).toEqual([]);
  });

  it("refresh, temporary volume there: the refresh is redone from it", async () => {
    const { fake, store, deps } = volumeWorld("Stopped", "half replaced");
    fake.instance("app")!.status = "Stopped";
    await store.journal.write(volumeEntry("refresh"));
    expect(await recoverJournals(deps)).toEqual(["volume default/default/data: an interrupted restore was completed"]);
    expect(volumes(fake)).toEqual(["data=restored"]);
    expect(statuses(fake)).toEqual(["Running", "Running"]);
    const copy = fake.requests.find((r) => r.method === "POST" && r.path.endsWith("/volumes/custom"));
    expect(copy?.body).toMatchObject({ name: "data", source: { type: "copy", name: TEMP, refresh: true } });
    expect(store.journal.all()).toEqual([]);
  });

  it.each([
    ["refresh", "may be partly replaced: restore it again"],
    ["stop", "was not touched"],
  ] as const)("%s, temporary volume gone: starts the instances again and says the copy is gone", async (phase, what) => {
    const { fake, store, deps } = volumeWorld("Stopped", "half replaced");
    fake.instance("app")!.status = "Stopped";
    fake.volumes.delete(`default/default/${TEMP}`);
    await store.journal.write(volumeEntry(phase));
    expect(await recoverJournals(deps)).toEqual([
      `volume default/default/data: an interrupted restore could not be finished: its restored copy ${TEMP} is gone; the volume ${what} (the instances stopped for it run again)`,
    ]);
    expect(volumes(fake)).toEqual(["data=half replaced"]);
    expect(statuses(fake)).toEqual(["Running", "Running"]);
    expect(fake.calls(/volumes\/custom$/)).toEqual([]);
    expect(store.journal.all()).toEqual([]);
  });

  it("finish: starts the instances and deletes the temporary volume", async () => {
    const { fake, store, deps } = volumeWorld("Stopped", "restored");
    await store.journal.write(volumeEntry("finish"));
    expect(await recoverJournals(deps)).toEqual(["volume default/default/data: an interrupted restore was completed"]);
    expect(volumes(fake)).toEqual(["data=restored"]);
    expect(statuses(fake)).toEqual(["Running", "Running"]);
    expect(fake.calls(/volumes\/custom$/)).toEqual([]);
    expect(store.journal.all()).toEqual([]);
  });

  it("finish, an instance does not start: the others do, the copy goes, and it is not retried", async () => {
    const { fake, store, deps } = volumeWorld("Stopped", "restored");
    fake.instance("app")!.status = "Stopped";
    fake.fail("start", "db", "no free memory");
    await store.journal.write(volumeEntry("finish"));
    const said = await recoverJournals(deps);
    expect(said).toHaveLength(1);
    expect(said[0]).toContain("the volume was restored, but an instance using it did not start again: default/db: Start instance db: no free memory");
    expect(volumes(fake)).toEqual(["data=restored"]);
    expect(statuses(fake)).toEqual(["Stopped", "Running"]);
    expect(store.journal.all()).toEqual([]);
  });
});

describe("recoverJournals: backup --stop", () => {
  const stopped: JournalEntry = {
    id: "0a0b0c",
    kind: "stopped",
    project: "default",
    name: "web",
    temp: "",
    phase: "stopped",
    restart: [{ project: "default", name: "web" }],
    started: "2025-09-14T02:59:00Z",
  };

  it("starts the instance a dead backup --stop left stopped", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: "web", status: "Stopped" });
    await store.journal.write(stopped);
    expect(await recoverJournals(deps)).toEqual(["instance default/web: started again: an interrupted backup --stop had left it stopped"]);
    expect(fake.instance("web")!.status).toBe("Running");
    expect(store.journal.all()).toEqual([]);
  });

  it("leaves a running instance alone", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: "web", status: "Running" });
    await store.journal.write(stopped);
    expect(await recoverJournals(deps)).toEqual(["instance default/web: an interrupted backup --stop had stopped it; it is running again"]);
    expect(fake.calls(/state$/)).toEqual([]);
    expect(store.journal.all()).toEqual([]);
  });

  it("keeps the entry when the start fails, and the next run starts it", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: "web", status: "Stopped" });
    fake.fail("start", "web", "no free memory");
    await store.journal.write(stopped);
    expect(await recoverJournals(deps)).toEqual([
      "instance default/web: recovery of an interrupted restore failed, will retry next run: Start instance web: no free memory",
    ]);
    expect(store.journal.all()).toEqual([stopped]);
    await recoverJournals(deps);
    expect(fake.instance("web")!.status).toBe("Running");
    expect(store.journal.all()).toEqual([]);
  });
});

describe("recoverJournals: damaged entries", () => {
  it("reports an entry whose temporary name is not one this tool makes, and touches nothing", async () => {
    const { fake, store, deps } = world();
    fake.addInstance({ name: "web", status: "Running", ...ORIGINAL });
    fake.addInstance({ name: "db", status: "Running" });
    await store.journal.write({ ...instanceEntry(fake, "import"), temp: "db" });
    const said = await recoverJournals(deps);
    expect(said).toEqual(["journal entry a1b2c3 is damaged (its temporary name is not one this tool makes)"]);
    expect(fake.instanceNames()).toEqual(["db", "web"]);
    expect(fake.calls(/^(PUT|POST|DELETE|PATCH)/)).toEqual([]);
    expect(store.journal.entries.size).toBe(1);
  });
});
