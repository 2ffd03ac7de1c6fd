/**
 * Property tests of the allocator's bookkeeping on random traces that mix
 * requests (single and multi-resource, with priorities) with everything
 * else that changes its state: releases, expiry, dropped builders,
 * restores after a reconnect (of live, ended and unknown cookies) and the
 * operator's actions (budgets raised and lowered, resources removed, leases
 * force-released).  A model of every request, kept from the outcomes alone,
 * is checked against `status()` after every step.
 *
 * The scheduling guarantee (no head starts later than under fifo) is
 * checked in `policy_test.ts`; here, that no request is lost, counted twice
 * or granted over a budget.
 *
 * @module
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Allocator, type Outcome } from "./allocator.ts";
import { backfill, fifo, type Policy } from "./policy.ts";

/** r2 starts absent: requests for it are refused until a budget adds it. */
const NAMES = ["r0", "r1", "r2"];
const INITIAL: [string, number][] = [["r0", 4], ["r1", 7]];
const OWNERS = 3;

type Op =
  | {
    op: "req";
    owner: number;
    res: number;
    amount: number;
    lease: number;
    /** A second resource for an all-or-nothing request, if any. */
    also: { res: number; amount: number } | null;
    priority: number;
  }
  | { op: "release"; pick: number }
  | { op: "advance"; seconds: number }
  | { op: "drop"; owner: number }
  | {
    op: "restore";
    kind: "lease" | "queued";
    /** A cookie seen before (live or ended), or null for a never-seen one. */
    pick: number | null;
    /** For a never-seen cookie: what it asks for. */
    owner: number;
    res: number;
    amount: number;
    lease: number;
  }
  | { op: "budget"; res: number; budget: number }
  | { op: "remove"; res: number }
  | { op: "force"; pick: number }
  | { op: "reclaim" };

const resIndex = fc.integer({ min: 0, max: NAMES.length - 1 });

