/**
 * The server's counters since start and how long granted requests waited:
 * what `/api/status` and `/metrics` report, kept by the core.
 *
 * @module
 */

import type { RefusalReason } from "../../allocator/allocator.ts";

/** Counters since start, for `/api/status` and metrics. */
export interface ServerStats {
  grants: number;
  refusals: Partial<Record<RefusalReason, number>>;
  expiries: number;
  releases: number;
  withdrawals: number;
  /** Leases ended by an operator (also counted in `releases`). */
  forcedReleases: number;
  /**
   * Leases given back because the process they were held for was gone (a
   * cancelled CI job, a killed ctest); also counted in `releases`.
   */
  ownerGone: number;
  /** Leases newly admitted by a builder's restore after a reconnect. */
  restores: number;
  /**
   * Leases ended because their builder was gone past the builder grace,
   * or did not re-send them when it came back.  With these,
   * `grants + restores − releases − expiries − drops` is the number of
   * live leases.
   */
  drops: number;
}

/** Counters at start: all zero. */
export function zeroStats(): ServerStats {
  return {
    grants: 0,
    refusals: {},
    expiries: 0,
    releases: 0,
    withdrawals: 0,
    forcedReleases: 0,
    ownerGone: 0,
    restores: 0,
    drops: 0,
  };
}

/** Upper bounds of the wait histogram, in seconds. */
export const WAIT_BUCKETS = [
  0.01,
  0.1,
  0.5,
  1,
  5,
  10,
  30,
  60,
  300,
  900,
  3600,
] as const;

/**
 * How long granted requests waited in the queue, over all resources: one
 * series keeps the exposition simple for every parser (per-resource waits
 * can be told apart in the logs, which carry `waited_ms` per grant).
 */
export class WaitHistogram {
  /** Counts per bucket in {@linkcode WAIT_BUCKETS}, not cumulative. */
  #counts: number[] = WAIT_BUCKETS.map(() => 0);
  sum = 0;
  count = 0;

  /** Records one grant that waited `seconds`. */
  observe(seconds: number): void {
    const i = WAIT_BUCKETS.findIndex((le) => seconds <= le);
    if (i >= 0) this.#counts[i]!++;
    this.sum += seconds;
    this.count++;
  }

  /** Cumulative counts for each bound in {@linkcode WAIT_BUCKETS}. */
  cumulative(): number[] {
    let total = 0;
    return this.#counts.map((n) => total += n);
  }
}
