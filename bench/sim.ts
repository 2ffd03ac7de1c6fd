// deno-lint-ignore-file no-console -- a report: printing is its job
/**
 * The scheduling simulator (`deno task sim`): drives the pure allocator with
 * a seeded trace on a virtual clock, once per policy, and prints utilization,
 * waits per request-size class and the largest head delay versus fifo.
 * Nothing sleeps: a thousand simulated hours take seconds.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { Allocator, type Outcome } from "../src/allocator/allocator.ts";
import { MinHeap } from "../src/shared/min_heap.ts";
import { backfill, fifo, type Policy } from "../src/allocator/policy.ts";
import { numberFlag, runBench } from "./_main.ts";

/** What to simulate. */
export interface SimOptions {
  seed: number;
  /** Simulated hours of arrivals. */
  hours: number;
  budget: number;
  /** Offered load: demanded amount-time over budget-time (default 0.95). */
  load?: number;
}

/** One request of the trace. */
export interface TraceRequest {
  /** Arrival, ms. */
  at: number;
  amount: number;
  /** Declared lease, s. */
  lease: number;
  /** How long the holder really keeps it, ms (at most the lease). */
  hold: number;
}

/** A small, fast, seedable PRNG (mulberry32): the same seed, the same trace. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The size classes, with how often each is asked for: most requests are
 * small, a few want most of the budget, as when a handful of suites open
 * many connections at once.
 */
export function sizeClasses(
  budget: number,
): { name: string; min: number; max: number; weight: number }[] {
  const bounds = [
    [1, 0.5],
    [Math.floor(budget / 8), 0.3],
    [Math.floor(budget / 2), 0.15],
    [budget, 0.05],
  ] as const;
  const classes = [];
  let prev = 0;
  for (const [max, weight] of bounds) {
    if (max <= prev) continue;
    const min = prev + 1;
    classes.push({
      name: min === max ? `${max}` : `${min}-${max}`,
      min,
      max,
      weight,
    });
    prev = max;
  }
  return classes;
}

/** A seeded trace: Poisson arrivals, skewed amounts, log-normal leases. */
export function makeTrace(options: SimOptions): TraceRequest[] {
  const { budget } = options;
  const classes = sizeClasses(budget);
  const total = classes.reduce((a, c) => a + c.weight, 0);
  const draw = (rnd: () => number) => {
    let u = rnd() * total;
    let i = 0;
    while (i < classes.length - 1 && (u -= classes[i]!.weight) > 0) i++;
    const { min, max } = classes[i]!;
    const amount = min + Math.floor(rnd() * (max - min + 1));
    // Declared leases: log-normal, median 60 s, from 1 s to an hour.
    const z = Math.sqrt(-2 * Math.log(1 - rnd())) *
      Math.cos(2 * Math.PI * rnd());
    const lease = Math.min(3600, Math.max(1, Math.round(60 * Math.exp(z))));
    // Most holders release early (the test finished); some run to the end.
    const hold = rnd() < 0.3
      ? lease * 1000
      : Math.max(1, Math.round(lease * 1000 * (0.2 + 0.8 * rnd())));
    return { amount, lease, hold };
  };
  // Calibrate the arrival rate on a separate stream, so the offered load
  // is what was asked for whatever the budget.
  const probe = prng(options.seed ^ 0x5eed);
  let demand = 0;
  for (let i = 0; i < 10_000; i++) {
    const d = draw(probe);
    demand += d.amount * d.hold;
  }
  const rate = (options.load ?? 0.95) * budget / (demand / 10_000); // per ms
  const rnd = prng(options.seed);
  const end = options.hours * 3_600_000;
  const trace: TraceRequest[] = [];
  for (let t = 0;;) {
    t += Math.max(1, Math.round(-Math.log(1 - rnd()) / rate));
    if (t >= end) break;
    trace.push({ at: t, ...draw(rnd) });
  }
  return trace;
}

/** What one policy did with the trace. */
export interface PolicyResult {
  policy: string;
  requests: number;
  utilization: number;
  /** Per size class: waits in ms. */
  waits: {
    name: string;
    count: number;
    mean: number;
    p95: number;
    max: number;
  }[];
  /** Largest start of a head after its fifo start (declared ends), ms. */
  maxHeadDelay: number;
  /** Simulated span, ms. */
  span: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]!;
}

