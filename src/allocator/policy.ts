/**
 * Scheduling policies: which queued requests of one resource to grant now.
 * Pure functions of the resource's state and the time; the allocator applies
 * what they pick.
 *
 * @module
 */

/** A queued request as a policy sees it. */
export interface QueuedView {
  readonly amount: number;
  /** Declared lease length in milliseconds. */
  readonly leaseMs: number;
  readonly enqueuedAt: number;
}

/** A live lease as a policy sees it. */
export interface LeaseView {
  readonly amount: number;
  readonly expires: number;
}

/** One resource's state, as a policy sees it. */
export interface ResourceView<Q extends QueuedView = QueuedView> {
  readonly budget: number;
  readonly allocated: number;
  /** Queued requests, head first. */
  queue(): Iterable<Q>;
  /** The head of the queue: with {@linkcode next}, a walk without iterators. */
  readonly head: Q | null;
  /** The request queued after `q`. */
  next(q: Q): Q | null;
  /** Live leases, in no particular order. */
  leases(): Iterable<LeaseView>;
}

/** Picks which queued requests to grant now, in grant order. */
export interface Policy {
  readonly name: string;
  pick<Q extends QueuedView>(resource: ResourceView<Q>, now: number): Q[];
}

/**
 * Sai's rule: grant from the head while the head fits; a later request never
 * overtakes a waiting head, so no request starves.
 */
export const fifo: Policy = {
  name: "fifo",
  pick(resource) {
    let free = resource.budget - resource.allocated;
    const picked = [];
    for (const q of resource.queue()) {
      if (q.amount > free) break;
      free -= q.amount;
      picked.push(q);
    }
    return picked;
  },
};

/** Options for {@linkcode createBackfill}. */
export interface BackfillOptions {
  /**
   * How many queued requests behind the head are considered for
   * backfilling on each pass (default 256).  Bounds the cost of a pass on
   * long queues, as HPC schedulers do (Slurm's `bf_max_job_test`); requests
   * further back simply wait their turn.
   */
  lookahead?: number;
}

/**
 * Where the head of a queue is guaranteed to start, from declared lease ends:
 * the earliest time `at` when `amount` is certain to be free, and how much
 * more than `amount` is free then (`spare`, capacity the head will not need).
 * `extra` are leases not yet in `resource.leases()` (granted in this pass).
 */
export function reservation(
  resource: Pick<ResourceView, "budget" | "allocated" | "leases">,
  amount: number,
  now: number,
  extra: readonly LeaseView[] = [],
): { at: number; spare: number } {
  let free = resource.budget - resource.allocated;
  for (const l of extra) free -= l.amount;
  if (free >= amount) return { at: now, spare: free - amount };
  // Insertion sort by end into plain number arrays: leases per resource are
  // few (at most the budget) and this runs on every blocked pass.
  const ends: number[] = [];
  const amounts: number[] = [];
  const add = (l: LeaseView) => {
    let i = ends.length;
    while (i > 0 && ends[i - 1]! > l.expires) {
      ends[i] = ends[i - 1]!;
      amounts[i] = amounts[i - 1]!;
      i--;
    }
    ends[i] = l.expires;
    amounts[i] = l.amount;
  };
  for (const l of resource.leases()) add(l);
  for (const l of extra) add(l);
  let at = now;
  for (let i = 0; i < ends.length && free < amount;) {
    // Every lease ending at the same instant frees at once.
    at = Math.max(now, ends[i]!);
    while (i < ends.length && ends[i]! <= at) free += amounts[i++]!;
  }
  return { at, spare: free - amount };
}

/**
 * Creates the conservative backfilling policy (EASY backfilling in HPC
 * terms): the head is granted as under {@linkcode fifo}; if it must wait, it
 * holds a reservation at the earliest time its amount is certain to be free,
 * and a later request is granted now only if it fits in what is free now and
 * either ends by that time or uses capacity the head will not need then.
 * So the head never starts later than under fifo, given that leases end at
 * their declared expiry at the latest.
 */
export function createBackfill(options: BackfillOptions = {}): Policy {
  const lookahead = options.lookahead ?? 256;
  return {
    name: "backfill",
    pick<Q extends QueuedView>(resource: ResourceView<Q>, now: number): Q[] {
      let free = resource.budget - resource.allocated;
      const picked: Q[] = [];
      let head = resource.head;
      for (; head !== null && head.amount <= free; head = resource.next(head)) {
        free -= head.amount;
        picked.push(head);
      }
      if (head === null || free === 0) return picked;
      // The reservation counts the leases granted in this very pass.
      const granted = picked.map((q) => ({
        amount: q.amount,
        expires: now + q.leaseMs,
      }));
      let shadow: { at: number; spare: number } | undefined;
      let seen = 0;
      for (
        let q = resource.next(head);
        q !== null && free > 0 && ++seen <= lookahead;
        q = resource.next(q)
      ) {
        if (q.amount > free) continue;
        shadow ??= reservation(resource, head.amount, now, granted);
        if (now + q.leaseMs <= shadow.at) {
          free -= q.amount;
          picked.push(q);
        } else if (q.amount <= shadow.spare) {
          free -= q.amount;
          shadow.spare -= q.amount;
          picked.push(q);
        }
      }
      return picked;
    },
  };
}

/** {@linkcode createBackfill} with its defaults. */
export const backfill: Policy = createBackfill();

/** The policies by name, for `--policy`. */
export const POLICIES: ReadonlyMap<string, Policy> = new Map([
  ["fifo", fifo],
  ["backfill", backfill],
]);
