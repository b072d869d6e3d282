// Projects.

import type { IncusClient } from "./client";
import type { Signal } from "./instances";

export interface Project {
  name: string;
  description: string;
  config: Record<string, string>;
  used_by?: string[];
}

export function getProjects(c: IncusClient, opts: Signal = {}): Promise<Project[]> {
  return c.list<Project>("/1.0/projects", "List projects", { query: { recursion: 1 }, ...opts });
}
