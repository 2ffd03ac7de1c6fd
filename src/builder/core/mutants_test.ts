/**
 * The builder's mutants (`src/shared/core_io.ts`): each must change what
 * the core does, or the simulator could not find it.
 */

import assert from "node:assert/strict";
import type { Mutant } from "../../shared/core_io.ts";
import { Rig } from "./_rig_test.ts";

/** A linked builder holding one lease; the wall clock steps an hour on. */
function stepWallClock(mutant?: Mutant): Rig {
  const rig = new Rig(mutant && { mutant });
  rig.up({ id: "b1", fence: 20, heartbeat: 10 });
  rig.client({ cookie: "a", lease: 600 });
  rig.grant("a", { id: "g1" });
  rig.advance(1_000);
  rig.wall += 3_600_000;
  // Past the next heartbeat: an event to notice it at.
  rig.advance(5_000);
  return rig;
}

Deno.test("a wall-clock step does not fence the builder", () => {
  const rig = stepWallClock();
  assert.equal(rig.to(1).length, 1);
  assert.ok(rig.linked);
});

Deno.test("mutant `wall-clock-fence`: a wall-clock step fences the builder", () => {
  const rig = stepWallClock("wall-clock-fence");
  assert.equal(rig.to(1)[1]?.expired, true);
  assert.ok(
    rig.logs().includes("fenced: no round trip with the server in time"),
  );
});

/** A builder whose server falls silent; when its holder is told. */
function fencedAfter(mutant?: Mutant): number {
  const rig = new Rig(mutant && { mutant });
  rig.start();
  rig.opened();
  const helloAt = rig.mono;
  // The server's builder grace is 4 s: it announces a fence of 2 s.
  rig.welcome({ id: "b1", fence: 2, heartbeat: 1 });
  rig.client({ cookie: "a", lease: 600 });
  rig.grant("a", { id: "g1" });
  rig.pongs = false;
  while (rig.to(1).length < 2) rig.advance(rig.wakeAt - rig.mono);
  return rig.mono - helloAt;
}

Deno.test("the builder fences at the fence the server announced", () => {
  // The pongs stopped after the hello's round trip.
  assert.ok(fencedAfter() <= 2_001, `fenced after ${fencedAfter()} ms`);
});

Deno.test("mutant `fence-late`: the builder fences after the server's builder grace and a heartbeat", () => {
  const at = fencedAfter("fence-late");
  assert.ok(at > 4_000 + 1_000 && at <= 5_001 + 1_000, `fenced after ${at} ms`);
});
