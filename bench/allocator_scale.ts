/**
 * Benchmark 3, allocator scale in-process: 100,000 queued requests over 100
 * resources, then 1,000,000 operations (request, withdraw, release with the
 * grants it causes), for each policy: µs per operation and heap bytes per
 * queued request.  Needs `--v8-flags=--expose-gc` (`deno task bench` passes it).
 *
 * @module
 */

import { parseArgs } from "node:util";
import process from "node:process";
import { Allocator } from "../src/allocator/allocator.ts";
import {
  backfill,
  createBackfill,
  fifo,
  type Policy,
} from "../src/allocator/policy.ts";
import { prng } from "./sim.ts";
import { publish } from "./_report.ts";
import { BenchUsageError, runBench } from "./_main.ts";

const gc = (globalThis as { gc?: () => void }).gc;

function heapUsed(): number {
  gc?.();
  gc?.();
  return Deno.memoryUsage().heapUsed;
}

interface Live {
  cookie: string;
  res: number;
  leased: boolean;
  /** Index in its pool. */
  at: number;
}

/** Swap-remove lists, so picking a random live request is O(1). */
class Pool {
  items: Live[] = [];
  add(live: Live): void {
    live.at = this.items.length;
    this.items.push(live);
  }
  remove(live: Live): void {
    const last = this.items.pop()!;
    if (last !== live) {
      this.items[live.at] = last;
      last.at = live.at;
    }
  }
}

/** Runs the workload under one policy. */
export function run(
  policy: Policy,
  options: { resources: number; queued: number; ops: number; budget: number },
): {
  usPerOp: number;
  cpuUsPerOp: number;
  bytesPerQueued: number;
  allocatorBytesPerRequest: number;
  grants: number;
  queuedAtEnd: number;
} {
  const now = 1_000_000;
  const names = Array.from({ length: options.resources }, (_, i) => `r${i}`);
  const heapBefore = heapUsed();
  // `let`, so that dropping it at the end measures its own share of the heap.
  let alloc: Allocator | undefined = new Allocator(
    names.map((n) => [n, options.budget] as [string, number]),
    { now: () => now, policy },
  );
  const rnd = prng(42);
  const lives = new Map<string, Live>();
  const queued = names.map(() => new Pool());
  const leased = names.map(() => new Pool());
  let seq = 0;
  let grants = 0;
  let inQueue = 0;
  const queuedTotal = () => inQueue;
  const request = (r: number) => {
    const cookie = `c${seq++}`;
    const live = { cookie, res: r, leased: false, at: 0 };
    lives.set(cookie, live);
    queued[r]!.add(live);
    inQueue++;
    handle(
      alloc!.request("b", {
        cookie,
        resname: names[r]!,
        amount: 1 + Math.floor(rnd() * 4),
        lease: 3600,
      }),
    );
  };
  const handle = (outs: ReturnType<Allocator["request"]>) => {
    for (const o of outs) {
      if (o.type !== "grant") continue;
      grants++;
      const live = lives.get(o.cookie)!;
      queued[live.res]!.remove(live);
      inQueue--;
      live.leased = true;
      leased[live.res]!.add(live);
    }
  };
  const drop = (live: Live) => {
    (live.leased ? leased : queued)[live.res]!.remove(live);
    if (!live.leased) inQueue--;
    lives.delete(live.cookie);
    handle(alloc!.release("b", live.cookie).outcomes);
  };
  // Fill every budget, then queue the rest.
  while (inQueue < options.queued) request(seq % options.resources);
  const total = inQueue;
  const heapFull = heapUsed();
  // Bookkeeping in this harness (maps, pools) is in this figure too.  What
  // the allocator itself holds is measured at the end, by dropping it.
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < options.ops; i++) {
    const r = Math.floor(rnd() * options.resources);
    const u = rnd();
    const q = queued[r]!.items, l = leased[r]!.items;
    // Hold the queue at its size: a request for each request that left.
    if (queuedTotal() < options.queued) request(r);
    else if (u < 0.5 && q.length > 0) drop(q[Math.floor(rnd() * q.length)]!);
    else if (l.length > 0) drop(l[Math.floor(rnd() * l.length)]!);
    else request(r);
  }
  const elapsed = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const queuedAtEnd = queued.reduce((s, q) => s + q.items.length, 0);
  // Heap per queued request: everything the allocator and this harness
  // keep for it (the harness's share is a map entry and a pool slot).
  const bytesPerQueued = (heapFull - heapBefore) / total;
  const heapEnd = heapUsed();
  alloc = undefined;
  const allocatorBytesPerRequest = (heapEnd - heapUsed()) / lives.size;
  return {
    usPerOp: elapsed * 1000 / options.ops,
    cpuUsPerOp: (cpu.user + cpu.system) / options.ops,
    bytesPerQueued,
    allocatorBytesPerRequest,
    grants,
    queuedAtEnd,
  };
}

/** `deno run --v8-flags=--expose-gc bench/allocator_scale.ts [--quick]` */
export async function main(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { quick: { type: "boolean" } },
  });
  const options = {
    resources: 100,
    queued: values.quick ? 10_000 : 100_000,
    ops: values.quick ? 100_000 : 1_000_000,
    budget: 32,
  };
  if (!gc) {
    // Without it, the heap figures count garbage: 200 to 700 bytes from run
    // to run where the real figure is under 200.
    throw new BenchUsageError(
      "cannot measure the heap: run with --v8-flags=--expose-gc (deno task bench does)",
    );
  }
  const rows = [];
  for (
    const policy of [
      fifo,
      backfill,
      { ...createBackfill({ lookahead: 32 }), name: "backfill, lookahead 32" },
    ]
  ) {
    const r = run(policy, options);
    rows.push({
      label: policy.name,
      values: [
        r.cpuUsPerOp,
        r.usPerOp,
        r.bytesPerQueued,
        r.allocatorBytesPerRequest,
        r.grants,
        r.queuedAtEnd,
      ],
    });
  }
  await publish({
    name: "allocator_scale",
    title:
      `Allocator scale: ${options.queued} queued over ${options.resources} resources, ${options.ops} ops`,
    columns: [
      "CPU µs/op",
      "wall µs/op",
      "heap bytes per queued request",
      "allocator bytes per live request after the ops",
      "grants",
      "queued at end",
    ],
    rows,
    notes: [
      "CPU time, not wall time, is the figure: the machine is shared. Targets: < 5 µs/op, < 1024 heap bytes per queued request, measured after two full GCs (--expose-gc) and including this harness's bookkeeping; the last column is what dropping the allocator frees after the ops, per live request: it includes the released leases still waiting in the expiry heap (lazy deletion; the clock does not move here), at most as many as the live leases plus 64, since the heap is compacted beyond that. Ops: a request whenever the queue is below its size, else a withdrawal or a release (with the grants it causes), half each; amounts 1–4 of 32.",
    ],
  });
}

if (import.meta.main) {
  await runBench(
    main,
    "usage: deno run -A -c bench/deno.json --v8-flags=--expose-gc bench/allocator_scale.ts [--quick]",
  );
}
