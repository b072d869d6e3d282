// NIC identities (pure): MACs and static addresses, clashes, and making an instance inert and back.

import { describe, expect, it } from "vitest";
import {
  hasIdentity,
  identityClashes,
  inertConfig,
  macKeys,
  nicIdentities,
  restoredConfig,
  savedIdentity,
  type InstanceConfig,
} from "../../../src/core/nics";

/** An instance as Incus describes it: eth0 from the default profile, eth1 its own with a static address. */
const web: InstanceConfig = {
  config: {
    "volatile.eth0.hwaddr": "10:66:6A:00:00:01",
    "volatile.eth1.hwaddr": "10:66:6a:00:00:02",
    "boot.autostart": "true",
    "limits.memory": "256MiB",
  },
  devices: { eth1: { type: "nic", network: "lan", "ipv4.address": "10.0.0.5", "ipv6.address": "fd00::5" }, data: { type: "disk", pool: "default", source: "data", path: "/srv" } },
  expanded_devices: {
    eth0: { type: "nic", network: "incusbr0", name: "eth0" },
    eth1: { type: "nic", network: "lan", "ipv4.address": "10.0.0.5", "ipv6.address": "fd00::5" },
    root: { type: "disk", pool: "default", path: "/" },
    data: { type: "disk", pool: "default", source: "data", path: "/srv" },
  },
};

describe("nicIdentities", () => {
  it("gives every NIC, own or a profile's, its network, MAC (lower case) and static addresses", () => {
    expect(nicIdentities(web)).toEqual([
      { device: "eth0", network: "incusbr0", hwaddr: "10:66:6a:00:00:01" },
      { device: "eth1", network: "lan", hwaddr: "10:66:6a:00:00:02", ipv4: "10.0.0.5", ipv6: "fd00::5" },
    ]);
  });

  it("takes a MAC set on the device itself, and a parent bridge as the network", () => {
    expect(nicIdentities({ expanded_devices: { eth0: { type: "nic", nictype: "bridged", parent: "br0", hwaddr: "AA:BB:CC:00:00:01" } } })).toEqual([
      { device: "eth0", network: "br0", hwaddr: "aa:bb:cc:00:00:01" },
    ]);
  });

  it("has none for an instance without NICs", () => {
    expect(nicIdentities({ devices: { root: { type: "disk", path: "/", pool: "p" } } })).toEqual([]);
  });
});

describe("identityClashes", () => {
  const other = (key: string, nics: ReturnType<typeof nicIdentities>) => ({ key, nics });
  it("finds a MAC anywhere and a static address on the same network only", () => {
    const mine = nicIdentities(web);
    const clashes = identityClashes(mine, [
      other("default/a", [{ device: "eth0", network: "other", hwaddr: "10:66:6a:00:00:01" }]),
      other("default/b", [{ device: "eth0", network: "lan", ipv4: "10.0.0.5" }]),
      other("default/c", [{ device: "eth0", network: "elsewhere", ipv4: "10.0.0.5", ipv6: "fd00::5" }]),
      other("default/d", [{ device: "eth3", network: "lan", ipv6: "fd00::5" }]),
    ]);
    expect(clashes).toEqual([
      { device: "eth0", what: "hwaddr", value: "10:66:6a:00:00:01", holder: "default/a" },
      { device: "eth1", what: "ipv4.address", value: "10.0.0.5", holder: "default/b" },
      { device: "eth1", what: "ipv6.address", value: "fd00::5", holder: "default/d" },
    ]);
  });
});

describe("inert and back", () => {
  it("masks every NIC with a none device, drops the MACs and turns autostart off, keeping the rest", () => {
    const inert = inertConfig(web);
    expect(inert.devices).toEqual({ eth0: { type: "none" }, eth1: { type: "none" }, data: web.devices!.data });
    expect(inert.config).toEqual({ "boot.autostart": "false", "security.protection.delete": "false", "limits.memory": "256MiB" });
    // The input is untouched.
    expect(web.devices!.eth1!.type).toBe("nic");
  });

  it("saves what it takes away, and gives it back (MACs in a second step)", () => {
    const saved = savedIdentity(web);
    expect(saved).toEqual({
      devices: web.devices,
      hwaddr: { "volatile.eth0.hwaddr": "10:66:6A:00:00:01", "volatile.eth1.hwaddr": "10:66:6a:00:00:02" },
      config: { "boot.autostart": "true", "security.protection.delete": null },
    });
    const inert = { ...web, ...inertConfig(web) };
    expect(hasIdentity(inert, saved)).toBe(false);
    const back = restoredConfig(inert, saved);
    expect(back.devices).toEqual(web.devices);
    expect(back.config).toEqual({ "boot.autostart": "true", "limits.memory": "256MiB" });
    expect(hasIdentity({ ...back, config: { ...back.config, ...saved.hwaddr } }, saved)).toBe(true);
  });

  it("puts back an absent autostart as absent, and a delete protection as it was", () => {
    const plain: InstanceConfig = { config: { "volatile.eth0.hwaddr": "x", "security.protection.delete": "true" }, devices: {}, expanded_devices: { eth0: { type: "nic", network: "n" } } };
    const saved = savedIdentity(plain);
    expect(saved.config).toEqual({ "boot.autostart": null, "security.protection.delete": "true" });
    expect(restoredConfig({ ...plain, ...inertConfig(plain) }, saved).config).toEqual({ "security.protection.delete": "true" });
  });

  it("macKeys lists only the MAC keys the instance has", () => {
    expect(macKeys(web)).toEqual(["volatile.eth0.hwaddr", "volatile.eth1.hwaddr"]);
    expect(macKeys({ expanded_devices: { eth0: { type: "nic", network: "n" } }, config: {} })).toEqual([]);
  });
});
