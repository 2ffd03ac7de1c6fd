/**
 * The simulation's one event queue: callbacks at virtual times, in time
 * order and, at the same time, in the order they were scheduled, so that a
 * run is the same whenever it is replayed.
 *
 * @module
 */

/** A scheduled callback; `cancelled` ones are skipped. */
export interface Scheduled {
  at: number;
  seq: number;
  cancelled: boolean;
  run: () => void;
}

function before(a: Scheduled, b: Scheduled): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Virtual time and what is due when. */
export class Scheduler {
  /** Virtual milliseconds since the run began. */
  now = 0;
  /** Events run so far: a total order of everything that happens. */
  step = 0;
  #heap: Scheduled[] = [];
  #seq = 0;

  /** Runs `run` at virtual time `at` (not before now). */
  at(at: number, run: () => void): Scheduled {
    const item: Scheduled = {
      at: Math.max(at, this.now),
      seq: this.#seq++,
      cancelled: false,
      run,
    };
    const heap = this.#heap;
    heap.push(item);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
    return item;
  }

  /** Runs `run` `ms` from now. */
  after(ms: number, run: () => void): Scheduled {
    return this.at(this.now + ms, run);
  }

  #pop(): Scheduled {
    const heap = this.#heap;
    const top = heap[0]!;
    const last = heap.pop()!;
    if (heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < heap.length && before(heap[l]!, heap[m]!)) m = l;
        if (r < heap.length && before(heap[r]!, heap[m]!)) m = r;
        if (m === i) break;
        [heap[i], heap[m]] = [heap[m]!, heap[i]!];
        i = m;
      }
    }
    return top;
  }

  /** Runs events until none is due by `until`; returns how many ran. */
  runUntil(until: number): number {
    let ran = 0;
    while (this.#heap.length > 0 && this.#heap[0]!.at <= until) {
      const item = this.#pop();
      if (item.cancelled) continue;
      this.now = item.at;
      this.step++;
      ran++;
      item.run();
    }
    this.now = Math.max(this.now, until);
    return ran;
  }
}
