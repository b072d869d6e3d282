// Declarative server objects (projects, pools, networks and their sub-objects, profiles) as one table (pure).
//
// Incus's Go client has one file per kind with near-identical Get/Create/Update methods; here
// the kinds differ only in URL, identifying field and writable fields, so one descriptor table
// drives listing, creating and updating them all (src/incus/entities.ts). The field lists mirror
// shared/api/*.go.

export type EntityKind =
  | "project"
  | "storage-pool"
  | "network-acl"
  | "network-zone"
  | "network"
  | "network-zone-record"
  | "network-forward"
  | "network-load-balancer"
  | "network-peer"
  | "profile";

export interface EntityDescriptor {
  kind: EntityKind;
  /** Shown to users: "network ACL", "profile". */
  label: string;
  /** Lives inside a project (else global). */
  projectScoped: boolean;
  /** The project feature that gives a project its own objects of this kind (default always has them). */
  feature?: string;
  /** Sub-objects live under a parent of this kind. */
  parent?: EntityKind;
  /** The field that names the object. */
  idField: "name" | "listen_address";
  /** Collection path, given the parent's id for sub-objects. */
  collection(parent?: string): string;
  /** Fields sent on create only (cannot change later). */
  createOnly: string[];
  /** Fields of the PUT body. */
  writable: string[];
}

/** One path segment of an API URL, escaped. */
const n = (s: string) => encodeURIComponent(s);

/** In dependency order: what is referenced comes before what refers to it. */
export const ENTITIES: EntityDescriptor[] = [
  {
    kind: "project",
    label: "project",
    projectScoped: false,
    idField: "name",
    collection: () => "/1.0/projects",
    createOnly: [],
    writable: ["config", "description"],
  },
  {
    kind: "storage-pool",
    label: "storage pool",
    projectScoped: false,
    idField: "name",
    collection: () => "/1.0/storage-pools",
    createOnly: ["driver"],
    writable: ["config", "description"],
  },
  {
    kind: "network-acl",
    label: "network ACL",
    projectScoped: true,
    feature: "features.networks",
    idField: "name",
    collection: () => "/1.0/network-acls",
    createOnly: [],
    writable: ["description", "egress", "ingress", "config"],
  },
  {
    kind: "network-zone",
    label: "network zone",
    projectScoped: true,
    feature: "features.networks.zones",
    idField: "name",
    collection: () => "/1.0/network-zones",
    createOnly: [],
    writable: ["description", "config"],
  },
  {
    kind: "network",
    label: "network",
    projectScoped: true,
    feature: "features.networks",
    idField: "name",
    collection: () => "/1.0/networks",
    createOnly: ["type"],
    writable: ["config", "description"],
  },
  {
    kind: "network-zone-record",
    label: "network zone record",
    projectScoped: true,
    feature: "features.networks.zones",
    parent: "network-zone",
    idField: "name",
    collection: (zone) => `/1.0/network-zones/${n(zone ?? "")}/records`,
    createOnly: [],
    writable: ["description", "entries", "config"],
  },
  {
    kind: "network-forward",
    label: "network forward",
    projectScoped: true,
    feature: "features.networks",
    parent: "network",
    idField: "listen_address",
    collection: (net) => `/1.0/networks/${n(net ?? "")}/forwards`,
    createOnly: [],
    writable: ["description", "config", "ports"],
  },
  {
    kind: "network-load-balancer",
    label: "network load balancer",
    projectScoped: true,
    feature: "features.networks",
    parent: "network",
    idField: "listen_address",
    collection: (net) => `/1.0/networks/${n(net ?? "")}/load-balancers`,
    createOnly: [],
    writable: ["description", "config", "backends", "ports"],
  },
  {
    kind: "network-peer",
    label: "network peer",
    projectScoped: true,
    feature: "features.networks",
    parent: "network",
    idField: "name",
    collection: (net) => `/1.0/networks/${n(net ?? "")}/peers`,
    createOnly: ["target_project", "target_network", "type", "target_integration"],
    writable: ["description", "config"],
  },
  {
    kind: "profile",
    label: "profile",
    projectScoped: true,
    feature: "features.profiles",
    idField: "name",
    collection: () => "/1.0/profiles",
    createOnly: [],
    writable: ["config", "description", "devices"],
  },
];

export function descriptor(kind: EntityKind): EntityDescriptor {
  const d = ENTITIES.find((e) => e.kind === kind);
  if (!d) throw new Error(`unknown entity kind ${kind}`);
  return d;
}

/** One object as stored in a database backup. */
export interface EntityRecord {
  kind: EntityKind;
  /** "" for global kinds. */
  project: string;
  /** The parent's id for sub-objects. */
  parent?: string;
  id: string;
  /** The object as GET returned it. */
  object: Record<string, unknown>;
}

