import assert from "node:assert/strict";
import { Ledger, type Span } from "./_lease_workload.ts";

function span(
  cookie: string,
  times: { asked: number; answered?: number; letGo?: number },
  outcome: Span["outcome"] = "granted",
): Span {
  return {
    client: cookie,
    group: "g",
    cookie,
    amount: 1,
    ...times,
    ...(times.answered !== undefined && { outcome }),
    ...(times.letGo !== undefined && { ended: "released" as const }),
  };
}

Deno.test("`Ledger.peak()` counts overlapping holdings, not ones that merely touch", () => {
  const ledger = new Ledger(2);
  ledger.spans.push(
    span("a", { asked: 0, answered: 10, letGo: 20 }),
    span("b", { asked: 0, answered: 20, letGo: 30 }),
    span("c", { asked: 0, answered: 25, letGo: 40 }),
  );
  const peak = ledger.peak();
  assert.equal(peak.units, 2);
  assert.equal(peak.at, 25);
  assert.deepEqual(peak.holders.sort(), ["b", "c"]);
});

Deno.test("`Ledger.peak()` places a letting go reported late at its own time, and counts one never reported as still held", () => {
  const ledger = new Ledger(1);
  // "a" said afterwards that it stopped at 15, before "b" was granted.
  ledger.spans.push(
    span("a", { asked: 0, answered: 10, letGo: 15 }),
    span("b", { asked: 0, answered: 16 }),
    span("c", { asked: 0, answered: 50, letGo: 60 }),
  );
  const peak = ledger.peak();
  assert.equal(peak.units, 2, "b never let go, so c overlaps it");
  assert.deepEqual(peak.holders.sort(), ["b", "c"]);
  ledger.spans.splice(1, 1);
  assert.equal(ledger.peak().units, 1);
});

Deno.test("`Ledger.window()` counts the time a unit was free while a request waited", () => {
  const ledger = new Ledger(1);
  ledger.spans.push(
    span("a", { asked: 0, answered: 0, letGo: 1000 }),
    // Waits from 500; the unit is free from 1000; granted at 3000.
    span("b", { asked: 500, answered: 3000, letGo: 3500 }),
    // Refused at once: waited, but no unit was free meanwhile.
    span("c", { asked: 3200, answered: 3300 }, "refused"),
  );
  const w = ledger.window(0, 4000);
  assert.equal(w.idleWhileWaiting, 2);
  assert.equal(w.longestIdleWhileWaiting, 2);
  assert.equal(w.grants, 2);
  assert.equal(ledger.window(2000, 4000).idleWhileWaiting, 1);
});
