import assert from "node:assert/strict";
import { Allocator, type Outcome } from "./allocator.ts";

function setup(budgets: Record<string, number>, maxLease?: number) {
  let now = 1_000_000;
  const alloc = new Allocator(Object.entries(budgets), {
    now: () => now,
    ...(maxLease !== undefined && { maxLease }),
  });
  return {
    alloc,
    advance(ms: number) {
      now += ms;
    },
    get now() {
      return now;
    },
  };
}

const req = (cookie: string, amount: number, lease = 10, resname = "r") => ({
  cookie,
  resname,
  amount,
  lease,
});

const summary = (outs: Outcome[]) =>
  outs.map((o) => `${o.type}:${o.owner}/${o.cookie}`);

Deno.test("Allocator.request() grants at once while the budget allows", () => {
  const { alloc } = setup({ r: 3 });
  assert.deepEqual(summary(alloc.request("b", req("a", 2))), ["grant:b/a"]);
  assert.deepEqual(summary(alloc.request("b", req("c", 1))), ["grant:b/c"]);
  assert.deepEqual(alloc.request("b", req("d", 1)), []);
  const [r] = alloc.status();
  assert.equal(r!.allocated, 3);
  assert.equal(r!.queuedRequests, 1);
  assert.equal(r!.peak, 3);
});

Deno.test("Allocator.request() names the known resources when it refuses an unknown one", () => {
  const { alloc } = setup({ db: 1, warmcat_conns: 4 });
  const [out] = alloc.request("b", req("a", 1, 10, "warmcat_con"));
  assert.ok(out?.type === "refuse");
  assert.equal(
    out.message,
    'Cannot lease "warmcat_con": no such resource (known: "warmcat_conns", "db")',
  );
});

Deno.test("Allocator.request() refuses unknown names, oversize amounts, long leases and duplicate cookies", () => {
  const { alloc } = setup({ r: 2 }, 100);
  const reasons = [
    alloc.request("b", req("a", 1, 10, "nope")),
    alloc.request("b", req("b", 3)),
    alloc.request("b", req("c", 1, 101)),
  ].map((o) => o[0]?.type === "refuse" ? o[0].reason : "none");
  assert.deepEqual(reasons, [
    "unknown-resource",
    "exceeds-budget",
    "lease-too-long",
  ]);
  alloc.request("b", req("d", 1));
  const dup = alloc.request("b", req("d", 1));
  assert.equal(dup[0]?.type === "refuse" && dup[0].reason, "duplicate-cookie");
  // The same cookie from another builder is a different request.
  assert.deepEqual(summary(alloc.request("other", req("d", 1))), [
    "grant:other/d",
  ]);
});

Deno.test("Allocator grants in FIFO order and never lets a later request overtake the head", () => {
  const { alloc } = setup({ r: 4 });
  alloc.request("b", req("hold", 3));
  assert.deepEqual(alloc.request("b", req("big", 4)), []);
  assert.deepEqual(
    alloc.request("b", req("small", 1)),
    [],
    "1 is free but the head waits",
  );
  const { found, outcomes } = alloc.release("b", "hold");
  assert.equal(found, "lease");
  assert.deepEqual(summary(outcomes), ["grant:b/big"]);
  assert.deepEqual(summary(alloc.release("b", "big").outcomes), [
    "grant:b/small",
  ]);
});

Deno.test("Allocator.release() withdraws a queued request and the queue moves up", () => {
  const { alloc } = setup({ r: 1 });
  alloc.request("b", req("a", 1));
  alloc.request("b", req("q1", 1));
  alloc.request("b", req("q2", 1));
  const w = alloc.release("b", "q1");
  assert.equal(w.found, "queued");
  assert.deepEqual(w.outcomes, []);
  assert.deepEqual(
    alloc.status()[0]!.queue.map((q) => [q.cookie, q.position]),
    [["q2", 1]],
  );
  assert.deepEqual(summary(alloc.release("b", "a").outcomes), ["grant:b/q2"]);
  assert.equal(alloc.release("b", "gone").found, null);
});

Deno.test("Allocator.release() cannot touch another owner's cookie", () => {
  const { alloc } = setup({ r: 1 });
  alloc.request("b1", req("a", 1));
  assert.equal(alloc.release("b2", "a").found, null);
  assert.equal(alloc.status()[0]!.allocated, 1);
});

