/**
 * The allocator: named resources with budgets, a queue per resource, leases
 * that expire.  Pure: no sockets, no timers, no `Deno.*`; time comes from an
 * injected clock and every call returns the outcomes it caused, for the
 * shell (server) to deliver.
 *
 * Requests are identified by (owner, cookie): the owner is the builder
 * connection, so one builder cannot touch another's cookies.
 *
 * @module
 */

import { MinHeap } from "./_heap.ts";
import { fifo, type Policy, reservation, type ResourceView } from "./policy.ts";

/** Why a request was refused; stable, for metrics and tests. */
export type RefusalReason =
  | "unknown-resource"
  | "exceeds-budget"
  | "lease-too-long"
  | "duplicate-cookie"
  | "invalid";

/** A request was granted. */
export interface GrantOutcome {
  type: "grant";
  owner: string;
  cookie: string;
  resname: string;
  amount: number;
  lease: number;
  /** Epoch milliseconds by the injected clock. */
  expires: number;
  /** Milliseconds spent queued. */
  waited: number;
}

/** A request was refused. */
export interface RefusalOutcome {
  type: "refuse";
  owner: string;
  cookie: string;
  reason: RefusalReason;
  message: string;
}

/** A lease ran out. */
export interface ExpiryOutcome {
  type: "expire";
  owner: string;
  cookie: string;
  resname: string;
  amount: number;
}

/** What a call on the allocator caused. */
export type Outcome = GrantOutcome | RefusalOutcome | ExpiryOutcome;

/** A request for a lease. */
export interface LeaseRequest {
  cookie: string;
  resname: string;
  amount: number;
  /** Lease length in seconds. */
  lease: number;
}

/** Options for {@linkcode Allocator}. */
export interface AllocatorOptions {
  /** The clock, in milliseconds. */
  now: () => number;
  /** Longest lease accepted, in seconds (default 86400). */
  maxLease?: number;
  /** Scheduling policy (default {@linkcode fifo}). */
  policy?: Policy;
}

/** A live lease in a status snapshot. */
export interface LeaseStatus {
  owner: string;
  cookie: string;
  amount: number;
  lease: number;
  grantedAt: number;
  expires: number;
}

/** A queued request in a status snapshot. */
export interface QueuedStatus {
  owner: string;
  cookie: string;
  amount: number;
  lease: number;
  enqueuedAt: number;
  /** 1 = head of the queue. */
  position: number;
  /** Earliest time it could start, from declared lease ends; null if never known. */
  estimatedStart: number | null;
}

/** The head of a queue and when it is certain to start. */
export interface HeadStatus {
  owner: string;
  cookie: string;
  amount: number;
  enqueuedAt: number;
  /**
   * The earliest time its amount is certain to be free, from declared lease
   * ends: when fifo would start it from this state.
   */
  reservedAt: number;
}

/** One resource in a status snapshot. */
export interface ResourceStatus {
  name: string;
  budget: number;
  allocated: number;
  /** The most ever allocated at once: an audit of the budget. */
  peak: number;
  queuedRequests: number;
  queuedAmount: number;
  leases: LeaseStatus[];
  queue: QueuedStatus[];
}

interface Entry {
  owner: string;
  cookie: string;
  res: Resource;
  amount: number;
  lease: number;
  leaseMs: number;
  enqueuedAt: number;
  state: "queued" | "leased";
  grantedAt: number;
  expires: number;
  prev: Entry | null;
  next: Entry | null;
}

class Resource implements ResourceView<Entry> {
  name: string;
  budget: number;
  allocated = 0;
  peak = 0;
  queuedAmount = 0;
  queuedRequests = 0;
  head: Entry | null = null;
  tail: Entry | null = null;
  leased = new Set<Entry>();

  constructor(name: string, budget: number) {
    this.name = name;
    this.budget = budget;
  }

