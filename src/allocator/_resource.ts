/**
 * The allocator's internal records: a request ({@linkcode Entry}), its part
 * in each resource's queue ({@linkcode Part}) and a resource with its queue
 * and leases ({@linkcode Resource}).  Private to the allocator folder.
 *
 * @module
 */

import type { ResourceView } from "./policy.ts";
import type { GrantOutcome, ResourceAmount } from "./types.ts";

/** A request: one part per resource it needs. */
export interface Entry {
  owner: string;
  cookie: string;
  parts: Part[];
  lease: number;
  leaseMs: number;
  enqueuedAt: number;
  priority: number;
  /** Global queue order: lower first, the same in every queue. */
  rank: number;
  state: "queued" | "leased";
  /** The grant's id, once leased: unique to one lease ("" while queued). */
  id: string;
  grantedAt: number;
  expires: number;
}

/** A request's share of one resource: a node of that resource's queue. */
export interface Part {
  entry: Entry;
  res: Resource;
  amount: number;
  leaseMs: number;
  enqueuedAt: number;
  expires: number;
  prev: Part | null;
  next: Part | null;
}

export class Resource implements ResourceView<Part> {
  name: string;
  budget: number;
  allocated = 0;
  peak = 0;
  overBudgetGrants = 0;
  queuedAmount = 0;
  queuedRequests = 0;
  head: Part | null = null;
  tail: Part | null = null;
  leased = new Set<Part>();
  /** What each owner holds here: a restore never takes one past the budget. */
  heldBy = new Map<string, number>();

  constructor(name: string, budget: number) {
    this.name = name;
    this.budget = budget;
  }

  queue(): Iterable<Part> {
    // A plain iterator, not a generator: policies walk queues on hot paths.
    let e = this.head;
    const it: IterableIterator<Part> = {
      next: () => {
        if (e === null) return { done: true, value: undefined };
        const value = e;
        e = e.next;
        return { done: false, value };
      },
      [Symbol.iterator]: () => it,
    };
    return it;
  }

  next(e: Part): Part | null {
    return e.next;
  }

  leases(): Iterable<Part> {
    return this.leased;
  }

  /** Inserts by rank; O(1) for the usual append at the tail. */
  insert(e: Part): void {
    let after = this.tail;
    while (after && after.entry.rank > e.entry.rank) after = after.prev;
    e.prev = after;
    e.next = after ? after.next : this.head;
    if (e.next) e.next.prev = e;
    else this.tail = e;
    if (after) after.next = e;
    else this.head = e;
    this.queuedAmount += e.amount;
    this.queuedRequests++;
  }

  unlink(e: Part): void {
    if (e.prev) e.prev.next = e.next;
    else this.head = e.next;
    if (e.next) e.next.prev = e.prev;
    else this.tail = e.prev;
    e.prev = e.next = null;
    this.queuedAmount -= e.amount;
    this.queuedRequests--;
  }

  /**
   * The rank a request of `priority` must come after here: the head (its
   * reservation is made) and anything of equal or higher priority.
   */
  protectedRank(priority: number): number {
    let e = this.tail;
    while (e && e !== this.head && e.entry.priority < priority) e = e.prev;
    return e ? e.entry.rank : -Infinity;
  }

  /** The lowest rank above `rank` here, if any. */
  rankAfter(rank: number): number {
    let e = this.tail;
    let found = Infinity;
    while (e && e.entry.rank > rank) {
      found = e.entry.rank;
      e = e.prev;
    }
    return found;
  }
}

export function resourcesTouched(entry: Entry): Resource[] {
  return entry.parts.length === 1
    ? [entry.parts[0]!.res]
    : entry.parts.map((p) => p.res);
}

export function resourcesOf(entry: Entry): ResourceAmount[] | undefined {
  return entry.parts.length > 1
    ? entry.parts.map((p) => ({ resname: p.res.name, amount: p.amount }))
    : undefined;
}

export function grantOf(
  entry: Entry,
  now: number,
  restored: boolean,
  known = false,
): GrantOutcome {
  const first = entry.parts[0]!;
  const grant: GrantOutcome = {
    type: "grant",
    owner: entry.owner,
    cookie: entry.cookie,
    id: entry.id,
    resname: first.res.name,
    amount: first.amount,
    lease: entry.lease,
    expires: entry.expires,
    waited: restored ? 0 : now - entry.enqueuedAt,
  };
  if (entry.parts.length > 1) grant.resources = resourcesOf(entry)!;
  if (restored) grant.restored = true;
  if (known) grant.known = true;
  return grant;
}