Deno.test("Allocator.expire() frees due leases only, then grants the queue", () => {
  const t = setup({ r: 2 });
  t.alloc.request("b", req("a", 1, 5));
  t.alloc.request("b", req("b", 1, 10));
  t.alloc.request("b", req("c", 2, 10));
  assert.equal(t.alloc.nextExpiry(), t.now + 5000);
  t.advance(4999);
  assert.deepEqual(t.alloc.expire(), []);
  t.advance(1);
  assert.deepEqual(summary(t.alloc.expire()), ["expire:b/a"]);
  t.advance(5000);
  assert.deepEqual(summary(t.alloc.expire()), ["expire:b/b", "grant:b/c"]);
  assert.equal(t.alloc.nextExpiry(), t.now + 10_000);
});

Deno.test("Allocator.nextExpiry() skips leases released early", () => {
  const t = setup({ r: 2 });
  t.alloc.request("b", req("a", 1, 5));
  t.alloc.request("b", req("b", 1, 10));
  t.alloc.release("b", "a");
  assert.equal(t.alloc.nextExpiry(), t.now + 10_000);
  t.alloc.release("b", "b");
  assert.equal(t.alloc.nextExpiry(), undefined);
});

Deno.test("Allocator.dropOwner() frees leases and queued requests of that owner only", () => {
  const { alloc } = setup({ r: 2, s: 1 });
  alloc.request("gone", req("a", 2));
  alloc.request("gone", req("b", 1, 10, "s"));
  alloc.request("stay", req("c", 1));
  alloc.request("gone", req("d", 1));
  assert.deepEqual(summary(alloc.dropOwner("gone")), ["grant:stay/c"]);
  const [r, s] = alloc.status();
  assert.equal(r!.allocated, 1);
  assert.equal(r!.queuedRequests, 0);
  assert.equal(s!.allocated, 0);
  assert.deepEqual(alloc.dropOwner("nobody"), []);
});

Deno.test("Allocator.status() estimates queued starts from declared lease ends", () => {
  const t = setup({ r: 2 });
  t.alloc.request("b", req("a", 1, 10));
  t.alloc.request("b", req("b", 1, 20));
  t.alloc.request("b", req("q1", 1, 5));
  t.alloc.request("b", req("q2", 2, 5));
  const queue = t.alloc.status()[0]!.queue;
  assert.deepEqual(queue.map((q) => q.estimatedStart! - t.now), [
    10_000,
    20_000,
  ]);
  assert.equal(queue[1]!.position, 2);
});

Deno.test("Allocator grant reports how long the request waited", () => {
  const t = setup({ r: 1 });
  t.alloc.request("b", req("a", 1, 1));
  t.alloc.request("b", req("w", 1, 1));
  t.advance(1000);
  const out = t.alloc.expire();
  const grant = out.find((o) => o.type === "grant");
  assert.equal(grant?.type === "grant" && grant.waited, 1000);
});

Deno.test("Allocator.restore() refuses a lease that would take the resource past its budget", () => {
  const { alloc } = setup({ r: 2 });
  alloc.request("near", req("n", 1));
  assert.deepEqual(
    summary(alloc.restore("far", req("f", 1, 30), "lease")),
    ["grant:far/f"],
    "it fits",
  );
  const out = alloc.restore("other", req("o", 1, 30), "lease");
  assert.equal(out.length, 1);
  assert.equal(out[0]?.type, "refuse");
  assert.equal(
    out[0]?.type === "refuse" && out[0].reason,
    "restore-over-budget",
  );
  assert.match(
    out[0]?.type === "refuse" ? out[0].message : "",
    /2 of 2 are allocated, 1 more would exceed the budget; the lease is lost/,
  );
  assert.deepEqual(alloc.cookiesOf("other"), [], "nothing is kept for it");
  // A queued request of the same builder, restored as a lease, too.
  alloc.request("other", req("q", 1));
  const queued = alloc.restore("other", req("q", 1, 30), "lease");
  assert.equal(
    queued[0]?.type === "refuse" && queued[0].reason,
    "restore-over-budget",
  );
  const [r] = alloc.status();
  assert.equal(r!.allocated, 2);
  assert.equal(r!.peak, 2);
  assert.equal(r!.overBudgetGrants, 0);
  assert.equal(r!.queuedRequests, 0);
});