  queue(): Iterable<Entry> {
    // A plain iterator, not a generator: policies walk queues on hot paths.
    let e = this.head;
    const it: IterableIterator<Entry> = {
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

  next(e: Entry): Entry | null {
    return e.next;
  }

  leases(): Iterable<Entry> {
    return this.leased;
  }

  enqueue(e: Entry): void {
    e.prev = this.tail;
    e.next = null;
    if (this.tail) this.tail.next = e;
    else this.head = e;
    this.tail = e;
    this.queuedAmount += e.amount;
    this.queuedRequests++;
  }

  unlink(e: Entry): void {
    if (e.prev) e.prev.next = e.next;
    else this.head = e.next;
    if (e.next) e.next.prev = e.prev;
    else this.tail = e.prev;
    e.prev = e.next = null;
    this.queuedAmount -= e.amount;
    this.queuedRequests--;
  }
}

/** Allocates leases on named resources within their budgets. */
export class Allocator {
  #now: () => number;
  #maxLease: number;
  #policy: Policy;
  #resources = new Map<string, Resource>();
  /** Live requests by owner, then cookie: no key strings to build. */
  #owners = new Map<string, Map<string, Entry>>();
  #expiries = new MinHeap<Entry>();

  constructor(budgets: Iterable<[string, number]>, options: AllocatorOptions) {
    this.#now = options.now;
    this.#maxLease = options.maxLease ?? 86_400;
    this.#policy = options.policy ?? fifo;
    for (const [name, budget] of budgets) {
      this.#resources.set(name, new Resource(name, budget));
    }
  }

  /** The policy in force. */
  get policy(): Policy {
    return this.#policy;
  }

  /**
   * Queues a request; returns its grant if it can start now, its refusal if
   * it never can, else nothing (it waits).
   */
  request(owner: string, req: LeaseRequest): Outcome[] {
    const refuse = (reason: RefusalReason, message: string): Outcome[] => [
      { type: "refuse", owner, cookie: req.cookie, reason, message },
    ];
    const res = this.#resources.get(req.resname);
    if (!res) {
      return refuse(
        "unknown-resource",
        `Cannot lease "${req.resname}": no such resource`,
      );
    }
    if (req.amount > res.budget) {
      return refuse(
        "exceeds-budget",
        `Cannot lease "${req.resname}": amount ${req.amount} exceeds the budget of ${res.budget}`,
      );
    }
    if (req.lease > this.#maxLease) {
      return refuse(
        "lease-too-long",
        `Cannot lease "${req.resname}": lease ${req.lease} s exceeds the limit of ${this.#maxLease} s`,
      );
    }
    let owned = this.#owners.get(owner);
    if (owned?.has(req.cookie)) {
      return refuse(
        "duplicate-cookie",
        `Cannot lease "${req.resname}": cookie "${req.cookie}" is already in use`,
      );
    }
    const entry: Entry = {
      owner,
      cookie: req.cookie,
      res,
      amount: req.amount,
      lease: req.lease,
      leaseMs: req.lease * 1000,
      enqueuedAt: this.#now(),
      state: "queued",
      grantedAt: 0,
      expires: 0,
      prev: null,
      next: null,
    };
    if (!owned) this.#owners.set(owner, owned = new Map());
    owned.set(req.cookie, entry);
    res.enqueue(entry);
    return this.#schedule(res, []);
  }

  /**
   * Ends a lease or withdraws a queued request.  Returns what it was, and
   * the grants that the freed amount allowed.
   */
  release(
    owner: string,
    cookie: string,
  ): { found: "lease" | "queued" | null; outcomes: Outcome[] } {
    const entry = this.#owners.get(owner)?.get(cookie);
    if (!entry) return { found: null, outcomes: [] };
    const found = entry.state === "leased" ? "lease" : "queued";
    // Withdrawing a request behind the head frees nothing and moves no
    // reservation: there is nothing new to grant.
    const behindHead = found === "queued" && entry.res.head !== entry;
    this.#remove(entry);
    if (behindHead) return { found, outcomes: [] };
    return { found, outcomes: this.#schedule(entry.res, []) };
  }

  /** Ends everything an owner holds or waits for (its connection closed). */
  dropOwner(owner: string): Outcome[] {
    const owned = this.#owners.get(owner);
    if (!owned) return [];
    const touched = new Set<Resource>();
    for (const entry of [...owned.values()]) {
      this.#remove(entry);
      touched.add(entry.res);
    }
    const out: Outcome[] = [];
    for (const res of touched) this.#schedule(res, out);
    return out;
  }

  /** Expires the leases that are due by now, and grants what that frees. */
  expire(): Outcome[] {
    const now = this.#now();
    const out: Outcome[] = [];
    const touched = new Set<Resource>();
    for (;;) {
      const at = this.#expiries.peekKey();
      if (at === undefined || at > now) break;
      const entry = this.#expiries.pop()!;
      if (!this.#isLive(entry) || entry.expires !== at) continue;
      this.#remove(entry);
      touched.add(entry.res);
      out.push({
        type: "expire",
        owner: entry.owner,
        cookie: entry.cookie,
        resname: entry.res.name,
        amount: entry.amount,
      });
    }
    for (const res of touched) this.#schedule(res, out);
    return out;
  }

  /** When the next lease is due to expire, if any. */
  nextExpiry(): number | undefined {
    for (;;) {
      const entry = this.#expiries.peek();
      if (!entry) return undefined;
      if (this.#isLive(entry) && entry.state === "leased") {
        return this.#expiries.peekKey();
      }
      this.#expiries.pop();
    }
  }

  /** The state of a request, if it is live. */
  lookup(
    owner: string,
    cookie: string,
  ): { state: "queued" | "leased"; resname: string } | undefined {
    const e = this.#owners.get(owner)?.get(cookie);
    return e && { state: e.state, resname: e.res.name };
  }

  /** Names and budgets of the resources. */
  budgets(): Map<string, number> {
    return new Map([...this.#resources].map(([n, r]) => [n, r.budget]));
  }

  /**
   * The head of a resource's queue, if any, with its reservation.  Costs
   * O(leases), not O(queue): for simulations and metrics on hot paths.
   */
  head(resname: string): HeadStatus | undefined {
    const res = this.#resources.get(resname);
    const e = res?.head;
    if (!res || !e) return undefined;
    return {
      owner: e.owner,
      cookie: e.cookie,
      amount: e.amount,
      enqueuedAt: e.enqueuedAt,
      reservedAt: reservation(res, e.amount, this.#now()).at,
    };
  }

  /** How many requests wait for a resource: O(1). */
  queued(resname: string): number {
    return this.#resources.get(resname)?.queuedRequests ?? 0;
  }

  /** A snapshot of every resource, its leases and its queue. */
  status(): ResourceStatus[] {
    return [...this.#resources.values()].map((res) => this.#statusOf(res));
  }

  /**
   * A snapshot of one resource: O(its leases + its queue), where
   * {@linkcode status} costs that for every resource.
   */
  statusOf(resname: string): ResourceStatus | undefined {
    const res = this.#resources.get(resname);
    return res && this.#statusOf(res);
  }

  #statusOf(res: Resource): ResourceStatus {
    const now = this.#now();
    const starts = estimateStarts(res, now);
    let position = 0;
    return {
      name: res.name,
      budget: res.budget,
      allocated: res.allocated,
      peak: res.peak,
      queuedRequests: res.queuedRequests,
      queuedAmount: res.queuedAmount,
      leases: [...res.leased].map((e) => ({
        owner: e.owner,
        cookie: e.cookie,
        amount: e.amount,
        lease: e.lease,
        grantedAt: e.grantedAt,
        expires: e.expires,
      })),
      queue: [...res.queue()].map((e, i) => ({
        owner: e.owner,
        cookie: e.cookie,
        amount: e.amount,
        lease: e.lease,
        enqueuedAt: e.enqueuedAt,
        position: ++position,
        estimatedStart: starts[i] ?? null,
      })),
    };
  }

  #isLive(entry: Entry): boolean {
    return this.#owners.get(entry.owner)?.get(entry.cookie) === entry;
  }

  #remove(entry: Entry): void {
    const owned = this.#owners.get(entry.owner);
    owned?.delete(entry.cookie);
    if (owned?.size === 0) this.#owners.delete(entry.owner);
    if (entry.state === "leased") {
      entry.res.allocated -= entry.amount;
      entry.res.leased.delete(entry);
    } else {
      entry.res.unlink(entry);
    }
  }

  #schedule(res: Resource, out: Outcome[]): Outcome[] {
    if (res.head === null) return out;
    const now = this.#now();
    for (const entry of this.#policy.pick(res, now)) {
      res.unlink(entry);
      entry.state = "leased";
      entry.grantedAt = now;
      entry.expires = now + entry.leaseMs;
      res.allocated += entry.amount;
      if (res.allocated > res.peak) res.peak = res.allocated;
      res.leased.add(entry);
      this.#expiries.push(entry.expires, entry);
      out.push({
        type: "grant",
        owner: entry.owner,
        cookie: entry.cookie,
        resname: res.name,
        amount: entry.amount,
        lease: entry.lease,
        expires: entry.expires,
        waited: now - entry.enqueuedAt,
      });
    }
    return out;
  }
}

/**
 * Earliest start of each queued request in FIFO order, assuming every lease
 * runs its full declared length: a pessimistic but honest estimate.
 */
function estimateStarts(res: Resource, now: number): number[] {
  const heap = new MinHeap<number>();
  for (const e of res.leased) heap.push(e.expires, e.amount);
  let free = res.budget - res.allocated;
  let t = now;
  const starts: number[] = [];
  for (const q of res.queue()) {
    while (free < q.amount && heap.size > 0) {
      t = Math.max(t, heap.peekKey()!);
      free += heap.pop()!;
    }
    if (free < q.amount) break;
    starts.push(t);
    free -= q.amount;
    heap.push(t + q.leaseMs, q.amount);
  }
  return starts;
}
