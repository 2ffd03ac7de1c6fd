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
import { fifo, type Policy, type ResourceView } from "./policy.ts";

/** Why a request was refused; stable, for metrics and tests. */
export type RefusalReason =
  | "unknown-resource"
  | "exceeds-budget"
  | "lease-too-long"
  | "duplicate-cookie"
  | "queue-limit"
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
  /** Re-admitted after a reconnect, not newly granted. */
  restored?: boolean;
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
  /** Most requests one owner may have queued at once (default 10,000). */
  maxQueuedPerOwner?: number;
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

/** One resource in a status snapshot. */
export interface ResourceStatus {
  name: string;
  budget: number;
  allocated: number;
  /** The most ever allocated at once, restored leases included. */
  peak: number;
  /**
   * New grants that left more allocated than the budget: an audit that must
   * stay 0 (only restored leases may exceed the budget).
   */
  overBudgetGrants: number;
  queuedRequests: number;
  queuedAmount: number;
  leases: LeaseStatus[];
  queue: QueuedStatus[];
}

/** A lease ended by {@linkcode Allocator.forceRelease}. */
export interface GrantedLease {
  owner: string;
  cookie: string;
  resname: string;
  amount: number;
}

interface Entry {
  owner: string;
  cookie: string;
  key: string;
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
  overBudgetGrants = 0;
  queuedAmount = 0;
  queuedRequests = 0;
  head: Entry | null = null;
  tail: Entry | null = null;
  leased = new Set<Entry>();

  constructor(name: string, budget: number) {
    this.name = name;
    this.budget = budget;
  }

  *queue(): Iterable<Entry> {
    for (let e = this.head; e; e = e.next) yield e;
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

function keyOf(owner: string, cookie: string): string {
  return `${owner}\0${cookie}`;
}

/** Allocates leases on named resources within their budgets. */
export class Allocator {
  #now: () => number;
  #maxLease: number;
  #policy: Policy;
  #resources = new Map<string, Resource>();
  #entries = new Map<string, Entry>();
  #byOwner = new Map<string, Set<Entry>>();
  #queuedByOwner = new Map<string, number>();
  #maxQueuedPerOwner: number;
  #expiries = new MinHeap<Entry>();

  constructor(budgets: Iterable<[string, number]>, options: AllocatorOptions) {
    this.#now = options.now;
    this.#maxLease = options.maxLease ?? 86_400;
    this.#policy = options.policy ?? fifo;
    this.#maxQueuedPerOwner = options.maxQueuedPerOwner ?? 10_000;
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
    if (!res) return this.#refuseUnknown(owner, req);
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
    if (this.#entries.has(keyOf(owner, req.cookie))) {
      return refuse(
        "duplicate-cookie",
        `Cannot lease "${req.resname}": cookie "${req.cookie}" is already in use`,
      );
    }
    const entry = this.#add(owner, req, res);
    this.#enqueue(entry);
    const out = this.#schedule(res, []);
    if (
      entry.state === "queued" &&
      (this.#queuedByOwner.get(owner) ?? 0) > this.#maxQueuedPerOwner
    ) {
      this.#remove(entry);
      out.push({
        type: "refuse",
        owner,
        cookie: req.cookie,
        reason: "queue-limit",
        message:
          `Cannot queue "${req.resname}": this builder already has ${this.#maxQueuedPerOwner} requests queued (the per-builder limit)`,
      });
    }
    return out;
  }

  /**
   * Re-admits what a builder had before its link to the server broke.  A
   * `"lease"` is a real holding: it is admitted even beyond the budget (and
   * nothing new is granted until back under it).  A `"queued"` request
   * keeps its place if it still has one, else queues at the tail.  Known
   * cookies are never counted twice: their current state is re-sent.
   */
  restore(
    owner: string,
    req: LeaseRequest,
    kind: "lease" | "queued",
  ): Outcome[] {
    const existing = this.#entries.get(keyOf(owner, req.cookie));
    if (existing?.state === "leased") return [grantOf(existing, true)];
    if (existing && kind === "queued") return [];
    const res = this.#resources.get(req.resname);
    if (!res) return this.#refuseUnknown(owner, req);
    if (kind === "queued") return this.request(owner, req);
    const entry = existing ?? this.#add(owner, req, res);
    if (existing) this.#unqueue(existing);
    this.#lease(entry, this.#now());
    return [grantOf(entry, true)];
  }

  #refuseUnknown(owner: string, req: LeaseRequest): Outcome[] {
    return [{
      type: "refuse",
      owner,
      cookie: req.cookie,
      reason: "unknown-resource",
      message: `Cannot lease "${req.resname}": no such resource`,
    }];
  }

  #add(owner: string, req: LeaseRequest, res: Resource): Entry {
    const entry: Entry = {
      owner,
      cookie: req.cookie,
      key: keyOf(owner, req.cookie),
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
    this.#entries.set(entry.key, entry);
    let owned = this.#byOwner.get(owner);
    if (!owned) this.#byOwner.set(owner, owned = new Set());
    owned.add(entry);
    return entry;
  }

  #enqueue(entry: Entry): void {
    entry.res.enqueue(entry);
    this.#queuedByOwner.set(
      entry.owner,
      (this.#queuedByOwner.get(entry.owner) ?? 0) + 1,
    );
  }

  #unqueue(entry: Entry): void {
    entry.res.unlink(entry);
    const n = (this.#queuedByOwner.get(entry.owner) ?? 1) - 1;
    if (n === 0) this.#queuedByOwner.delete(entry.owner);
    else this.#queuedByOwner.set(entry.owner, n);
  }

  /** Turns an entry into a live lease from `now`. */
  #lease(entry: Entry, now: number): void {
    const res = entry.res;
    entry.state = "leased";
    entry.grantedAt = now;
    entry.expires = now + entry.leaseMs;
    res.allocated += entry.amount;
    if (res.allocated > res.peak) res.peak = res.allocated;
    res.leased.add(entry);
    this.#expiries.push(entry.expires, entry);
  }

