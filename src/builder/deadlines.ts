/**
 * Many deadlines on one timer: a {@linkcode DeadlineHeap} (a grant is a
 * heap push, a release is nothing) and one timer armed for the earliest
 * deadline.
 *
 * @module
 */

import { DeadlineHeap } from "./core/deadline_heap.ts";
import { monotonic } from "../shared/clock.ts";

/** The longest delay `setTimeout` takes: longer ones fire at once. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/** Options for {@linkcode Deadlines}. */
export interface DeadlinesOptions<T> {
  /** Called for each item whose deadline passed and that is still live. */
  onDue: (item: T) => void;
  /**
   * Whether `item`'s entry for deadline `at` still stands.  An item that
   * ended, or got a new deadline, answers false and its entry is dropped.
   */
  isLive: (item: T, at: number) => boolean;
  /** Monotonic ms (default `performance.now`). */
  now?: () => number;
}

/** Deadlines (monotonic ms) of many items, one timer for all. */
export class Deadlines<T> {
  #heap: DeadlineHeap<T>;
  #opts: DeadlinesOptions<T>;
  #now: () => number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires (monotonic ms); Infinity when none is. */
  #armedAt = Infinity;

  constructor(options: DeadlinesOptions<T>) {
    this.#opts = options;
    this.#heap = new DeadlineHeap(options.isLive);
    this.#now = options.now ?? monotonic;
  }

  /** How many entries are kept, stale ones included (for tests). */
  get size(): number {
    return this.#heap.size;
  }

  /** Calls `onDue(item)` at `at` unless `isLive(item, at)` is false by then. */
  add(at: number, item: T): void {
    this.#heap.add(at, item);
    if (at < this.#armedAt) this.#arm();
  }

  /** Stops the timer; nothing is called after this. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = -Infinity;
  }

  #arm(): void {
    if (this.#armedAt === -Infinity) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const at = this.#heap.next();
    if (at === Infinity) return;
    const delay = Math.min(MAX_DELAY_MS, Math.max(0, at - this.#now()));
    this.#armedAt = this.#now() + delay;
    this.#timer = setTimeout(() => this.#fire(), delay);
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const onDue = this.#opts.onDue;
    const now = this.#now();
    for (;;) {
      const item = this.#heap.popDue(now);
      if (item === undefined) break;
      onDue(item);
      // onDue may have closed us.
      if (this.#armedAt === -Infinity) return;
    }
    this.#arm();
  }
}
