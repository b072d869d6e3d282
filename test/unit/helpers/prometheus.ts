// The metrics file read back by a real Prometheus text-format parser (not regexes): families by name, samples with labels.

// The package ships no types: its result is prom2json's shape.
// @ts-expect-error no declaration file
import parsePrometheusTextFormat from "parse-prometheus-text-format";

export interface Family {
  name: string;
  help: string;
  type: string;
  metrics: Array<{ value: string; labels?: Record<string, string> }>;
}

/** Parses the text, throwing on a line the format does not allow; families by name. */
export function parseMetrics(text: string): Map<string, Family> {
  const families = (parsePrometheusTextFormat as (t: string) => Family[])(text);
  return new Map(families.map((f) => [f.name, f]));
}

/** The value of the one sample of `name` whose labels include `labels`; undefined if there is none. */
export function sample(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const matching = (families.get(name)?.metrics ?? []).filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  if (matching.length > 1) throw new Error(`${name}: ${matching.length} samples match ${JSON.stringify(labels)}`);
  return matching[0] === undefined ? undefined : Number(matching[0].value);
}