/** Runs the trace through the allocator under one policy. */
export function simulate(
  trace: TraceRequest[],
  budget: number,
  policy: Policy,
): PolicyResult {
  let now = 0;
  const alloc = new Allocator([["r", budget]], {
    now: () => now,
    policy,
    maxLease: 3600,
  });
  const classes = sizeClasses(budget);
  const classOf = (amount: number) => classes.findIndex((c) => amount <= c.max);
  const waits: number[][] = classes.map(() => []);
  const byCookie = new Map<string, TraceRequest>();
  const releases = new MinHeap<string>();
  const promised = new Map<string, number>();
  let allocated = 0;
  let area = 0;
  let last = 0;
  let maxHeadDelay = 0;
  const advance = (t: number) => {
    area += allocated * (t - last);
    last = t;
    now = t;
  };
  const apply = (outs: Outcome[]) => {
    for (const o of outs) {
      if (o.type === "grant") {
        allocated += o.amount;
        const req = byCookie.get(o.cookie)!;
        waits[classOf(o.amount)]!.push(o.waited);
        const p = promised.get(o.cookie);
        if (p !== undefined) {
          maxHeadDelay = Math.max(maxHeadDelay, now - p);
          promised.delete(o.cookie);
        }
        if (req.hold < req.lease * 1000) {
          releases.push(now + req.hold, o.cookie);
        }
      } else if (o.type === "expire") {
        allocated -= o.amount;
        byCookie.delete(o.cookie);
      }
    }
    const head = alloc.head("r");
    if (head) {
      const p = promised.get(head.cookie);
      if (p === undefined || head.reservedAt < p) {
        promised.set(head.cookie, head.reservedAt);
      }
    }
  };
  let i = 0;
  for (;;) {
    const arrival = trace[i]?.at ?? Infinity;
    const release = releases.peekKey() ?? Infinity;
    const expiry = alloc.nextExpiry() ?? Infinity;
    const t = Math.min(arrival, release, expiry);
    if (t === Infinity) break;
    advance(t);
    if (expiry === t) apply(alloc.expire());
    while (releases.peekKey() === t) {
      const cookie = releases.pop()!;
      const r = byCookie.get(cookie);
      if (!r) continue;
      const { found, outcomes } = alloc.release("h", cookie);
      if (found === "lease") {
        allocated -= r.amount;
        byCookie.delete(cookie);
      }
      apply(outcomes);
    }
    while (trace[i]?.at === t) {
      const req = trace[i]!;
      const cookie = `c${i++}`;
      byCookie.set(cookie, req);
      apply(
        alloc.request("h", {
          cookie,
          resname: "r",
          amount: req.amount,
          lease: req.lease,
        }),
      );
    }
  }
  return {
    policy: policy.name,
    requests: trace.length,
    utilization: last > 0 ? area / (budget * last) : 0,
    waits: classes.map((c, k) => {
      const w = waits[k]!.sort((a, b) => a - b);
      return {
        name: c.name,
        count: w.length,
        mean: w.length ? w.reduce((a, b) => a + b, 0) / w.length : 0,
        p95: percentile(w, 0.95),
        max: w.at(-1) ?? 0,
      };
    }),
    maxHeadDelay,
    span: last,
  };
}

const s = (ms: number) => (ms / 1000).toFixed(1);

/** The report, as a markdown table: the same options print the same text. */
export function report(options: SimOptions, results: PolicyResult[]): string {
  const lines = [
    `Simulated ${options.hours} h, seed ${options.seed}, budget ${options.budget}, offered load ${
      options.load ?? 0.95
    }: ${results[0]?.requests ?? 0} requests`,
    "",
    "| policy | utilization | size | requests | mean wait s | p95 wait s | max wait s | max head delay vs fifo s |",
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const r of results) {
    r.waits.forEach((w, k) => {
      lines.push(
        `| ${k === 0 ? r.policy : ""} | ${
          k === 0 ? (100 * r.utilization).toFixed(1) + " %" : ""
        } | ${w.name} | ${w.count} | ${s(w.mean)} | ${s(w.p95)} | ${
          s(w.max)
        } | ${k === 0 ? s(r.maxHeadDelay) : ""} |`,
      );
    });
  }
  return lines.join("\n") + "\n";
}

/** Simulates every policy on the same trace and returns the report. */
export function runSim(options: SimOptions): string {
  const trace = makeTrace(options);
  return report(
    options,
    [fifo, backfill].map((p) => simulate(trace, options.budget, p)),
  );
}

/**
 * `deno task sim [--seed N] [--hours H] [--budget B] [--load L[,L...]]`:
 * by default a load fifo sustains (waits compare) and one it cannot
 * (utilization compares).
 */
export function main(args: string[]): void {
  const { values } = parseArgs({
    args,
    options: {
      seed: { type: "string", default: "1" },
      hours: { type: "string", default: "1000" },
      budget: { type: "string", default: "32" },
      load: { type: "string", default: "0.6,0.95" },
    },
  });
  const seed = numberFlag("--seed", values.seed, {
    fallback: 1,
    min: 0,
    max: 2 ** 31 - 1,
  });
  const hours = numberFlag("--hours", values.hours, {
    fallback: 1000,
    min: 0.01,
    max: 1e6,
    fraction: true,
  });
  const budget = numberFlag("--budget", values.budget, {
    fallback: 32,
    min: 1,
    max: 1e6,
  });
  const loads = values.load.split(",").map((l) =>
    numberFlag("--load", l, { fallback: 0, min: 0.01, max: 10, fraction: true })
  );
  for (const load of loads) {
    console.log(runSim({ seed, hours, budget, load }));
  }
}

if (import.meta.main) {
  await runBench(
    main,
    "usage: deno task sim [--seed N] [--hours H] [--budget B] [--load L1,L2]",
  );
}
