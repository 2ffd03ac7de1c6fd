/**
 * Many deadlines on one timer: the builder ends each lease at its own end,
 * and a timer per grant (armed, then cleared at almost every release) cost
 * it about 5 % of its time under load.  Here a grant is a heap push, a
 * release is nothing (its entry goes stale), and one timer is armed for the
 * earliest deadline.
 *
 * @module
 */

import { MinHeap } from "../shared/min_heap.ts";
import { monotonic } from "../shared/clock.ts";

/** The longest delay `setTimeout` takes: longer ones fire at once. */
const MAX_DELAY_MS = 2 ** 31 - 1;

/** Stale entries tolerated beyond the live ones before compacting. */
const SLACK = 64;

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
  #heap = new MinHeap<T>();
  #opts: DeadlinesOptions<T>;
  #now: () => number;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires (monotonic ms); Infinity when none is. */
  #armedAt = Infinity;
  /** How many entries were live at the last compaction. */
  #live = 0;

  constructor(options: DeadlinesOptions<T>) {
    this.#opts = options;
    this.#now = options.now ?? monotonic;
  }

  /** How many entries are kept, stale ones included (for tests). */
  get size(): number {
    return this.#heap.size;
  }

  /** Calls `onDue(item)` at `at` unless `isLive(item, at)` is false by then. */
  add(at: number, item: T): void {
    this.#heap.push(at, item);
    if (this.#heap.size > 2 * this.#live + SLACK) this.#compact();
    if (at < this.#armedAt) this.#arm();
  }

  /** Stops the timer; nothing is called after this. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = -Infinity;
  }

  #compact(): void {
    const isLive = this.#opts.isLive;
    this.#heap.retain((at, item) => isLive(item, at));
    this.#live = this.#heap.size;
  }

  #arm(): void {
    if (this.#armedAt === -Infinity) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const at = this.#heap.peekKey();
    if (at === undefined) return;
    const delay = Math.min(MAX_DELAY_MS, Math.max(0, at - this.#now()));
    this.#armedAt = this.#now() + delay;
    this.#timer = setTimeout(() => this.#fire(), delay);
  }

  #fire(): void {
    this.#timer = undefined;
    this.#armedAt = Infinity;
    const { isLive, onDue } = this.#opts;
    const now = this.#now();
    for (;;) {
      const at = this.#heap.peekKey();
      if (at === undefined || at > now) break;
      const item = this.#heap.pop()!;
      if (isLive(item, at)) onDue(item);
      // onDue may have closed us.
      if (this.#armedAt === -Infinity) return;
    }
    this.#arm();
  }
}
