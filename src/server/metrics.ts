/**
 * Prometheus text exposition (format 0.0.4) of the server's state: gauges
 * from a status snapshot, counters since start, and how long granted
 * requests waited.  Pure: the server hands it what to render.
 *
 * @module
 */

import type { StatusDocument } from "./status_document.ts";
import { WAIT_BUCKETS, WaitHistogram } from "./core/stats.ts";

export { WAIT_BUCKETS, WaitHistogram };

/** Escapes a label value as the exposition format requires. */
export function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll("\n", "\\n").replaceAll(
    '"',
    '\\"',
  );
}

function labels(pairs: Record<string, string>): string {
  const inner = Object.entries(pairs)
    .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
    .join(",");
  return inner ? `{${inner}}` : "";
}

function num(n: number): string {
  if (n === Infinity) return "+Inf";
  return String(n);
}

/** Renders the metrics for a status snapshot and the wait histogram. */
export function renderMetrics(
  doc: StatusDocument,
  waits: WaitHistogram,
): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) =>
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const sample = (
    name: string,
    pairs: Record<string, string>,
    value: number,
  ) => out.push(`${name}${labels(pairs)} ${num(value)}`);

  const perResource: [
    string,
    string,
    (r: StatusDocument["resources"][number]) => number,
  ][] = [
    ["sai_resource_budget", "Budget of the resource.", (r) => r.budget],
    [
      "sai_resource_allocated",
      "Amount currently leased.",
      (r) => r.allocated,
    ],
    [
      "sai_resource_queued_requests",
      "Requests waiting in the queue.",
      (r) => r.queuedRequests,
    ],
    [
      "sai_resource_queued_amount",
      "Total amount the queued requests ask for.",
      (r) => r.queuedAmount,
    ],
  ];
  for (const [name, help, get] of perResource) {
    family(name, "gauge", help);
    for (const r of doc.resources) sample(name, { resource: r.name }, get(r));
  }

  const { stats } = doc;
  family(
    "sai_resource_grants_total",
    "counter",
    "Leases granted since start.",
  );
  sample("sai_resource_grants_total", {}, stats.grants);
  family(
    "sai_resource_refusals_total",
    "counter",
    "Requests refused since start, by reason.",
  );
  for (const [reason, n] of Object.entries(stats.refusals).sort()) {
    sample("sai_resource_refusals_total", { reason }, n ?? 0);
  }
  family(
    "sai_resource_expiries_total",
    "counter",
    "Leases that ran out since start.",
  );
  sample("sai_resource_expiries_total", {}, stats.expiries);
  family(
    "sai_resource_releases_total",
    "counter",
    "Leases released before expiry since start (by the holder or an operator).",
  );
  sample("sai_resource_releases_total", {}, stats.releases);
  family(
    "sai_resource_restores_total",
    "counter",
    "Leases newly re-admitted from a builder's restore since start.",
  );
  sample("sai_resource_restores_total", {}, stats.restores);
  family(
    "sai_resource_drops_total",
    "counter",
    "Leases dropped since start: their builder was gone past the builder grace, or did not re-send them.",
  );
  sample("sai_resource_drops_total", {}, stats.drops);
  family(
    "sai_resource_releases_by_reason_total",
    "counter",
    'Leases released before expiry since start, by reason: "owner gone" (the process a holder kept it for exited), "operator" (force-release), "other" (released by the holder or by cookie).',
  );
  const byReason: [string, number][] = [
    ["other", stats.releases - stats.ownerGone - stats.forcedReleases],
    ["operator", stats.forcedReleases],
    ["owner gone", stats.ownerGone],
  ];
  for (const [reason, n] of byReason) {
    sample("sai_resource_releases_by_reason_total", { reason }, n);
  }

  family(
    "sai_resource_wait_seconds",
    "histogram",
    "How long granted requests waited in the queue.",
  );
  const cumulative = waits.cumulative();
  WAIT_BUCKETS.forEach((le, i) =>
    sample("sai_resource_wait_seconds_bucket", { le: num(le) }, cumulative[i]!)
  );
  sample("sai_resource_wait_seconds_bucket", { le: "+Inf" }, waits.count);
  sample("sai_resource_wait_seconds_sum", {}, waits.sum);
  sample("sai_resource_wait_seconds_count", {}, waits.count);

  family("sai_builders_connected", "gauge", "Builders connected now.");
  sample("sai_builders_connected", {}, doc.builders.length);
  return out.join("\n") + "\n";
}
