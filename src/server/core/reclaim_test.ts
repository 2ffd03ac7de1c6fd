import assert from "node:assert/strict";
import { ReclaimGrace } from "./reclaim.ts";
import { ANONYMOUS } from "./state.ts";

const D1 = "a".repeat(64);

/** A grace of `graceMs` from time 0, and how it ended (if it did). */
function grace(
  expected: string[] | "unknown",
  graceMs = 100,
): { grace: ReclaimGrace; ended: () => string | undefined } {
  let reason: string | undefined;
  const g = new ReclaimGrace({
    graceMs,
    expected,
    onEnd: (r) => reason = r,
  }, 0);
  return { grace: g, ended: () => reason };
}

Deno.test("ReclaimGrace ends early once every recorded session has restored", () => {
  const { grace: g, ended } = grace([D1], 60_000);
  g.restoring("c1", D1);
  assert.equal(ended(), undefined);
  g.restored("c1", D1);
  assert.equal(ended(), "all builders restored");
});

Deno.test("ReclaimGrace: another session-less builder's `restored` never ends it for a recorded anonymous one", () => {
  const { grace: g, ended } = grace([ANONYMOUS, D1]);
  g.restoring("c1", D1);
  g.restored("c1", D1);
  g.restoring("c2", ANONYMOUS);
  g.restored("c2", ANONYMOUS);
  assert.equal(g.ended, false, "still waiting for the anonymous one");
  g.wake(99);
  assert.equal(ended(), undefined, "not before its time");
  g.wake(100);
  assert.equal(ended(), "time");
});

Deno.test("ReclaimGrace with an unknown set of builders ends only when its time is up", () => {
  const { grace: g, ended } = grace("unknown");
  for (const [c, d] of [["c1", D1], ["c2", ANONYMOUS]] as const) {
    g.restoring(c, d);
    g.restored(c, d);
  }
  assert.equal(g.ended, false, "no restore ends it early");
  g.wake(100);
  assert.equal(ended(), "time");
});

Deno.test("ReclaimGrace.wake() past its time waits for a restore under way, which then ends it", () => {
  const { grace: g, ended } = grace([D1]);
  g.restoring("c1", D1);
  assert.equal(g.next, 100);
  g.wake(500);
  assert.equal(ended(), undefined, "c1 is halfway through its restore");
  assert.equal(g.next, undefined, "nothing left to wake it for");
  g.restored("c1", undefined);
  assert.equal(ended(), "time");
});
