/**
 * Types for `parse-prometheus-text-format`, which ships none, and a lookup
 * by family name.
 *
 * @module
 */

import parseUntyped from "parse-prometheus-text-format";

/** A plain sample: a gauge, counter or untyped metric. */
export interface Sample {
  value: string;
  labels?: Record<string, string>;
}

/** An unlabelled histogram, as the parser flattens it. */
export interface HistogramSample {
  buckets: Record<string, string>;
  count: string;
  sum: string;
}

/** One metric family. */
export interface Family {
  name: string;
  help: string;
  type: "GAUGE" | "COUNTER" | "HISTOGRAM" | "SUMMARY" | "UNTYPED";
  metrics: (Sample | HistogramSample)[];
}

/** Parses an exposition (throws on a malformed line) into families by name. */
export function parseMetrics(text: string): Map<string, Family> {
  const families = (parseUntyped as (t: string) => Family[])(text);
  return new Map(families.map((f) => [f.name, f]));
}

/** The samples of a gauge or counter family; throws if it is missing. */
export function samples(families: Map<string, Family>, name: string): Sample[] {
  const f = families.get(name);
  if (!f) throw new Error(`no metric family ${name}`);
  return f.metrics as Sample[];
}

/** The value of the sample whose labels include `labels`. */
export function valueOf(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const s = samples(families, name).find((m) =>
    Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)
  );
  return s === undefined ? undefined : Number(s.value);
}