Deno.test("Allocator.restore() with the restoreUnbounded mutant admits a lease past the budget, and counts it", () => {
  const alloc = new Allocator([["r", 1]], {
    now: () => 0,
    restoreUnbounded: true,
  });
  alloc.request("near", req("n", 1));
  assert.deepEqual(
    summary(alloc.restore("far", req("f", 1, 30), "lease")),
    ["grant:far/f"],
  );
  const [r] = alloc.status();
  assert.equal(r!.allocated, 2);
  assert.equal(r!.overBudgetGrants, 1, "the audit sees what the mutant did");
});

Deno.test("Allocator.restore() never counts a known cookie twice", () => {
  const { alloc } = setup({ r: 2 });
  alloc.request("b", req("held", 1));
  alloc.request("b", req("big", 2));
  assert.deepEqual(summary(alloc.restore("b", req("held", 1), "lease")), [
    "grant:b/held",
  ]);
  assert.equal(alloc.status()[0]!.allocated, 1);
  // A queued request re-sent after a reconnect keeps its place.
  assert.deepEqual(alloc.restore("b", req("big", 2), "queued"), []);
  assert.deepEqual(alloc.status()[0]!.queue.map((q) => q.cookie), ["big"]);
  // A queued request the server had already granted is re-sent as a grant.
  alloc.release("b", "held");
  assert.deepEqual(summary(alloc.restore("b", req("big", 2), "queued")), [
    "grant:b/big",
  ]);
  assert.equal(alloc.status()[0]!.allocated, 2);
});

Deno.test("Allocator.restore() refuses an unknown resource", () => {
  const { alloc } = setup({ r: 1 });
  const out = alloc.restore("b", req("x", 1, 10, "gone"), "lease");
  assert.equal(out[0]?.type === "refuse" && out[0].reason, "unknown-resource");
});

Deno.test("Allocator.restore() validates a lease like a request", () => {
  const { alloc } = setup({ r: 2 }, 60);
  const reason = (o: Outcome[]) => o[0]?.type === "refuse" && o[0].reason;
  assert.equal(
    reason(alloc.restore("b", req("huge", 4e9, 10), "lease")),
    "exceeds-budget",
  );
  assert.equal(
    reason(alloc.restore("b", req("long", 1, 4e9), "lease")),
    "lease-too-long",
  );
  assert.equal(alloc.status()[0]!.allocated, 0);
  assert.deepEqual(alloc.cookiesOf("b"), [], "nothing kept of a refusal");
});

Deno.test("Allocator.restore() never lets one builder hold more than the budget", () => {
  const { alloc } = setup({ r: 2 });
  assert.deepEqual(summary(alloc.restore("b", req("one", 2), "lease")), [
    "grant:b/one",
  ]);
  const out = alloc.restore("b", req("two", 1), "lease");
  assert.equal(out[0]?.type === "refuse" && out[0].reason, "exceeds-budget");
  assert.match(
    out[0]?.type === "refuse" ? out[0].message : "",
    /would hold 3, over the budget of 2/,
  );
  // Nor the resource as a whole: another builder's restore is refused.
  const other = alloc.restore("c", req("three", 1), "lease");
  assert.equal(
    other[0]?.type === "refuse" && other[0].reason,
    "restore-over-budget",
  );
  const [r] = alloc.status();
  assert.equal(r!.allocated, 2);
  assert.equal(r!.overBudgetGrants, 0);
});

Deno.test("Allocator.beginReclaim() grants nothing new until endReclaim(), and keeps queue order", () => {
  const { alloc } = setup({ r: 2 });
  alloc.beginReclaim();
  assert.equal(alloc.reclaiming, true);
  assert.deepEqual(alloc.request("b", req("first", 1)), []);
  assert.deepEqual(alloc.request("c", req("second", 2)), []);
  assert.deepEqual(summary(alloc.restore("d", req("old", 1), "lease")), [
    "grant:d/old",
  ]);
  assert.deepEqual(
    alloc.status()[0]!.queue.map((q) => q.cookie),
    ["first", "second"],
  );
  assert.deepEqual(summary(alloc.endReclaim()), ["grant:b/first"]);
  assert.equal(alloc.reclaiming, false);
  assert.deepEqual(alloc.endReclaim(), [], "ending twice grants nothing");
});