const ops: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant("req" as const),
      owner: fc.integer({ min: 0, max: OWNERS - 1 }),
      res: resIndex,
      amount: fc.integer({ min: 1, max: 8 }),
      lease: fc.integer({ min: 1, max: 30 }),
      also: fc.option(
        fc.record({ res: resIndex, amount: fc.integer({ min: 1, max: 5 }) }),
        { freq: 3 },
      ),
      priority: fc.integer({ min: 0, max: 3 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("release" as const),
      pick: fc.nat(),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("advance" as const),
      seconds: fc.integer({ min: 0, max: 15 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant("drop" as const),
      owner: fc.integer({ min: 0, max: OWNERS - 1 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant("restore" as const),
      kind: fc.constantFrom("lease" as const, "queued" as const),
      pick: fc.option(fc.nat(), { freq: 3 }),
      owner: fc.integer({ min: 0, max: OWNERS - 1 }),
      res: resIndex,
      // Past the budgets and the lease limit (30): a restore is validated.
      amount: fc.integer({ min: 1, max: 10 }),
      lease: fc.integer({ min: 1, max: 36 }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant("budget" as const),
      res: resIndex,
      budget: fc.integer({ min: 0, max: 10 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("remove" as const), res: resIndex }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("force" as const), pick: fc.nat() }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constant("reclaim" as const) }),
  },
);

/** One request, from when it is made until it is decided and (if granted) ended. */
interface Life {
  owner: string;
  cookie: string;
  parts: { resname: string; amount: number }[];
  state: "queued" | "leased" | "done";
  decision: "grant" | "refuse" | "withdraw" | "dropped" | undefined;
  decisions: number;
  end: "release" | "expire" | "force" | "dropped" | undefined;
  ends: number;
  expires: number;
  /** The grant's id, once granted. */
  id?: string;
}

/** What a known cookie asked for, to restore it as its builder would. */
interface Asked {
  owner: string;
  cookie: string;
  parts: { resname: string; amount: number }[];
  lease: number;
}

/** Which cases a trace reached, so a test can show it covers them. */
type Seen = Set<string>;

function runTrace(policy: Policy, trace: Op[], seen: Seen = new Set()): void {
  let now = 0;
  const alloc = new Allocator(INITIAL, {
    now: () => now,
    policy,
    maxLease: 30,
  });
  const budgets = new Map(INITIAL);
  /** Every grant's id so far: each lease has its own. */
  const ids = new Set<string>();
  /**
   * Resources allowed over their budget: a lowered budget since they were
   * last at or under it.  Grants and restores never are.
   */
  const excused = new Set<string>();
  /** The audit: restores that left a resource over its budget. */
  const overBudget = new Map<string, number>();
  /** Resources and owners a call restored a lease on. */
  let restoredOn: { resname: string; owner: string }[] = [];
  let reclaiming = false;
  const lives: Life[] = [];
  const live = new Map<string, Life>();
  const asked: Asked[] = [];
  const key = (owner: string, cookie: string) => `${owner}\0${cookie}`;
  let step = "";

  const birth = (a: Asked): Life => {
    const life: Life = {
      owner: a.owner,
      cookie: a.cookie,
      parts: a.parts,
      state: "queued",
      decision: undefined,
      decisions: 0,
      end: undefined,
      ends: 0,
      expires: 0,
    };
    assert.ok(!live.has(key(a.owner, a.cookie)), `${step}: already live`);
    lives.push(life);
    live.set(key(a.owner, a.cookie), life);
    return life;
  };
  const decide = (life: Life, how: NonNullable<Life["decision"]>) => {
    assert.equal(life.state, "queued", `${step}: ${life.cookie} ${how}`);
    life.decision = how;
    life.decisions++;
    if (how === "grant") {
      life.state = "leased";
    } else {
      life.state = "done";
      live.delete(key(life.owner, life.cookie));
    }
  };
  /**
   * The audit's counters, as the server keeps them from the outcomes:
   * leases begun (granted or restored) and ended, by how.
   */
  const counters = { begun: 0, release: 0, expire: 0, force: 0, dropped: 0 };
  const end = (life: Life, how: NonNullable<Life["end"]>) => {
    assert.equal(life.state, "leased", `${step}: ${life.cookie} ${how}`);
    counters[how]++;
    life.end = how;
    life.ends++;
    life.state = "done";
    live.delete(key(life.owner, life.cookie));
  };
  /** Applies a call's outcomes to the model; returns the resources newly granted on. */
  const apply = (outs: Outcome[]): Set<string> => {
    const grantedOn = new Set<string>();
    for (const o of outs) {
      const life = live.get(key(o.owner, o.cookie));
      assert.ok(life, `${step}: ${o.type} for ${o.cookie}, which is not live`);
      if (o.type === "grant") {
        if (o.restored && life.state === "leased") {
          // A re-sent grant for a known lease: the same lease, not a new one.
          assert.equal(o.expires, life.expires, `${step}: re-sent grant`);
          assert.equal(o.id, life.id, `${step}: re-sent grant's id`);
          continue;
        }
        decide(life, "grant");
        counters.begun++;
        assert.ok(!ids.has(o.id), `${step}: grant id ${o.id} given twice`);
        ids.add(o.id);
        life.id = o.id;
        seen.add(
          `${o.restored ? "restored" : "new"} grant of ${
            life.parts.length > 1 ? "several resources" : "one resource"
          }`,
        );
        life.expires = o.expires;
        assert.ok(o.expires > now, `${step}: granted already expired`);
        const parts = o.resources ?? [{ resname: o.resname, amount: o.amount }];
        assert.deepEqual(parts, life.parts, `${step}: granted what was asked`);
        for (const p of parts) {
          if (o.restored) {
            restoredOn.push({ resname: p.resname, owner: o.owner });
          } else grantedOn.add(p.resname);
        }
      } else if (o.type === "refuse") {
        if (/^Cannot restore/.test(o.message)) {
          seen.add(`restore refused: ${o.reason}`);
        }
        if (/would hold/.test(o.message)) {
          seen.add("restore refused: the builder would exceed the budget");
        }
        decide(life, "refuse");
      } else {
        assert.ok(life.expires <= now, `${step}: ${o.cookie} expired early`);
        end(life, "expire");
      }
    }
    return grantedOn;
  };

  const check = (grantedOn: Set<string>, afterExpire: boolean) => {
    const status = alloc.status();
    // The counters identity: begun − ended by any cause = live leases.
    const leases = new Set(
      status.flatMap((r) => r.leases.map((l) => key(l.owner, l.cookie))),
    );
    assert.equal(
      counters.begun - counters.release - counters.expire - counters.force -
        counters.dropped,
      leases.size,
      `${step}: grants + restores − releases − expiries − drops = live leases`,
    );
    assert.deepEqual(
      status.map((r) => r.name).sort(),
      [...budgets.keys()].sort(),
      `${step}: resources`,
    );
    for (const res of status) {
      assert.equal(res.budget, budgets.get(res.name), `${step}: budget`);
      const sum = res.leases.reduce((s, l) => s + l.amount, 0);
      assert.equal(res.allocated, sum, `${step}: allocated is the leases' sum`);
      for (const r of restoredOn.filter((r) => r.resname === res.name)) {
        if (res.allocated > res.budget) {
          overBudget.set(res.name, (overBudget.get(res.name) ?? 0) + 1);
        }
        const held = res.leases.filter((l) => l.owner === r.owner)
          .reduce((s, l) => s + l.amount, 0);
        assert.ok(
          held <= res.budget,
          `${step}: a restore left ${r.owner} holding ${held}, over budget ${res.budget}`,
        );
      }
      assert.equal(
        res.overBudgetGrants,
        overBudget.get(res.name) ?? 0,
        `${step}: the audit counts every grant left over budget`,
      );
      assert.ok(
        !reclaiming || grantedOn.size === 0,
        `${step}: a new grant during the reclaim grace`,
      );
      if (res.allocated <= res.budget) excused.delete(res.name);
      else seen.add("over budget after a lowering");
      assert.ok(
        res.allocated <= res.budget || excused.has(res.name),
        `${step}: ${res.name} over budget (${res.allocated} > ${res.budget}) with nothing to excuse it`,
      );
      // Grants only add to allocated, after anything the call freed: a
      // new grant that ends the call over the budget put it there.  A
      // restore is held to the budget as a new grant is.
      assert.ok(
        !grantedOn.has(res.name) || res.allocated <= res.budget,
        `${step}: a new grant on ${res.name} left it over budget`,
      );
      assert.ok(
        !restoredOn.some((r) => r.resname === res.name) ||
          res.allocated <= res.budget,
        `${step}: a restore on ${res.name} left it over budget`,
      );
      const leased = [...live.values()].filter((l) =>
        l.state === "leased" && l.parts.some((p) => p.resname === res.name)
      );
      assert.deepEqual(
        res.leases.map((l) => `${l.owner}/${l.cookie}:${l.amount}@${l.expires}`)
          .sort(),
        leased.map((l) =>
          `${l.owner}/${l.cookie}:${
            l.parts.find((p) => p.resname === res.name)!.amount
          }@${l.expires}`
        ).sort(),
        `${step}: leases of ${res.name}`,
      );
      const queued = [...live.values()].filter((l) =>
        l.state === "queued" && l.parts.some((p) => p.resname === res.name)
      );
      assert.deepEqual(
        res.queue.map((q) => `${q.owner}/${q.cookie}`).sort(),
        queued.map((l) => `${l.owner}/${l.cookie}`).sort(),
        `${step}: queue of ${res.name}`,
      );
      assert.equal(res.queuedRequests, res.queue.length);
      if (afterExpire) {
        for (const l of res.leases) {
          assert.ok(l.expires > now, `${step}: ${l.cookie} outlived expiry`);
        }
      }
    }
  };

  const pick = (n: number) => asked[n % asked.length]!;
  let n = 0;
  const expireUntil = (target: number) => {
    restoredOn = [];
    // Step through every expiry on the way, as the server's timer does.
    for (let next = alloc.nextExpiry(); next !== undefined;) {
      if (next > target) break;
      now = next;
      step = `expire at ${now}`;
      check(apply(alloc.expire()), true);
      next = alloc.nextExpiry();
    }
    now = target;
    step = `expire at ${now}`;
    check(apply(alloc.expire()), true);
  };

  for (const op of trace) {
    step = `${JSON.stringify(op)} at ${now}`;
    restoredOn = [];
    let grantedOn = new Set<string>();
    switch (op.op) {
      case "req": {
        const also = op.also && op.also.res !== op.res ? op.also : null;
        const parts = [{ resname: NAMES[op.res]!, amount: op.amount }];
        if (also) {
          parts.push({ resname: NAMES[also.res]!, amount: also.amount });
        }
        const a: Asked = {
          owner: `o${op.owner}`,
          cookie: `c${n++}`,
          parts,
          lease: op.lease,
        };
        asked.push(a);
        birth(a);
        grantedOn = apply(alloc.request(a.owner, {
          cookie: a.cookie,
          resname: parts[0]!.resname,
          amount: parts[0]!.amount,
          lease: a.lease,
          priority: op.priority,
          ...(also && { resources: parts }),
        }));
        break;
      }
      case "release": {
        if (asked.length === 0) break;
        const { owner, cookie } = pick(op.pick);
        const life = live.get(key(owner, cookie));
        const { found, outcomes } = alloc.release(owner, cookie);
        assert.equal(
          found,
          life ? (life.state === "leased" ? "lease" : "queued") : null,
          `${step}: found`,
        );
        if (life?.state === "queued") decide(life, "withdraw");
        else if (life) end(life, "release");
        grantedOn = apply(outcomes);
        break;
      }
      case "advance":
        expireUntil(now + op.seconds * 1000);
        continue;
      case "reclaim":
        if (!reclaiming) {
          alloc.beginReclaim();
          reclaiming = true;
          seen.add("reclaim grace begun");
          break;
        }
        reclaiming = false;
        grantedOn = apply(alloc.endReclaim());
        if (grantedOn.size > 0) seen.add("reclaim grace ended with grants");
        break;
      case "drop": {
        const owner = `o${op.owner}`;
        for (const life of [...live.values()]) {
          if (life.owner !== owner) continue;
          if (life.state === "queued") decide(life, "dropped");
          else end(life, "dropped");
        }
        grantedOn = apply(alloc.dropOwner(owner));
        break;
      }
      case "restore": {
        let a: Asked;
        if (op.pick === null || asked.length === 0) {
          a = {
            owner: `o${op.owner}`,
            cookie: `c${n++}`,
            parts: [{ resname: NAMES[op.res]!, amount: op.amount }],
            lease: op.lease,
          };
          asked.push(a);
        } else {
          a = pick(op.pick);
        }
        const before = live.get(key(a.owner, a.cookie));
        seen.add(
          `restore ${op.kind} of a ${
            before?.state ?? (op.pick === null ? "never-seen" : "ended")
          } cookie`,
        );
        const outs = alloc.restore(a.owner, {
          cookie: a.cookie,
          resname: a.parts[0]!.resname,
          amount: a.parts[0]!.amount,
          lease: op.kind === "lease" ? op.lease : a.lease,
          ...(a.parts.length > 1 && { resources: a.parts }),
        }, op.kind);
        if (before?.state === "leased") {
          assert.deepEqual(
            outs.map((o) => o.type === "grant" && o.restored),
            [true],
            `${step}: a known lease is re-sent, once`,
          );
        } else if (before && op.kind === "queued") {
          assert.deepEqual(outs, [], `${step}: a known queued request stays`);
        } else if (op.kind === "lease") {
          // One answer; a refused restore of a queued request may also
          // let others start.
          assert.equal(outs[0]?.cookie, a.cookie, `${step}: one answer`);
          assert.ok(
            outs.length === 1 || outs[0]!.type === "refuse",
            `${step}: only a refusal frees anything`,
          );
        }
        if (!before) birth(a);
        grantedOn = apply(outs);
        break;
      }
      case "budget": {
        const name = NAMES[op.res]!;
        const previous = budgets.get(name);
        const lowered = previous !== undefined && op.budget < previous;
        const allocated = alloc.statusOf(name)?.allocated ?? 0;
        if (previous === undefined) seen.add("budget adds a resource");
        else if (!lowered) seen.add("budget raised or kept");
        else if (op.budget === 0) seen.add("budget lowered to 0");
        if (lowered && op.budget < allocated) {
          seen.add("budget lowered below allocated");
        }
        budgets.set(name, op.budget);
        if (lowered) excused.add(name);
        const result = alloc.setBudget(name, op.budget);
        assert.equal(result.previous, previous, `${step}: previous`);
        grantedOn = apply(result.outcomes);
        for (const o of result.outcomes) {
          if (o.type === "refuse") {
            const amount = lives.find((l) =>
              l.owner === o.owner && l.cookie === o.cookie
            )!.parts.find((p) => p.resname === name)?.amount;
            assert.ok(
              amount !== undefined && amount > op.budget,
              `${step}: refused only what can never fit`,
            );
          }
        }
        break;
      }
      case "remove": {
        const name = NAMES[op.res]!;
        const busy = [...live.values()].some((l) =>
          l.state === "leased" && l.parts.some((p) => p.resname === name)
        );
        const { result, outcomes } = alloc.removeResource(name);
        const expected = !budgets.has(name)
          ? "unknown"
          : busy
          ? "busy"
          : "removed";
        assert.equal(result, expected, `${step}: remove`);
        seen.add(`remove: ${result}`);
        if (result === "removed") {
          budgets.delete(name);
          excused.delete(name);
          overBudget.delete(name);
        }
        grantedOn = apply(outcomes);
        for (const l of live.values()) {
          assert.ok(
            result !== "removed" || l.parts.every((p) => p.resname !== name),
            `${step}: ${l.cookie} still waits for a removed resource`,
          );
        }
        break;
      }
      case "force": {
        if (asked.length === 0) break;
        const { owner, cookie } = pick(op.pick);
        const life = live.get(key(owner, cookie));
        const { lease, outcomes } = alloc.forceRelease(owner, cookie);
        if (life?.state === "leased") {
          assert.deepEqual(lease, {
            owner,
            cookie,
            id: life.id,
            resname: life.parts[0]!.resname,
            amount: life.parts[0]!.amount,
          });
          end(life, "force");
          seen.add("force-release of a lease");
        } else {
          assert.equal(lease, undefined, `${step}: nothing to force`);
          assert.deepEqual(outcomes, []);
        }
        grantedOn = apply(outcomes);
        break;
      }
    }
    check(grantedOn, false);
  }

  // Drain: with no new arrivals every lease ends and every queued request
  // starts (its amount fits each budget, or setBudget refused it).
  if (reclaiming) {
    reclaiming = false;
    step = "end of the reclaim grace";
    restoredOn = [];
    check(apply(alloc.endReclaim()), false);
  }
  for (let next = alloc.nextExpiry(); next !== undefined;) {
    expireUntil(next);
    next = alloc.nextExpiry();
  }
  for (const res of alloc.status()) {
    assert.equal(res.queue.length, 0, `${res.name}: queue drained`);
    assert.equal(res.allocated, 0, `${res.name}: every lease ended`);
  }
  assert.equal(live.size, 0, "nothing is left live");
  for (const l of lives) {
    assert.equal(l.decisions, 1, `${l.cookie} decided exactly once`);
    assert.equal(
      l.ends,
      l.decision === "grant" ? 1 : 0,
      `${l.cookie}: a grant ends exactly once, nothing else ends`,
    );
  }
}

const traces = fc.array(ops, { minLength: 1, maxLength: 100, size: "max" });

/** Every case the traces must reach, or the properties prove little. */
const CASES = [
  "restore lease of a leased cookie",
  "restore queued of a leased cookie",
  "restore lease of a queued cookie",
  "restore queued of a queued cookie",
  "restore lease of a ended cookie",
  "restore queued of a ended cookie",
  "restore lease of a never-seen cookie",
  "restore queued of a never-seen cookie",
  "budget adds a resource",
  "budget raised or kept",
  "budget lowered to 0",
  "budget lowered below allocated",
  "over budget after a lowering",
  "remove: busy",
  "remove: removed",
  "remove: unknown",
  "force-release of a lease",
  "new grant of one resource",
  "new grant of several resources",
  "restored grant of one resource",
  "restored grant of several resources",
  "restore refused: exceeds-budget",
  "restore refused: lease-too-long",
  "restore refused: restore-over-budget",
  "restore refused: the builder would exceed the budget",
  "reclaim grace begun",
  "reclaim grace ended with grants",
];

for (const policy of [fifo, backfill]) {
  Deno.test(`Allocator (${policy.name}): restores and operator actions lose no request and count none twice`, () => {
    const seen: Seen = new Set();
    fc.assert(fc.property(traces, (trace) => runTrace(policy, trace, seen)), {
      numRuns: 400,
    });
    assert.deepEqual(
      CASES.filter((c) => !seen.has(c)),
      [],
      "cases the traces never reached",
    );
  });
}

Deno.test("Allocator property: catches a policy that grants past the budget", () => {
  // Everything queued, fitting or not: the check must fail, so it can.
  const greedy: Policy = {
    name: "greedy",
    pick: (resource) => [...resource.queue()],
  };
  assert.throws(
    () =>
      fc.assert(fc.property(traces, (trace) => runTrace(greedy, trace)), {
        numRuns: 400,
        seed: 42,
      }),
    (err: Error) => {
      assert.match(String(err.cause), /over budget/);
      return true;
    },
  );
});
