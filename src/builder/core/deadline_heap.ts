/**
 * Many deadlines, without a timer: the builder ends each lease at its own
 * end, and a timer per grant (armed, then cleared at almost every release)
 * cost it about 5 % of its time under load.  Here a grant is a heap push, a
 * release is nothing (its entry goes stale and is dropped when it reaches
 * the top, or when stale entries outnumber the live ones), and whoever
 * holds the heap wakes once, for the earliest deadline.
 *
 * @module
 */

import { MinHeap } from "../../shared/min_heap.ts";

/** Stale entries tolerated beyond the live ones before compacting. */
const SLACK = 64;

/** Deadlines (monotonic ms) of many items, with lazy deletion. */
export class DeadlineHeap<T> {
  #heap = new MinHeap<T>();
  #isLive: (item: T, at: number) => boolean;
  /** How many entries were live at the last compaction. */
  #live = 0;

  /**
   * `isLive(item, at)`: whether `item`'s entry for deadline `at` still
   * stands.  An item that ended, or got a new deadline, answers false and
   * its entry is dropped.
   */
  constructor(isLive: (item: T, at: number) => boolean) {
    this.#isLive = isLive;
  }

  /** How many entries are kept, stale ones included (for tests). */
  get size(): number {
    return this.#heap.size;
  }

  /** Keeps `item` until `at`, unless `isLive(item, at)` is false by then. */
  add(at: number, item: T): void {
    this.#heap.push(at, item);
    if (this.#heap.size > 2 * this.#live + SLACK) this.#compact();
  }

  /** The earliest deadline kept, stale or not; Infinity when none is. */
  next(): number {
    return this.#heap.peekKey() ?? Infinity;
  }

  /**
   * Takes the live item whose deadline is earliest and at or before `now`,
   * dropping stale entries on the way; undefined when none is due.
   */
  popDue(now: number): T | undefined {
    const isLive = this.#isLive;
    for (;;) {
      const at = this.#heap.peekKey();
      if (at === undefined || at > now) return undefined;
      const item = this.#heap.pop()!;
      if (isLive(item, at)) return item;
    }
  }

  #compact(): void {
    const isLive = this.#isLive;
    this.#heap.retain((at, item) => isLive(item, at));
    this.#live = this.#heap.size;
  }
}