Deno.test("Allocator.request() refuses past the per-owner queue limit, without touching others", () => {
  const alloc = new Allocator([["r", 1]], {
    now: () => 0,
    maxQueuedPerOwner: 2,
  });
  alloc.request("a", req("held", 1));
  alloc.request("a", req("q1", 1));
  alloc.request("a", req("q2", 1));
  const out = alloc.request("a", req("q3", 1));
  assert.equal(out[0]?.type === "refuse" && out[0].reason, "queue-limit");
  assert.deepEqual(alloc.request("b", req("other", 1)), []);
  assert.deepEqual(alloc.status()[0]!.queue.map((q) => q.cookie), [
    "q1",
    "q2",
    "other",
  ]);
  // Withdrawing frees room in the limit.
  alloc.release("a", "q1");
  assert.deepEqual(alloc.request("a", req("q4", 1)), []);
});

// --- Operator actions (issue #5) ---------------------------------------

Deno.test("Allocator.setBudget() raising the budget grants waiting requests at once", () => {
  const { alloc } = setup({ r: 2 });
  alloc.request("b", req("a", 2));
  assert.deepEqual(alloc.request("b", req("q1", 1)), []);
  assert.deepEqual(alloc.request("b", req("q2", 2)), []);
  const { previous, outcomes } = alloc.setBudget("r", 5);
  assert.equal(previous, 2);
  assert.deepEqual(summary(outcomes), ["grant:b/q1", "grant:b/q2"]);
  assert.equal(alloc.status()[0]!.allocated, 5);
});

Deno.test("Allocator.setBudget() lowering drains: no lease revoked, no grant until under the new budget", () => {
  const { alloc } = setup({ r: 4 });
  alloc.request("b", req("a", 2));
  alloc.request("b", req("c", 2));
  assert.deepEqual(alloc.request("b", req("q", 1)), []);
  assert.deepEqual(alloc.setBudget("r", 2).outcomes, []);
  let [r] = alloc.status();
  assert.equal(r!.allocated, 4, "live leases are kept");
  assert.equal(r!.budget, 2);
  // 2 of 2 still allocated: the queue keeps waiting.
  assert.deepEqual(alloc.release("b", "a").outcomes, []);
  assert.deepEqual(summary(alloc.release("b", "c").outcomes), ["grant:b/q"]);
  [r] = alloc.status();
  assert.equal(r!.allocated, 1);
});

Deno.test("Allocator.setBudget() refuses queued requests the new budget can never fit", () => {
  const { alloc } = setup({ r: 4 });
  alloc.request("b", req("a", 4));
  alloc.request("b", req("big", 3));
  alloc.request("b", req("small", 1));
  const { outcomes } = alloc.setBudget("r", 2);
  assert.deepEqual(summary(outcomes), ["refuse:b/big"]);
  assert.equal(
    outcomes[0]?.type === "refuse" && outcomes[0].reason,
    "exceeds-budget",
  );
  assert.deepEqual(alloc.status()[0]!.queue.map((q) => q.cookie), ["small"]);
});

Deno.test("Allocator.setBudget() adds a new resource and rejects a bad budget", () => {
  const { alloc } = setup({ r: 1 });
  assert.equal(alloc.setBudget("db", 3).previous, undefined);
  assert.deepEqual(summary(alloc.request("b", req("x", 3, 10, "db"))), [
    "grant:b/x",
  ]);
  assert.throws(() => alloc.setBudget("r", -1), RangeError);
  assert.throws(() => alloc.setBudget("r", 1.5), RangeError);
  assert.equal(alloc.budgets().get("r"), 1);
});

Deno.test("Allocator.removeResource() refuses while leases are live, else removes it", () => {
  const { alloc } = setup({ r: 1, keep: 1 });
  alloc.request("b", req("a", 1));
  alloc.request("b", req("q", 1));
  assert.equal(alloc.removeResource("r").result, "busy");
  assert.equal(alloc.status().find((s) => s.name === "r")!.queuedRequests, 1);
  assert.equal(alloc.removeResource("nope").result, "unknown");
  alloc.setBudget("r", 0);
  alloc.release("b", "a");
  const { result, outcomes } = alloc.removeResource("r");
  assert.equal(result, "removed");
  assert.deepEqual(outcomes, [], "budget 0 already refused the queue");
  assert.deepEqual([...alloc.budgets().keys()], ["keep"]);
  const again = alloc.request("b", req("z", 1));
  assert.equal(
    again[0]?.type === "refuse" && again[0].reason,
    "unknown-resource",
  );
});

