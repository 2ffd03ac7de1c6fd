import assert from "node:assert/strict";
import {
  type AdminTarget,
  applyBudgets,
  bearerMatches,
  parseTokenFile,
} from "./admin.ts";
import { Allocator } from "../allocator/allocator.ts";

Deno.test("bearerMatches() accepts only the exact bearer token", () => {
  assert.equal(bearerMatches("Bearer s3cret-token", "s3cret-token"), true);
  assert.equal(bearerMatches("bearer s3cret-token", "s3cret-token"), true);
  assert.equal(bearerMatches("Bearer s3cret-tokeN", "s3cret-token"), false);
  assert.equal(bearerMatches("Bearer s3cret", "s3cret-token"), false);
  assert.equal(bearerMatches("s3cret-token", "s3cret-token"), false);
  assert.equal(bearerMatches("Basic s3cret-token", "s3cret-token"), false);
  assert.equal(bearerMatches(null, "s3cret-token"), false);
  assert.equal(bearerMatches("Bearer ", "s3cret-token"), false);
});

Deno.test("parseTokenFile() takes the first line and refuses short tokens", () => {
  assert.equal(parseTokenFile("  abcdefgh12 \nignored\n", "f"), "abcdefgh12");
  assert.throws(() => parseTokenFile("short\n", "f"), TypeError);
  assert.throws(() => parseTokenFile("\nabcdefgh12\n", "f"), TypeError);
});

/** The admin rules over a real allocator, as the server applies them. */
function target(alloc: Allocator): AdminTarget {
  return {
    budgets: () => alloc.budgets(),
    setBudget(name, budget) {
      const { previous } = alloc.setBudget(name, budget);
      return {
        resource: name,
        budget,
        previous: previous ?? null,
        granted: 0,
        refused: 0,
      };
    },
    removeResource(name) {
      const { result } = alloc.removeResource(name);
      return result === "busy"
        ? { result, leases: 1 }
        : result === "unknown"
        ? { result }
        : { result, refused: 0 };
    },
    forceRelease: () => ({ result: "no-lease" }),
  };
}

Deno.test("applyBudgets() sets, adds, removes idle resources and drains busy ones", () => {
  const alloc = new Allocator(
    Object.entries({ keep: 1, grow: 1, idle: 1, busy: 2 }),
    { now: () => 0 },
  );
  alloc.request("b", { cookie: "c", resname: "busy", amount: 1, lease: 9 });
  const { draining } = applyBudgets(
    target(alloc),
    new Map([["keep", 1], ["grow", 5], ["new", 3]]),
    { addr: "SIGHUP" },
  );
  assert.deepEqual(draining, ["busy"]);
  assert.deepEqual(
    Object.fromEntries(alloc.budgets()),
    { keep: 1, grow: 5, busy: 0, new: 3 },
  );
});
