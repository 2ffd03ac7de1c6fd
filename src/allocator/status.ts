/**
 * Status snapshots of a resource: its leases, its queue and each queued
 * request's estimated start.
 *
 * @module
 */

import { MinHeap } from "../shared/min_heap.ts";
import type { Resource } from "./_resource.ts";
import type { ResourceStatus } from "./types.ts";

/** A snapshot of one resource at `now`. */
export function resourceStatus(res: Resource, now: number): ResourceStatus {
  const starts = estimateStarts(res, now);
  let position = 0;
  return {
    name: res.name,
    budget: res.budget,
    allocated: res.allocated,
    peak: res.peak,
    overBudgetGrants: res.overBudgetGrants,
    queuedRequests: res.queuedRequests,
    queuedAmount: res.queuedAmount,
    leases: [...res.leased].map((p) => ({
      owner: p.entry.owner,
      cookie: p.entry.cookie,
      id: p.entry.id,
      amount: p.amount,
      lease: p.entry.lease,
      grantedAt: p.entry.grantedAt,
      expires: p.expires,
    })),
    queue: [...res.queue()].map((p, i) => ({
      owner: p.entry.owner,
      cookie: p.entry.cookie,
      amount: p.amount,
      lease: p.entry.lease,
      enqueuedAt: p.enqueuedAt,
      position: ++position,
      estimatedStart: starts[i] ?? null,
    })),
  };
}

/**
 * Earliest start of each queued request in FIFO order, assuming every lease
 * runs its full declared length: a pessimistic but honest estimate.
 */
function estimateStarts(res: Resource, now: number): number[] {
  const heap = new MinHeap<number>();
  for (const e of res.leased) heap.push(e.expires, e.amount);
  let free = res.budget - res.allocated;
  let t = now;
  const starts: number[] = [];
  for (const q of res.queue()) {
    while (free < q.amount && heap.size > 0) {
      t = Math.max(t, heap.peekKey()!);
      free += heap.pop()!;
    }
    if (free < q.amount) break;
    starts.push(t);
    free -= q.amount;
    heap.push(t + q.leaseMs, q.amount);
  }
  return starts;
}