Deno.test("Allocator.forceRelease() ends a live lease, grants the next, and ignores queued or unknown cookies", () => {
  const { alloc, advance } = setup({ r: 2 });
  alloc.request("b", req("a", 2, 5));
  alloc.request("c", req("q", 2, 60));
  assert.equal(alloc.forceRelease("c", "q").lease, undefined);
  assert.equal(alloc.forceRelease("b", "nope").lease, undefined);
  const { lease, outcomes } = alloc.forceRelease("b", "a");
  assert.deepEqual(lease, {
    owner: "b",
    cookie: "a",
    id: "1",
    resname: "r",
    amount: 2,
  });
  assert.deepEqual(summary(outcomes), ["grant:c/q"]);
  assert.equal(alloc.lookup("b", "a"), undefined);
  // The revoked lease's expiry must not fire later.
  advance(10_000);
  assert.deepEqual(alloc.expire(), []);
  assert.equal(alloc.status()[0]!.allocated, 2);
});

Deno.test("Allocator.request() with resources grants all or nothing, holding nothing while it waits", () => {
  const { alloc } = setup({ a: 2, b: 2 });
  alloc.request("b", req("hold", 2, 10, "a"));
  const multi = {
    cookie: "m",
    resname: "",
    amount: 0,
    lease: 10,
    resources: [{ resname: "a", amount: 1 }, { resname: "b", amount: 1 }],
  };
  assert.deepEqual(alloc.request("b", multi), []);
  const b = alloc.status().find((r) => r.name === "b")!;
  assert.equal(b.allocated, 0, "b is not held while a is busy");
  // The waiting multi request keeps its place (1 of b), not more.
  assert.deepEqual(summary(alloc.request("b", req("solo", 1, 10, "b"))), [
    "grant:b/solo",
  ]);
  assert.deepEqual(alloc.request("b", req("solo2", 1, 10, "b")), []);
  alloc.release("b", "solo2");
  alloc.release("b", "solo");
  const out = alloc.release("b", "hold").outcomes;
  assert.equal(out.length, 1);
  const g = out[0]!;
  assert.equal(g.type, "grant");
  assert.deepEqual(g.type === "grant" && g.resources, multi.resources);
  assert.deepEqual(alloc.status().map((r) => r.allocated), [1, 1]);
});

Deno.test("Allocator.request() refuses a resource named twice or unknown in a multi request", () => {
  const { alloc } = setup({ a: 2, b: 1 });
  const twice = alloc.request("b", {
    cookie: "x",
    resname: "",
    amount: 0,
    lease: 1,
    resources: [{ resname: "a", amount: 1 }, { resname: "a", amount: 1 }],
  });
  assert.equal(twice[0]?.type === "refuse" && twice[0].reason, "invalid");
  const unknown = alloc.request("b", {
    cookie: "y",
    resname: "",
    amount: 0,
    lease: 1,
    resources: [{ resname: "a", amount: 1 }, { resname: "z", amount: 1 }],
  });
  assert.equal(
    unknown[0]?.type === "refuse" && unknown[0].reason,
    "unknown-resource",
  );
  assert.deepEqual(alloc.status().map((r) => r.allocated), [0, 0]);
});

Deno.test("Allocator: crossed multi-resource requests do not deadlock", () => {
  const { alloc } = setup({ a: 1, b: 1 });
  alloc.request("b", req("ha", 1, 10, "a"));
  alloc.request("b", req("hb", 1, 10, "b"));
  const both = (cookie: string, first: string, second: string) => ({
    cookie,
    resname: "",
    amount: 0,
    lease: 10,
    resources: [{ resname: first, amount: 1 }, { resname: second, amount: 1 }],
  });
  alloc.request("b", both("x", "a", "b"));
  alloc.request("b", both("y", "b", "a"));
  assert.deepEqual(alloc.release("b", "ha").outcomes, [], "x still needs b");
  assert.deepEqual(summary(alloc.release("b", "hb").outcomes), ["grant:b/x"]);
  assert.deepEqual(summary(alloc.release("b", "x").outcomes), ["grant:b/y"]);
});

