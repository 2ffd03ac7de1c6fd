/**
 * Timers for delays that may exceed what `setTimeout` takes (2³¹−1 ms,
 * about 24.8 days; a longer delay fires at once with a warning): leases
 * may be up to 2³²−1 s.
 *
 * @module
 */

/** The longest delay `setTimeout` honours; a longer one fires at once. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The timer functions {@linkcode afterSeconds} uses: the global ones, or
 * fakes in tests.  A timer's id is only ever handed back to `clearTimeout`.
 */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
}

const REAL_TIMERS: Timers = { setTimeout, clearTimeout };

/**
 * Calls `fn` after `seconds`, which may be longer than `setTimeout` allows
 * (leases may be up to 2³²−1 s).  Returns a function that cancels it.
 */
export function afterSeconds(
  seconds: number,
  fn: () => void,
  options: { timers?: Timers } = {},
): () => void {
  const timers = options.timers ?? REAL_TIMERS;
  let left = seconds * 1000;
  let timer: unknown;
  const step = () => {
    if (left <= MAX_TIMER_MS) {
      timer = timers.setTimeout(fn, left);
    } else {
      left -= MAX_TIMER_MS;
      timer = timers.setTimeout(step, MAX_TIMER_MS);
    }
  };
  step();
  return () => timers.clearTimeout(timer);
}
