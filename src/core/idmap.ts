// Incus's idmaps: a custom volume attached to an unprivileged container keeps its files owned by
// the host's ids (1000000 + the container's), and records the map in volatile.idmap.last. The
// tool shows and restores owners as the instance sees them, so it maps them back.

interface IdmapEntry {
  Isuid: boolean;
  Isgid: boolean;
  Hostid: number;
  Nsid: number;
  Maprange: number;
}

export type IdShift = (id: number, kind: "uid" | "gid") => number;

/** From a volatile.idmap.* value: host ids to the container's, or undefined for none (or a value that is not one). */
export function hostToContainer(value: string | undefined): IdShift | undefined {
  if (!value) return undefined;
  let entries: IdmapEntry[];
  try {
    entries = JSON.parse(value) as IdmapEntry[];
  } catch {
    return undefined;
  }
  if (!Array.isArray(entries)) return undefined;
  const valid = entries.filter((e) => [e.Hostid, e.Nsid, e.Maprange].every((n) => Number.isInteger(n) && n >= 0));
  if (valid.length === 0) return undefined;
  return (id, kind) => {
    const m = valid.find((e) => (kind === "uid" ? e.Isuid : e.Isgid) && id >= e.Hostid && id < e.Hostid + e.Maprange);
    return m ? id - m.Hostid + m.Nsid : id;
  };
}