Deno.test("Allocator orders by priority, but never ahead of the head's reservation", () => {
  const { alloc } = setup({ r: 1 });
  alloc.request("b", req("hold", 1));
  alloc.request("b", req("head", 1));
  alloc.request("b", req("mid", 1));
  alloc.request("b", { ...req("high", 1), priority: 5 });
  alloc.request("b", { ...req("higher", 1), priority: 9 });
  alloc.request("b", { ...req("high2", 1), priority: 5 });
  assert.deepEqual(alloc.status()[0]!.queue.map((q) => q.cookie), [
    "head",
    "higher",
    "high",
    "high2",
    "mid",
  ]);
  const order = [];
  let out = alloc.release("b", "hold").outcomes;
  while (out.length > 0) {
    const g = out[0]!;
    order.push(g.cookie);
    out = alloc.release("b", g.cookie).outcomes;
  }
  assert.deepEqual(order, ["head", "higher", "high", "high2", "mid"]);
});

Deno.test("Allocator.release() of a queued request behind a waiting multi-resource head grants what now fits", () => {
  const { alloc } = setup({ a: 2, b: 1 });
  alloc.request("b", req("hb", 1, 10, "b"));
  // The head of a: fits in a, waits for b.
  alloc.request("b", {
    cookie: "m",
    resname: "",
    amount: 0,
    lease: 10,
    resources: [{ resname: "a", amount: 1 }, { resname: "b", amount: 1 }],
  });
  alloc.request("b", req("w", 2, 10, "a")); // does not fit beside m
  alloc.request("b", req("x", 1, 10, "a")); // would, but waits behind w
  assert.deepEqual(summary(alloc.release("b", "w").outcomes), ["grant:b/x"]);
});

Deno.test("Allocator.release() keeps the expiry heap bounded by the live leases, not by those granted", () => {
  const t = setup({ r: 1_000 }, 86_400);
  // 10 leases of a day that stay, then 20,000 of an hour released at once:
  // without compaction each would wait in the heap for its hour.
  for (let i = 0; i < 10; i++) {
    assert.deepEqual(
      summary(t.alloc.request("b", req(`keep${i}`, 1, 86_400 - i))),
      [
        `grant:b/keep${i}`,
      ],
    );
  }
  let most = 0;
  for (let i = 0; i < 20_000; i++) {
    assert.deepEqual(summary(t.alloc.request("b", req(`c${i}`, 1, 3_600))), [
      `grant:b/c${i}`,
    ]);
    assert.equal(t.alloc.release("b", `c${i}`).found, "lease");
    most = Math.max(most, t.alloc.expiryHeapSize);
  }
  assert.ok(most <= 2 * 11 + 64, `the heap reached ${most} entries`);
  // The live leases still end on time, in order, after the compactions.
  assert.equal(t.alloc.nextExpiry(), t.now + (86_400 - 9) * 1000);
  t.advance(3_600 * 1000);
  assert.deepEqual(t.alloc.expire(), []);
  t.advance((86_400 - 3_600) * 1000);
  assert.deepEqual(
    summary(t.alloc.expire()),
    Array.from({ length: 10 }, (_, i) => `expire:b/keep${9 - i}`),
  );
  assert.equal(t.alloc.expiryHeapSize, 0);
  assert.equal(t.alloc.nextExpiry(), undefined);
});

Deno.test("Allocator.release() with a grant's id ends only that lease, not a later one of the cookie", () => {
  const { alloc } = setup({ r: 1 });
  const first = alloc.request("b", req("c", 1));
  const id1 = first[0]?.type === "grant" ? first[0].id : "";
  assert.ok(id1 !== "");
  assert.equal(alloc.release("b", "c", id1).found, "lease");
  const second = alloc.request("b", req("c", 1));
  const id2 = second[0]?.type === "grant" ? second[0].id : "";
  assert.notEqual(id2, id1, "each grant has its own id");
  assert.equal(alloc.release("b", "c", id1).found, "stale");
  assert.equal(alloc.status()[0]!.allocated, 1, "the later lease stands");
  // A restore keeps the id its grant had.
  const back = alloc.restore("d", { ...req("x", 1), id: "old.7" }, "lease");
  assert.equal(back[0]?.type, "refuse", "no room: budget 1 is held");
  assert.equal(alloc.release("b", "c", id2).found, "lease");
  const again = alloc.restore("d", { ...req("x", 1), id: "old.7" }, "lease");
  assert.equal(again[0]?.type === "grant" && again[0].id, "old.7");
});
