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
