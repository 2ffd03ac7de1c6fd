/**
 * Time, two ways.  Every duration, deadline and timeout is measured on the
 * monotonic clock ({@linkcode monotonic}): a step of the wall clock (NTP, an
 * operator's `date -s`, a restored VM) must never lengthen or shorten a
 * lease, a grace or a fence.  Wall-clock time is for display and logs only:
 * a monotonic time is turned into one ({@linkcode toWallClock}) at the
 * moment it is shown, so that it reads right against the wall clock then.
 *
 * The only module in `src/` that reads `Date.now()`; `clock_test.ts` checks.
 *
 * @module
 */

import type { Tick } from "./core_io.ts";

/** Milliseconds on the monotonic clock: only differences mean anything. */
export function monotonic(): number {
  return performance.now();
}

/** Unix epoch milliseconds now, for display and logs only. */
export function wallClock(): number {
  return Date.now();
}

/**
 * Turns times of a monotonic clock into Unix epoch milliseconds for display,
 * by the wall clock of this moment; `now` is that clock's reading now
 * (default: {@linkcode monotonic}'s).
 */
export function toWallClock(now: number = monotonic()): (at: number) => number {
  const offset = Date.now() - now;
  return (at) => Math.round(at + offset);
}

/**
 * What a shell hands a sans-I/O core with an event: both clocks, each read
 * when the core first looks at it and the same after that.  Most events of
 * the builder's hot path need neither, and `performance.now()` costs
 * about 0.15 us.
 */
export function tick(): Tick {
  return new LazyTick();
}

class LazyTick implements Tick {
  #mono: number | undefined;
  #wall: number | undefined;

  get mono(): number {
    return this.#mono ??= performance.now();
  }

  get wall(): number {
    return this.#wall ??= Date.now();
  }
}
