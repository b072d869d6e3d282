// Listing, creating and updating the declarative server objects that src/core/entities.ts describes.

import { seg, type IncusClient } from "./client";
import type { EntityDescriptor, EntityRecord } from "../core/entities";

/** Lists one kind in one project (or globally), optionally under a parent. */
export async function getEntities(
  c: IncusClient,
  d: EntityDescriptor,
  project: string,
  parent?: string,
  signal?: AbortSignal,
): Promise<Array<Record<string, unknown>>> {
  const query: Record<string, string | number> = { recursion: 1 };
  if (d.projectScoped) query.project = project;
  return c.list<Record<string, unknown>>(d.collection(parent), `List ${d.label}s`, {
    query,
    ...(signal === undefined ? {} : { signal }),
  });
}

/** Creates an object from its record: create-only fields, id and writable fields. */
export async function createEntity(c: IncusClient, d: EntityDescriptor, rec: EntityRecord, body: Record<string, unknown>): Promise<void> {
  await c.sync("POST", d.collection(rec.parent), `Create ${d.label} ${rec.id}`, {
    ...(d.projectScoped ? { query: { project: rec.project } } : {}),
    body,
  });
}

/** Replaces the writable fields of an existing object. */
export async function updateEntity(c: IncusClient, d: EntityDescriptor, rec: EntityRecord, body: Record<string, unknown>): Promise<void> {
  await c.sync("PUT", `${d.collection(rec.parent)}/${seg(rec.id)}`, `Update ${d.label} ${rec.id}`, {
    ...(d.projectScoped ? { query: { project: rec.project } } : {}),
    body,
  });
}
