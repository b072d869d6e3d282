// Storage pools.

import { seg, type IncusClient } from "./client";
import type { Signal } from "./instances";

export interface StoragePool {
  name: string;
  driver: string;
  description: string;
  config: Record<string, string>;
  status?: string;
  used_by?: string[];
  locations?: string[];
}

export function getStoragePools(c: IncusClient, opts: Signal = {}): Promise<StoragePool[]> {
  return c.list<StoragePool>("/1.0/storage-pools", "List storage pools", { query: { recursion: 1 }, ...opts });
}

export function getStoragePool(c: IncusClient, name: string, opts: Signal = {}): Promise<StoragePool> {
  return c.get<StoragePool>(`/1.0/storage-pools/${seg(name)}`, `Get storage pool ${name}`, opts);
}
