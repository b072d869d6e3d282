// Disaster recovery (issue 4): `backup --all --images` of a whole server, the server lost, and
// `restore --all --force` on a freshly installed one; then the two compared object by object.
//
// The source is an extra server of its own rather than the lab's main daemon: `--all` takes
// everything a server has, and the main daemon is shared with other tests (and, on a kept lab,
// with other people). Its bridges are deleted and it is shut down before the restore, as in a
// real disaster: both servers live in the lab's one network namespace, where two bridges cannot
// have the same name.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checksumTree, execRead, incusOk, tracker, uniqueName, writeTestData, type Manifest } from "../lab/lab";
import {
  buildTestImages,
  configObjects,
  editObject,
  extraServer,
  imageObjects,
  importImage,
  query,
  volumeObjects,
} from "./helpers/config-objects";
import { instanceShape, instanceStatus, repoDir } from "./helpers/server";
import { listJson, toolOk, type ToolResult } from "./helpers/tool";

/** A name for a bridge: the kernel allows 15 characters, and the lab's namespace is shared. */
const bridgeName = (prefix: string) => `${prefix}${Math.random().toString(36).slice(2, 10)}`.slice(0, 15);

describe("restore --all onto a freshly installed server", () => {
  const track = tracker();
  let target: string;
  let restore: ToolResult;
  const secret = `pw-${Math.random().toString(36).slice(2)}`;
  const p2 = uniqueName("dr-second");
  // Running with the volume; stopped; running in the second project.
  const web = { name: uniqueName("dr-web"), project: "default" };
  const idle = { name: uniqueName("dr-idle"), project: "default" };
  const app = { name: uniqueName("dr-app"), project: p2 };
  const instances = [web, idle, app];
  const before: {
    config: Record<string, unknown>;
    images: Record<string, unknown>;
    volumes: Record<string, unknown>;
    instances: Record<string, unknown>;
    status: Record<string, string>;
    data: Record<string, Manifest>;
    fingerprints: { split: string; unified: string };
  } = { config: {}, images: {}, volumes: {}, instances: {}, status: {}, data: {}, fingerprints: { split: "", unified: "" } };

  beforeAll(async () => {
    const source = await extraServer(track);
    const s = source.socket;
    const on = (project = "default") => ({ socket: s, project });

    // Images: a split one with two aliases, a unified one (public) in both projects.
    const built = await buildTestImages(uniqueName("dr"), track);
    before.fingerprints.split = await importImage([built.split.meta, built.split.rootfs], { socket: s, aliases: ["dr-split", "dr-split-2"] });
    before.fingerprints.unified = await importImage([built.unified], { socket: s, aliases: ["dr-unified"], public: true });
    await query(s, "/1.0/images/aliases/dr-split-2", "PUT", { description: "the split image's second name", target: before.fingerprints.split });
    await editObject(s, `/1.0/images/${before.fingerprints.split}`, (o) => {
      (o.properties as Record<string, string>)["user.purpose"] = "disaster recovery";
    });

    // A second project with its own images, profiles and volumes.
    await query(s, "/1.0/projects", "POST", {
      name: p2,
      description: "the second project",
      config: { "features.images": "true", "features.profiles": "true", "features.storage.volumes": "true", "user.owner": "dr" },
    });
    await importImage([built.unified], { socket: s, project: p2, aliases: ["dr-unified"] });

    // Networks, kept inside the lab: one without addresses (with an ACL), one with a
    // documentation range (a forward needs an address), a DNS zone with records.
    const acl = uniqueName("dr-acl");
    await query(s, "/1.0/network-acls", "POST", {
      name: acl,
      description: "ssh in, one range out",
      ingress: [{ action: "allow", protocol: "tcp", destination_port: "22", state: "enabled", description: "ssh" }],
      egress: [{ action: "reject", destination: "203.0.113.0/24", state: "enabled" }],
      config: { "user.owner": "dr" },
    });
    const zone = `${uniqueName("dr")}.example.test`;
    await query(s, "/1.0/network-zones", "POST", { name: zone, description: "test zone", config: { "dns.nameservers": `ns1.${zone}` } });
    await query(s, `/1.0/network-zones/${zone}/records`, "POST", {
      name: "www",
      description: "web",
      entries: [
        { type: "A", value: "192.0.2.10", ttl: 300 },
        { type: "TXT", value: "hello" },
      ],
      config: { "user.kind": "web" },
    });
    await query(s, `/1.0/network-zones/${zone}/records`, "POST", { name: "mail", entries: [{ type: "AAAA", value: "2001:db8::25" }] });
    const plain = bridgeName("ibkdra");
    await query(s, "/1.0/networks", "POST", {
      name: plain,
      type: "bridge",
      description: "no addresses",
      config: { "ipv4.address": "none", "ipv6.address": "none", "security.acls": acl, "user.purpose": "dr" },
    });
    // A random /28 of 192.0.2.0/24 and listen address of 198.51.100.0/24: other labs' tests may use the same ranges.
    const base = 16 * (1 + Math.floor(Math.random() * 14));
    const listen = `198.51.100.${2 + Math.floor(Math.random() * 250)}`;
    const routed = bridgeName("ibkdrb");
    await query(s, "/1.0/networks", "POST", {
      name: routed,
      type: "bridge",
      description: "documentation range",
      config: {
        "ipv4.address": `192.0.2.${base + 1}/28`,
        "ipv4.nat": "false",
        "ipv4.dhcp": "false",
        "ipv6.address": "none",
        "dns.zone.forward": zone,
      },
    });
    await query(s, `/1.0/networks/${routed}/forwards`, "POST", {
      listen_address: listen,
      description: "web forward",
      config: { target_address: `192.0.2.${base + 5}`, "user.owner": "dr" },
      ports: [{ protocol: "tcp", listen_port: "80", target_address: `192.0.2.${base + 6}`, target_port: "8080", description: "http" }],
    });

    // Profiles with devices and config, in both projects.
    await editObject(s, "/1.0/profiles/default", (o) => {
      o.description = "root disk and a note";
      o.config = { "user.note": "from the source" };
    });
    await query(s, "/1.0/profiles", "POST", {
      name: "web",
      description: "web servers",
      config: { "environment.APP": "web", "user.db_password": secret, "boot.autostart": "false" },
      devices: { eth0: { type: "nic", network: plain, name: "eth0" } },
    });
    await query(s, `/1.0/profiles/default?project=${p2}`, "PUT", {
      description: "second project's default",
      config: {},
      devices: { root: { type: "disk", pool: "default", path: "/" } },
    });
    await query(s, `/1.0/profiles?project=${p2}`, "POST", {
      name: "app",
      description: "apps",
      config: { "environment.ROLE": "app", "user.role": "app" },
      devices: { eth0: { type: "nic", network: routed, name: "eth0" } },
    });

    // A custom volume, used by the web instance.
    const volume = uniqueName("dr-vol");
    await query(s, "/1.0/storage-pools/default/volumes/custom", "POST", { name: volume, description: "web data", config: { "user.content": "site" } });
    await editObject(s, "/1.0/storage-pools/default", (o) => {
      o.description = "the only pool";
    });

    // Instances: two running (one per project, one with the volume), one stopped.
    await incusOk(["init", "dr-split", web.name, "-p", "default", "-p", "web", "-c", "user.role=web"], on());
    await incusOk(["config", "device", "add", web.name, "data", "disk", "pool=default", `source=${volume}`, "path=/srv"], on());
    await incusOk(["init", "dr-unified", idle.name, "-c", "user.role=idle"], on());
    await incusOk(["init", "dr-unified", app.name, "-p", "default", "-p", "app"], on(p2));
    await incusOk(["start", web.name], on());
    await incusOk(["start", app.name], on(p2));
    before.data.web = await writeTestData(web.name, "/root/data", { ...on(), sizeMiB: 1 });
    before.data.volume = await writeTestData(web.name, "/srv", { ...on(), sizeMiB: 1 });
    before.data.app = await writeTestData(app.name, "/root/data", { ...on(p2), sizeMiB: 1 });

    const repo = await repoDir(track);
    await toolOk(["backup", "--all", "--images", `--dir=${repo}`], { socket: s });
    const rows = await listJson(repo);
    expect(rows.map((r) => `${r.type} ${r.project} ${r.name}`).sort()).toEqual(
      [
        "database  server",
        `image default ${before.fingerprints.split}`,
        `image default ${before.fingerprints.unified}`,
        `image ${p2} ${before.fingerprints.unified}`,
        `volume default ${volume}`,
        `instance default ${web.name}`,
        `instance default ${idle.name}`,
        `instance ${p2} ${app.name}`,
      ].sort(),
    );

    before.config = await configObjects(s);
    before.images = await imageObjects(s);
    before.volumes = await volumeObjects(s);
    for (const i of instances) {
      before.instances[i.name] = await instanceShape(i.name, { socket: s, project: i.project });
      before.status[i.name] = await instanceStatus(i.name, { socket: s, project: i.project });
    }
    expect(before.status).toEqual({ [web.name]: "Running", [idle.name]: "Stopped", [app.name]: "Running" });

    // The disaster: the source server is gone.
    await source.remove();

    target = (await extraServer(track, { bare: true })).socket;
    expect(await configObjects(target)).toEqual({
      "project default": expect.anything(),
      "profile default/default": expect.objectContaining({ devices: {} }),
    });
    restore = await toolOk(["restore", "--all", "--force", `--dir=${repo}`], { socket: target });
  });
  afterAll(() => track.cleanup());

  it("backed up every kind of object the issue lists", () => {
    const keys = Object.keys(before.config);
    const has = (kind: string, n: number) => expect(keys.filter((k) => k.startsWith(`${kind} `)), kind).toHaveLength(n);
    has("project", 2);
    has("storage-pool", 1);
    has("network-acl", 1);
    has("network", 2);
    has("network-forward", 1);
    has("network-zone", 1);
    has("network-zone-record", 2);
    has("profile", 4);
    expect(Object.keys(before.images)).toHaveLength(3);
    expect(Object.keys(before.volumes)).toHaveLength(1);
  });

  it("says what it created, drops the old pool's own directory, and shows no secret", () => {
    expect(restore.stdout).toMatch(/create +storage pool default \(source \S+ was the old server's own directory; the new pool gets a fresh one\)/);
    expect(restore.stdout).toMatch(/create +network forward default\/\S+\/198\.51\.100\.\d+/);
    expect(restore.stdout).toMatch(/configuration: \d+ change\(s\) applied\n/);
    expect(restore.stdout).toContain("restore: 7 of 7 item(s) restored");
    expect(restore.stdout).not.toContain("failed");
    expect(restore.stdout + restore.stderr).not.toContain(secret);
  });

  it("recreates projects, the pool, networks with their ACL, zone, records and forward, and profiles as they were", async () => {
    expect(await configObjects(target)).toEqual(before.config);
  });

  it("brings both images back with the same fingerprints, aliases and settings", async () => {
    const images = await imageObjects(target);
    expect(images).toEqual(before.images);
    expect(images[`default/${before.fingerprints.split}`]).toMatchObject({
      aliases: [
        { name: "dr-split", description: "" },
        { name: "dr-split-2", description: "the split image's second name" },
      ],
      properties: expect.objectContaining({ "user.purpose": "disaster recovery" }),
    });
    expect(images[`default/${before.fingerprints.unified}`]).toMatchObject({ public: true, aliases: [{ name: "dr-unified" }] });
  });

  it("brings the custom volume back with its settings and data", async () => {
    expect(await volumeObjects(target)).toEqual(before.volumes);
    expect(await checksumTree(web.name, "/srv", { socket: target })).toEqual(before.data.volume);
  });

  it("brings the instances back in both projects, with their data, running where they ran", async () => {
    for (const i of instances) {
      expect(await instanceShape(i.name, { socket: target, project: i.project }), i.name).toEqual(before.instances[i.name]);
      expect(await instanceStatus(i.name, { socket: target, project: i.project }), i.name).toBe(before.status[i.name]);
    }
    expect(await checksumTree(web.name, "/root/data", { socket: target })).toEqual(before.data.web);
    expect(await checksumTree(app.name, "/root/data", { socket: target, project: p2 })).toEqual(before.data.app);
    // The NICs came up on the restored networks.
    expect(await execRead(app.name, ["cat", "/sys/class/net/eth0/operstate"], { socket: target, project: p2 })).toMatch(/up|unknown/);
  });
});
