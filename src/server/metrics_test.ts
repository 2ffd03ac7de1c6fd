import assert from "node:assert/strict";
import { escapeLabel, renderMetrics, WaitHistogram } from "./metrics.ts";
import type { StatusDocument } from "./status_document.ts";
import { type HistogramSample, parseMetrics } from "../../tests/_prometheus.ts";

Deno.test("WaitHistogram.cumulative() counts each wait in its bucket and every larger one", () => {
  const h = new WaitHistogram();
  for (const s of [0, 0.2, 0.2, 7, 5000]) h.observe(s);
  const c = h.cumulative();
  assert.deepEqual(c.slice(0, 6), [1, 1, 3, 3, 3, 4]); // 0.01 … 10
  assert.equal(c.at(-1), 4, "5000 s is only in +Inf");
  assert.equal(h.count, 5);
  assert.equal(h.sum, 5007.4);
});

Deno.test("escapeLabel() escapes backslash, quote and newline", () => {
  assert.equal(escapeLabel('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
});

Deno.test("renderMetrics() output parses as Prometheus text", () => {
  const doc: StatusDocument = {
    version: 1,
    time: 0,
    reclaimUntil: null,
    policy: "fifo",
    builders: [{ id: "b1", name: "x", connectedAt: 0 }],
    resources: [{
      name: "r",
      budget: 4,
      budgetSource: "config",
      configBudget: 4,
      allocated: 3,
      peak: 4,
      overBudgetGrants: 0,
      queuedRequests: 1,
      queuedAmount: 2,
      leases: [],
      queue: [],
    }],
    stats: {
      grants: 2,
      refusals: { "exceeds-budget": 1 },
      expiries: 0,
      releases: 4,
      withdrawals: 0,
      forcedReleases: 1,
      ownerGone: 2,
      restores: 0,
      drops: 0,
    },
  };
  const h = new WaitHistogram();
  h.observe(0.3);
  h.observe(2);
  const byName = parseMetrics(renderMetrics(doc, h));
  assert.equal(byName.get("sai_resource_allocated")?.type, "GAUGE");
  assert.deepEqual(byName.get("sai_resource_allocated")?.metrics, [
    { value: "3", labels: { resource: "r" } },
  ]);
  assert.deepEqual(byName.get("sai_resource_refusals_total")?.metrics, [
    { value: "1", labels: { reason: "exceeds-budget" } },
  ]);
  assert.deepEqual(
    byName.get("sai_resource_releases_by_reason_total")?.metrics,
    [
      { value: "1", labels: { reason: "other" } },
      { value: "1", labels: { reason: "operator" } },
      { value: "2", labels: { reason: "owner gone" } },
    ],
  );
  const hist = byName.get("sai_resource_wait_seconds")
    ?.metrics[0] as HistogramSample;
  assert.equal(hist.count, "2");
  assert.equal(hist.sum, "2.3");
  assert.equal(hist.buckets["0.5"], "1");
  assert.equal(hist.buckets["+Inf"], "2");
});
