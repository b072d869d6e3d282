// An instance's network identity (pure): its NICs' MACs and static addresses, what clashes with
// another instance's, and the changes that make a stopped instance inert and put it back.

/** The parts of an instance this module reads (Incus's instance object, or a backup's copy of it). */
export interface InstanceConfig {
  config?: Record<string, string>;
  devices?: Record<string, Record<string, string>>;
  expanded_config?: Record<string, string>;
  expanded_devices?: Record<string, Record<string, string>>;
}

export interface NicIdentity {
  device: string;
  /** The managed network it is on (`network=`), or its host bridge or parent (`parent=`). */
  network?: string;
  hwaddr?: string;
  ipv4?: string;
  ipv6?: string;
}

/** Every NIC of an instance, with the identity Incus checks for uniqueness at start. */
export function nicIdentities(inst: InstanceConfig): NicIdentity[] {
  const devices = inst.expanded_devices ?? inst.devices ?? {};
  const config = { ...(inst.expanded_config ?? {}), ...(inst.config ?? {}) };
  const out: NicIdentity[] = [];
  for (const [device, d] of Object.entries(devices).sort(([a], [b]) => a.localeCompare(b))) {
    if (d.type !== "nic") continue;
    const network = d.network || d.parent;
    const hwaddr = d.hwaddr || config[`volatile.${device}.hwaddr`];
    const ipv4 = d["ipv4.address"];
    const ipv6 = d["ipv6.address"];
    out.push({
      device,
      ...(network ? { network } : {}),
      ...(hwaddr ? { hwaddr: hwaddr.toLowerCase() } : {}),
      ...(ipv4 ? { ipv4 } : {}),
      ...(ipv6 ? { ipv6 } : {}),
    });
  }
  return out;
}

export interface Clash {
  device: string;
  what: "hwaddr" | "ipv4.address" | "ipv6.address";
  value: string;
  /** The instance that holds it now, as project/name. */
  holder: string;
}

/**
 * What of `mine` another instance already has: a MAC anywhere, or a static address on the same
 * network. Incus refuses to start an instance with either, even when the other one is stopped.
 */
export function identityClashes(mine: readonly NicIdentity[], others: ReadonlyArray<{ key: string; nics: readonly NicIdentity[] }>): Clash[] {
  const out: Clash[] = [];
  for (const n of mine) {
    for (const o of others) {
      for (const theirs of o.nics) {
        if (n.hwaddr && n.hwaddr === theirs.hwaddr) out.push({ device: n.device, what: "hwaddr", value: n.hwaddr, holder: o.key });
        if (n.network === undefined || n.network !== theirs.network) continue;
        if (n.ipv4 && n.ipv4 === theirs.ipv4) out.push({ device: n.device, what: "ipv4.address", value: n.ipv4, holder: o.key });
        if (n.ipv6 && n.ipv6 === theirs.ipv6) out.push({ device: n.device, what: "ipv6.address", value: n.ipv6, holder: o.key });
      }
    }
  }
  return out;
}

/** The config keys that give an instance its MACs: cleared, Incus makes new ones at the next start. */
export function macKeys(inst: InstanceConfig): string[] {
  return nicIdentities(inst)
    .map((n) => `volatile.${n.device}.hwaddr`)
    .filter((k) => (inst.config ?? {})[k] !== undefined);
}

/** What a replace changed on the original instance while it stood aside, so it can be put back. */
export interface SavedIdentity {
  /** Its own devices (not the profiles'), as they were. */
  devices: Record<string, Record<string, string>>;
  /** Its MACs by config key (volatile.DEV.hwaddr). */
  hwaddr: Record<string, string>;
  /** The INERT_KEYS it had (null: it had none). */
  config: Record<string, string | null>;
}

/**
 * Keys an original gets while it stands aside: no autostart (a daemon restart in between must not
 * start it beside the restored one), and no delete protection (it is deleted once the restored
 * one runs; `security.protection.delete` would make that fail on every run).
 */
export const INERT_KEYS: Record<string, string> = { "boot.autostart": "false", "security.protection.delete": "false" };

export function savedIdentity(inst: InstanceConfig): SavedIdentity {
  const config = inst.config ?? {};
  const hwaddr: Record<string, string> = {};
  for (const k of macKeys(inst)) hwaddr[k] = config[k]!;
  const kept: Record<string, string | null> = {};
  for (const k of Object.keys(INERT_KEYS)) kept[k] = config[k] ?? null;
  return { devices: structuredClone(inst.devices ?? {}), hwaddr, config: kept };
}

/**
 * The config and devices that make a stopped instance inert while it stands aside: every NIC
 * (its own or a profile's) masked by a device of type `none`, its MACs dropped, and INERT_KEYS,
 * so the restored instance can start with the same MACs and addresses, and a daemon restart in
 * between starts neither it nor a second copy of its services.
 */
export function inertConfig(inst: InstanceConfig): { config: Record<string, string>; devices: Record<string, Record<string, string>> } {
  const config = { ...(inst.config ?? {}), ...INERT_KEYS };
  for (const k of macKeys(inst)) delete config[k];
  const devices = structuredClone(inst.devices ?? {});
  for (const n of nicIdentities(inst)) devices[n.device] = { type: "none" };
  return { config, devices };
}

/**
 * The config and devices that give an inert instance back what it had. Its MACs go back in a
 * second step (see restoredMacs): Incus gives a NIC that is added again a new MAC, whatever the
 * same request sets.
 */
export function restoredConfig(inst: InstanceConfig, saved: SavedIdentity): { config: Record<string, string>; devices: Record<string, Record<string, string>> } {
  const config = { ...(inst.config ?? {}) };
  for (const [k, v] of Object.entries(saved.config)) {
    if (v === null) delete config[k];
    else config[k] = v;
  }
  return { config, devices: structuredClone(saved.devices) };
}

/** Whether the instance already has what `saved` holds (so putting it back is a no-op). */
export function hasIdentity(inst: InstanceConfig, saved: SavedIdentity): boolean {
  const config = inst.config ?? {};
  const same = (a: unknown, b: unknown) => JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
  return (
    same(inst.devices ?? {}, saved.devices) &&
    Object.entries(saved.config).every(([k, v]) => (config[k] ?? null) === v) &&
    Object.entries(saved.hwaddr).every(([k, v]) => config[k] === v)
  );
}

function sortKeys(v: unknown): unknown {
  if (!v || typeof v !== "object" || Array.isArray(v)) return v;
  return Object.fromEntries(
    Object.entries(v as Record<string, unknown>)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, x]) => [k, sortKeys(x)]),
  );
}

export function describeClash(c: Clash): string {
  return c.what === "hwaddr" ? `${c.device}'s MAC ${c.value} is in use by ${c.holder}` : `${c.device}'s ${c.what} ${c.value} is held by ${c.holder}`;
}
