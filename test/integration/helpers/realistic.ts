// Instances as admins have them: a NIC on the lab's managed bridge (from the default profile),
// snapshots, cloud-init data, limits, autostart; optionally a static address and a proxy device.
import { apiGet, incus, incusOk, type Tracker } from "../../lab/lab";

export interface RealisticOptions {
  socket: string;
  track: Tracker;
  /** Storage pool of the root disk; default: the default profile's. */
  pool?: string;
  /** Snapshots to take (while stopped: a running container cannot be frozen inside the lab). */
  snapshots?: number;
  /** A static IPv4 (and IPv6, if the bridge has it) address on eth0, from the bridge's subnet. */
  staticAddress?: boolean;
  /** A proxy device that listens on a port of the host (the lab). */
  proxy?: boolean;
  start?: boolean;
}

export interface RealisticInstance {
  name: string;
  /** eth0's static addresses, when asked for. */
  ipv4?: string;
  ipv6?: string;
}

/** Config every realistic instance gets: what `incus launch` with a cloud image and a few -c flags leaves. */
export const REALISTIC_CONFIG: Record<string, string> = {
  "limits.memory": "256MiB",
  "limits.cpu": "1",
  "boot.autostart": "true",
  // A secret that must never be printed: restores show only that it changes.
  "cloud-init.user-data": "#cloud-config\nchpasswd: {list: 'root:hunter2-cloud-secret'}\n",
  "environment.DB_PASSWORD": "hunter2-env-secret",
};

let nextHost = 10 + Math.floor(Math.random() * 200);

/** Creates an instance as on a real host and returns its name (and its static addresses). */
export async function launchRealistic(name: string, o: RealisticOptions): Promise<RealisticInstance> {
  const on = { socket: o.socket };
  o.track.instance(name, on);
  const args = ["init", "busybox", name, ...(o.pool ? ["--storage", o.pool] : [])];
  for (const [k, v] of Object.entries(REALISTIC_CONFIG)) args.push("-c", `${k}=${v}`);
  await incusOk(args, on);
  const out: RealisticInstance = { name };
  if (o.staticAddress) {
    const host = nextHost++;
    const v4 = (await incusOk(["network", "get", "incusbr0", "ipv4.address"], on)).trim();
    const v6 = (await incusOk(["network", "get", "incusbr0", "ipv6.address"], on)).trim();
    out.ipv4 = v4.replace(/\.\d+\/\d+$/, `.${host}`);
    const keys = [`ipv4.address=${out.ipv4}`];
    if (v6 && v6 !== "none") {
      out.ipv6 = v6.replace(/::\d+\/\d+$/, `::${host.toString(16)}`);
      keys.push(`ipv6.address=${out.ipv6}`);
    }
    await incusOk(["config", "device", "override", name, "eth0", ...keys], on);
  }
  if (o.proxy) {
    const port = 20000 + Math.floor(Math.random() * 20000);
    await incusOk(["config", "device", "add", name, "web", "proxy", `listen=tcp:127.0.0.1:${port}`, "connect=tcp:127.0.0.1:80"], on);
  }
  for (let i = 0; i < (o.snapshots ?? 0); i++) await incusOk(["snapshot", "create", name, `snap${i}`], on);
  if (o.start ?? true) await incusOk(["start", name], on);
  return out;
}

/** An instance's MACs, by device. */
export async function macsOf(name: string, socket: string, project = "default"): Promise<Record<string, string>> {
  const i = (await apiGet(`/1.0/instances/${name}?project=${project}`, { socket })) as { config: Record<string, string> };
  return Object.fromEntries(
    Object.entries(i.config)
      .filter(([k]) => /^volatile\.[^.]+\.hwaddr$/.test(k))
      .map(([k, v]) => [k.split(".")[1]!, v]),
  );
}

/** MACs that more than one instance of the server has (Incus would refuse to start the second). */
export async function duplicateMacs(socket: string): Promise<string[]> {
  const all = (await apiGet("/1.0/instances?recursion=1&all-projects=true", { socket })) as Array<{
    name: string;
    project: string;
    config: Record<string, string>;
  }>;
  const seen = new Map<string, string>();
  const dups: string[] = [];
  for (const i of all) {
    for (const [k, v] of Object.entries(i.config)) {
      if (!/^volatile\.[^.]+\.hwaddr$/.test(k)) continue;
      const mac = v.toLowerCase();
      const other = seen.get(mac);
      if (other) dups.push(`${mac}: ${other} and ${i.project}/${i.name}`);
      else seen.set(mac, `${i.project}/${i.name}`);
    }
  }
  return dups;
}

/** Snapshot names of an instance. */
export async function snapshotNames(name: string, socket: string): Promise<string[]> {
  const r = await incus(["snapshot", "list", name, "-f", "csv", "-c", "n"], { socket, allowFail: true });
  return r.stdout
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
}

/**
 * Instances and volumes with the tool's temporary names (ibk-restore-*, ibk-old-*), left out
 * those in `before` (a kept lab may hold another run's).
 */
export async function temporaryLeftovers(socket: string, before: readonly string[] = []): Promise<string[]> {
  const names = (await incusOk(["list", "--all-projects", "-f", "csv", "-c", "n"], { socket })).split("\n");
  const pools = (await incusOk(["storage", "list", "-f", "csv", "-c", "n"], { socket })).split("\n").filter(Boolean);
  for (const p of pools) names.push(...(await incusOk(["storage", "volume", "list", p, "--all-projects", "-f", "csv", "-c", "n"], { socket })).split("\n"));
  return names.map((n) => n.trim()).filter((n) => /^ibk-(restore|old)-/.test(n) && !before.includes(n));
}
