/**
 * What the sans-I/O cores (`src/server/core/`, `src/builder/core/`) share
 * with their shells and with the simulator (`src/chaos/`): the clock
 * reading that comes with every event, and the log and wake-up actions.
 *
 * A core takes events (a message, a connection opened or closed, a timer
 * due, a file write done) each with a {@linkcode Tick}, and returns the
 * actions they caused; it reads no clock, arms no timer and opens nothing.
 * The shell carries the actions out; the simulator runs many cores in one
 * process on virtual clocks.
 *
 * @module
 */

import type { Fields, Level } from "./log.ts";

/** A process's clocks, read once per event by the shell (or simulator). */
export interface Tick {
  /** Monotonic milliseconds: every duration and deadline uses this. */
  readonly mono: number;
  /** Unix epoch milliseconds: for display only (it may step). */
  readonly wall: number;
}

/** Write a log line (the shell's logger does it). */
export interface LogAction {
  type: "log";
  level: Level;
  msg: string;
  fields: Fields;
}

/**
 * Call the core's `wake()` at monotonic time `at` or soon after: the
 * earliest of its deadlines.  It replaces any earlier wake-up asked for; a
 * wake-up that finds nothing due is harmless.
 */
export interface WakeAction {
  type: "wake";
  at: number;
}

/**
 * Deliberately wrong behaviours the simulator switches on, one at a time,
 * to show that it finds them (`deno task chaos --mutant NAME`).  Never set
 * outside the simulator and its tests.
 */
export type Mutant =
  /** The allocator admits a restored lease without the budget check. */
  | "restore-unbounded"
  /** The builder measures its fence on the wall clock. */
  | "wall-clock-fence"
  /** A yield or release is matched by its cookie alone, not its grant's id. */
  | "stale-yield"
  /** A server that crashed grants at once: no reclaim grace. */
  | "no-reclaim-grace"
  /** The builder fences only after the server's builder grace. */
  | "fence-late";

/** Every {@linkcode Mutant}. */
export const MUTANTS: readonly Mutant[] = [
  "restore-unbounded",
  "wall-clock-fence",
  "stale-yield",
  "no-reclaim-grace",
  "fence-late",
];
