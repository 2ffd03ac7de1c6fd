import assert from "node:assert/strict";
import { ReclaimGrace } from "./reclaim.ts";
import { ANONYMOUS } from "./core/state.ts";

const D1 = "a".repeat(64);

/** A grace of `graceMs` and the promise of its end's reason. */
function grace(
  expected: string[] | "unknown",
  graceMs = 100,
): { grace: ReclaimGrace; ended: Promise<string> } {
  const { promise, resolve } = Promise.withResolvers<string>();
  return {
    grace: new ReclaimGrace({ graceMs, expected, onEnd: resolve }, Date.now()),
    ended: promise,
  };
}

Deno.test("ReclaimGrace ends early once every recorded session has restored", async () => {
  const { grace: g, ended } = grace([D1], 60_000);
  g.restoring("c1", D1);
  g.restored("c1", D1);
  assert.equal(await ended, "all builders restored");
});

Deno.test("ReclaimGrace: another session-less builder's `restored` never ends it for a recorded anonymous one", async () => {
  const { grace: g, ended } = grace([ANONYMOUS, D1]);
  g.restoring("c1", D1);
  g.restored("c1", D1);
  g.restoring("c2", ANONYMOUS);
  g.restored("c2", ANONYMOUS);
  assert.equal(g.ended, false, "still waiting for the anonymous one");
  assert.equal(await ended, "time");
});

Deno.test("ReclaimGrace with an unknown set of builders ends only when its time is up", async () => {
  const { grace: g, ended } = grace("unknown");
  for (const [c, d] of [["c1", D1], ["c2", ANONYMOUS]] as const) {
    g.restoring(c, d);
    g.restored(c, d);
  }
  assert.equal(g.ended, false, "no restore ends it early");
  assert.equal(await ended, "time");
});