  /**
   * Ends a lease or withdraws a queued request.  Returns what it was, and
   * the grants that the freed amount allowed.
   */
  release(
    owner: string,
    cookie: string,
  ): { found: "lease" | "queued" | null; outcomes: Outcome[] } {
    const entry = this.#entries.get(keyOf(owner, cookie));
    if (!entry) return { found: null, outcomes: [] };
    const found = entry.state === "leased" ? "lease" : "queued";
    this.#remove(entry);
    return { found, outcomes: this.#schedule(entry.res, []) };
  }

  /** Ends everything an owner holds or waits for (its connection closed). */
  dropOwner(owner: string): Outcome[] {
    const owned = this.#byOwner.get(owner);
    if (!owned) return [];
    const touched = new Set<Resource>();
    for (const entry of [...owned]) {
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
    const e = this.#entries.get(keyOf(owner, cookie));
    return e && { state: e.state, resname: e.res.name };
  }

  /** Names and budgets of the resources. */
  budgets(): Map<string, number> {
    return new Map([...this.#resources].map(([n, r]) => [n, r.budget]));
  }

  /** A snapshot of every resource, its leases and its queue. */
  status(): ResourceStatus[] {
    const now = this.#now();
    return [...this.#resources.values()].map((res) => {
      const starts = estimateStarts(res, now);
      let position = 0;
      return {
        name: res.name,
        budget: res.budget,
        allocated: res.allocated,
        peak: res.peak,
        overBudgetGrants: res.overBudgetGrants,
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
    });
  }

  // --- Operator actions (issue #5) -------------------------------------
  // Kept apart from request handling: budgets change live, never revoking a
  // lease except by an explicit forceRelease().

  /**
   * Sets a resource's budget, adding the resource if it is new.  Raising it
   * grants waiting requests at once; lowering it never revokes a lease: the
   * resource drains (no grants until allocated is under the new budget), and
   * queued requests larger than the new budget, which could never start, are
   * refused.
   */
  setBudget(
    name: string,
    budget: number,
  ): { previous: number | undefined; outcomes: Outcome[] } {
    if (!Number.isSafeInteger(budget) || budget < 0) {
      throw new RangeError(
        `Cannot set budget of "${name}": expected a non-negative integer, got ${budget}`,
      );
    }
    const res = this.#resources.get(name);
    if (!res) {
      this.#resources.set(name, new Resource(name, budget));
      return { previous: undefined, outcomes: [] };
    }
    const previous = res.budget;
    res.budget = budget;
    const out: Outcome[] = [];
    for (const e of [...res.queue()]) {
      if (e.amount <= budget) continue;
      this.#remove(e);
      out.push({
        type: "refuse",
        owner: e.owner,
        cookie: e.cookie,
        reason: "exceeds-budget",
        message:
          `Cannot lease "${name}": amount ${e.amount} exceeds the budget, lowered to ${budget}`,
      });
    }
    return { previous, outcomes: this.#schedule(res, out) };
  }

  /**
   * Removes a resource that holds no lease; its queued requests are refused.
   * Returns `"busy"` (and changes nothing) while leases are live: set the
   * budget to 0 to drain it first, or force-release them.
   */
  removeResource(
    name: string,
  ): { result: "removed" | "busy" | "unknown"; outcomes: Outcome[] } {
    const res = this.#resources.get(name);
    if (!res) return { result: "unknown", outcomes: [] };
    if (res.leased.size > 0) return { result: "busy", outcomes: [] };
    const out: Outcome[] = [];
    for (const e of [...res.queue()]) {
      this.#remove(e);
      out.push({
        type: "refuse",
        owner: e.owner,
        cookie: e.cookie,
        reason: "unknown-resource",
        message: `Cannot lease "${name}": the resource was removed`,
      });
    }
    this.#resources.delete(name);
    return { result: "removed", outcomes: out };
  }

  /**
   * Ends a live lease at an operator's word (queued requests are not
   * touched: see release()).  Returns the lease ended, if any, and the
   * grants its amount allowed; the shell tells the holder.
   */
  forceRelease(
    owner: string,
    cookie: string,
  ): { lease: GrantedLease | undefined; outcomes: Outcome[] } {
    const entry = this.#entries.get(keyOf(owner, cookie));
    if (!entry || entry.state !== "leased") {
      return { lease: undefined, outcomes: [] };
    }
    this.#remove(entry);
    return {
      lease: {
        owner,
        cookie,
        resname: entry.res.name,
        amount: entry.amount,
      },
      outcomes: this.#schedule(entry.res, []),
    };
  }

  #isLive(entry: Entry): boolean {
    return this.#entries.get(entry.key) === entry;
  }

  #remove(entry: Entry): void {
    this.#entries.delete(entry.key);
    const owned = this.#byOwner.get(entry.owner);
    owned?.delete(entry);
    if (owned?.size === 0) this.#byOwner.delete(entry.owner);
    if (entry.state === "leased") {
      entry.res.allocated -= entry.amount;
      entry.res.leased.delete(entry);
    } else {
      this.#unqueue(entry);
    }
  }

  #schedule(res: Resource, out: Outcome[]): Outcome[] {
    if (res.head === null) return out;
    const now = this.#now();
    for (const entry of this.#policy.pick(res, now)) {
      this.#unqueue(entry);
      this.#lease(entry, now);
      if (res.allocated > res.budget) res.overBudgetGrants++;
      out.push(grantOf(entry, false));
    }
    return out;
  }
}

function grantOf(entry: Entry, restored: boolean): GrantOutcome {
  const grant: GrantOutcome = {
    type: "grant",
    owner: entry.owner,
    cookie: entry.cookie,
    resname: entry.res.name,
    amount: entry.amount,
    lease: entry.lease,
    expires: entry.expires,
    waited: entry.grantedAt - entry.enqueuedAt,
  };
  if (restored) grant.restored = true;
  return grant;
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
