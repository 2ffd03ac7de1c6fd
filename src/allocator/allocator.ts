/**
 * The allocator: named resources with budgets, a queue per resource, leases
 * that expire.  Pure: no sockets, no timers, no `Deno.*`; time comes from an
 * injected clock and every call returns the outcomes it caused, for the
 * shell (server) to deliver.
 *
 * Requests are identified by (owner, cookie): the owner is the builder
 * connection, so one builder cannot touch another's cookies.
 *
 * A request may need several resources at once (all or nothing): it then has
 * one part in each resource's queue and is granted only when every part can
 * start.  Queues are ordered by one global rank (arrival order, with
 * priority), so the waits between requests can never form a cycle: no
 * deadlock, and nothing is held while waiting.
 *
 * @module
 */

import { MinHeap } from "../shared/min_heap.ts";
import { fifo, type Policy, reservation } from "./policy.ts";
import {
  type Entry,
  grantOf,
  type Part,
  Resource,
  resourcesOf,
  resourcesTouched,
} from "./_resource.ts";
import { resourceStatus } from "./status.ts";
import { knownNames } from "./known_names.ts";
import type {
  AllocatorOptions,
  GrantedLease,
  HeadStatus,
  LeaseRequest,
  Outcome,
  RefusalOutcome,
  RefusalReason,
  ResourceStatus,
} from "./types.ts";

export type * from "./types.ts";

/** Stale expiry-heap entries tolerated beyond the live leases' count. */
const STALE_SLACK = 64;

/** Allocates leases on named resources within their budgets. */
export class Allocator {
  #now: () => number;
  #maxLease: number;
  #policy: Policy;
  #resources = new Map<string, Resource>();
  /** Live requests by owner, then cookie: no key strings to build. */
  #owners = new Map<string, Map<string, Entry>>();
  /**
   * Leases by when they end.  A lease released early stays in it (lazy
   * deletion) until it reaches the top or until such stale entries outnumber
   * the live leases, when the heap is compacted: its size stays within twice
   * the live leases (plus a constant), at O(1) amortized per release.
   */
  #expiries = new MinHeap<Entry>();
  /** Live leases: the entries of {@linkcode #expiries} that are not stale. */
  #leasesLive = 0;
  /** The last rank given at the tail; ranks between are for priorities. */
  #seq = 0;
  #queuedByOwner = new Map<string, number>();
  #maxQueuedPerOwner: number;
  #reclaiming = false;
  #marginMs: number;
  /**
   * Owners whose leases do not expire by their end until resumed, with the
   * leases that came due meanwhile (see {@linkcode holdExpiries}).
   */
  #held = new Map<string, Entry[]>();
  #idPrefix: string;
  #restoreUnbounded: boolean;
  /** Grants so far: the serial of the next lease id. */
  #grants = 0;

  constructor(budgets: Iterable<[string, number]>, options: AllocatorOptions) {
    this.#now = options.now;
    this.#maxLease = options.maxLease ?? 86_400;
    this.#policy = options.policy ?? fifo;
    this.#maxQueuedPerOwner = options.maxQueuedPerOwner ?? 10_000;
    this.#marginMs = options.expiryMarginMs ?? 0;
    this.#idPrefix = options.idPrefix ?? "";
    this.#restoreUnbounded = options.restoreUnbounded ?? false;
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
    const checked = this.#check(owner, req);
    if (!Array.isArray(checked)) return [checked];
    const entry = this.#add(owner, req, checked);
    for (const part of entry.parts) part.res.insert(part);
    this.#countQueued(owner, 1);
    const out = this.#schedule(resourcesTouched(entry), []);
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
        message: `Cannot queue "${
          entry.parts.map((p) => p.res.name).join(",")
        }": this builder already has ${this.#maxQueuedPerOwner} requests queued (the per-builder limit)`,
      });
    }
    return out;
  }

  /**
   * Re-admits what a builder had before its link to the server broke.  A
   * `"lease"` is validated like a request (known resource, amount within
   * the budget, lease within the limit) and admitted only if it fits: it
   * never takes its builder, nor a resource as a whole, past a budget.  An
   * honest restore always fits (the budget held before the fault, and the
   * graces keep the units it held from being granted again); one that does
   * not is refused (`restore-over-budget`), and its builder tells the
   * holder its lease is lost.  A `"queued"` request keeps its place if it
   * still has one, else queues by rank.  Known cookies are never counted
   * twice: their current state is re-sent.  Restores are admitted during a
   * reclaim grace.
   */
  restore(
    owner: string,
    req: LeaseRequest,
    kind: "lease" | "queued",
  ): Outcome[] {
    const existing = this.#owners.get(owner)?.get(req.cookie);
    if (existing?.state === "leased") {
      return [grantOf(existing, 0, true, true)];
    }
    if (existing && kind === "queued") return [];
    if (kind === "queued") return this.request(owner, req);
    const now = this.#now();
    let entry = existing;
    if (entry) {
      const refusal = this.#restoreBounds(
        owner,
        req,
        entry.parts.map((p) => [p.res, p.amount]),
      );
      if (refusal) {
        this.#remove(entry);
        return [refusal, ...this.#schedule(resourcesTouched(entry), [])];
      }
      for (const p of entry.parts) p.res.unlink(p);
      this.#countQueued(owner, -1);
      if (req.id !== undefined) entry.id = req.id;
      entry.lease = req.lease;
      entry.leaseMs = req.lease * 1000;
      for (const p of entry.parts) p.leaseMs = entry.leaseMs;
    } else {
      const checked = this.#check(owner, req);
      if (!Array.isArray(checked)) return [checked];
      const refusal = this.#restoreBounds(owner, req, checked);
      if (refusal) return [refusal];
      entry = this.#add(owner, req, checked);
      if (req.id !== undefined) entry.id = req.id;
    }
    this.#lease(entry, now);
    for (const p of entry.parts) {
      if (p.res.allocated > p.res.budget) p.res.overBudgetGrants++;
    }
    return [grantOf(entry, now, true)];
  }

  /** Why a restored lease may not be admitted, if it may not. */
  #restoreBounds(
    owner: string,
    req: LeaseRequest,
    targets: [Resource, number][],
  ): RefusalOutcome | undefined {
    const label = targets.map(([r]) => r.name).join(",");
    const refuse = (reason: RefusalReason, message: string) => ({
      type: "refuse" as const,
      owner,
      cookie: req.cookie,
      reason,
      message,
    });
    if (req.lease > this.#maxLease) {
      return refuse(
        "lease-too-long",
        `Cannot restore "${label}": lease ${req.lease} s exceeds the limit of ${this.#maxLease} s`,
      );
    }
    // The simulator's mutant: no budget check at all.
    if (this.#restoreUnbounded) return undefined;
    for (const [res, amount] of targets) {
      const held = res.heldBy.get(owner) ?? 0;
      if (held + amount > res.budget) {
        return refuse(
          "exceeds-budget",
          `Cannot restore "${res.name}": this builder would hold ${
            held + amount
          }, over the budget of ${res.budget}`,
        );
      }
      if (res.allocated + amount > res.budget) {
        return refuse(
          "restore-over-budget",
          `Cannot restore "${res.name}": ${res.allocated} of ${res.budget} are allocated, ${amount} more would exceed the budget; the lease is lost`,
        );
      }
    }
    return undefined;
  }

  /** Whether new grants are held back (a reclaim grace). */
  get reclaiming(): boolean {
    return this.#reclaiming;
  }

  /**
   * Starts a reclaim grace: until {@linkcode endReclaim}, nothing new is
   * granted; requests queue and keep their places, restores are admitted.
   */
  beginReclaim(): void {
    this.#reclaiming = true;
  }

  /** Ends a reclaim grace; returns the grants it allows now. */
  endReclaim(): Outcome[] {
    if (!this.#reclaiming) return [];
    this.#reclaiming = false;
    return this.#schedule(this.#resources.values(), []);
  }

  /**
   * Validates a request: its resources and amounts as targets, or why it
   * is refused.
   */
  #check(
    owner: string,
    req: LeaseRequest,
  ): [Resource, number][] | RefusalOutcome {
    const refuse = (
      reason: RefusalReason,
      message: string,
    ): RefusalOutcome => ({
      type: "refuse",
      owner,
      cookie: req.cookie,
      reason,
      message,
    });
    const wanted = req.resources ?? [
      { resname: req.resname, amount: req.amount },
    ];
    const label = () => wanted.map((w) => w.resname).join(",");
    if (wanted.length === 0) {
      return refuse("invalid", "Cannot lease: no resource named");
    }
    const targets: [Resource, number][] = [];
    for (const { resname, amount } of wanted) {
      const res = this.#resources.get(resname);
      if (!res) {
        return refuse(
          "unknown-resource",
          `Cannot lease "${resname}": no such resource (${
            knownNames(resname, this.#resources.keys())
          })`,
        );
      }
      if (amount > res.budget) {
        return refuse(
          "exceeds-budget",
          `Cannot lease "${resname}": amount ${amount} exceeds the budget of ${res.budget}`,
        );
      }
      if (targets.some(([r]) => r === res)) {
        return refuse(
          "invalid",
          `Cannot lease "${label()}": "${resname}" is named twice`,
        );
      }
      targets.push([res, amount]);
    }
    if (req.lease > this.#maxLease) {
      return refuse(
        "lease-too-long",
        `Cannot lease "${label()}": lease ${req.lease} s exceeds the limit of ${this.#maxLease} s`,
      );
    }
    if (this.#owners.get(owner)?.has(req.cookie)) {
      return refuse(
        "duplicate-cookie",
        `Cannot lease "${label()}": cookie "${req.cookie}" is already in use`,
      );
    }
    return targets;
  }

  /** Makes a queued entry (not yet in any queue) and records it. */
  #add(owner: string, req: LeaseRequest, targets: [Resource, number][]): Entry {
    const now = this.#now();
    const priority = req.priority ?? 0;
    const entry: Entry = {
      owner,
      cookie: req.cookie,
      parts: [],
      lease: req.lease,
      leaseMs: req.lease * 1000,
      enqueuedAt: now,
      priority,
      rank: this.#rankFor(targets.map(([r]) => r), priority),
      state: "queued",
      id: "",
      grantedAt: 0,
      expires: 0,
    };
    for (const [res, amount] of targets) {
      entry.parts.push({
        entry,
        res,
        amount,
        leaseMs: entry.leaseMs,
        enqueuedAt: now,
        expires: 0,
        prev: null,
        next: null,
      });
    }
    let owned = this.#owners.get(owner);
    if (!owned) this.#owners.set(owner, owned = new Map());
    owned.set(req.cookie, entry);
    return entry;
  }

  #countQueued(owner: string, delta: number): void {
    const n = (this.#queuedByOwner.get(owner) ?? 0) + delta;
    if (n === 0) this.#queuedByOwner.delete(owner);
    else this.#queuedByOwner.set(owner, n);
  }

  /**
   * One rank for every queue the request joins, so that all queues agree on
   * who is ahead of whom: after each queue's head and every request of equal
   * or higher priority, else as early as the gaps allow.
   */
  #rankFor(resources: Resource[], priority: number): number {
    let after = -Infinity;
    for (const r of resources) {
      after = Math.max(after, r.protectedRank(priority));
    }
    let before = Infinity;
    for (const r of resources) before = Math.min(before, r.rankAfter(after));
    if (before === Infinity) return ++this.#seq;
    const mid = after === -Infinity ? before - 1 : (after + before) / 2;
    // Out of float precision between two ranks: join the tail instead,
    // which only gives up the priority's head start.
    return mid > after && mid < before ? mid : ++this.#seq;
  }

  /**
   * Ends a lease or withdraws a queued request.  Returns what it was (with
   * when the lease was to end, 0 for a queued request), and the grants
   * that the freed amount allowed.  With `id`, only the lease of that
   * grant is ended: a yield about an ended lease finds nothing, even when
   * its cookie is live again (`"stale"`).
   */
  release(
    owner: string,
    cookie: string,
    id?: string,
  ): {
    found: "lease" | "queued" | "stale" | null;
    expires: number;
    outcomes: Outcome[];
  } {
    const entry = this.#owners.get(owner)?.get(cookie);
    if (!entry) return { found: null, expires: 0, outcomes: [] };
    if (id !== undefined && entry.id !== id) {
      return { found: "stale", expires: 0, outcomes: [] };
    }
    const found = entry.state === "leased" ? "lease" : "queued";
    const expires = found === "lease" ? entry.expires : 0;
    // Withdrawing a single-resource request from behind a single-resource
    // head frees nothing and moves no reservation: that head does not fit,
    // so nothing behind it could start before and nothing can now.  (A
    // multi-resource head may fit and wait elsewhere: then look again.)
    const part = entry.parts[0]!;
    const head = part.res.head;
    const inert = found === "queued" && entry.parts.length === 1 &&
      head !== part && head !== null && head.entry.parts.length === 1;
    this.#remove(entry);
    if (inert) return { found, expires, outcomes: [] };
    return {
      found,
      expires,
      outcomes: this.#schedule(resourcesTouched(entry), []),
    };
  }

  /**
   * The owner's leases no longer expire by their end, until
   * {@linkcode resumeExpiries} (or {@linkcode dropOwner}): the server does
   * this for a builder whose link is lost, which may be frozen and unable
   * to tell its holders that a lease ended.
   */
  holdExpiries(owner: string): void {
    if (!this.#held.has(owner)) this.#held.set(owner, []);
  }

  /** Leases of `owner` expire by their end again (those past it at once). */
  resumeExpiries(owner: string): void {
    const parked = this.#held.get(owner);
    if (!parked) return;
    this.#held.delete(owner);
    for (const e of parked) {
      if (this.#isLive(e) && e.state === "leased") {
        this.#expiries.push(e.expires + this.#marginMs, e);
      }
    }
  }

  /** Ends everything an owner holds or waits for (its connection closed). */
  dropOwner(owner: string): Outcome[] {
    this.#held.delete(owner);
    const owned = this.#owners.get(owner);
    if (!owned) return [];
    const touched = new Set<Resource>();
    for (const entry of [...owned.values()]) {
      this.#remove(entry);
      for (const p of entry.parts) touched.add(p.res);
    }
    return this.#schedule(touched, []);
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
      if (!this.#isLive(entry) || entry.expires + this.#marginMs !== at) {
        continue;
      }
      const parked = this.#held.get(entry.owner);
      if (parked) {
        parked.push(entry);
        continue;
      }
      this.#remove(entry);
      for (const p of entry.parts) touched.add(p.res);
      const first = entry.parts[0]!;
      const resources = resourcesOf(entry);
      out.push({
        type: "expire",
        owner: entry.owner,
        cookie: entry.cookie,
        id: entry.id,
        resname: first.res.name,
        amount: first.amount,
        ...(resources && { resources }),
      });
    }
    return this.#schedule(touched, out);
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
  ): {
    state: "queued" | "leased";
    resname: string;
    /** Every resource it needs, in request order. */
    resnames: string[];
    /** When a lease ends (epoch ms by the clock); 0 while queued. */
    expires: number;
    /** The grant's id ("" while queued). */
    id: string;
  } | undefined {
    const e = this.#owners.get(owner)?.get(cookie);
    return e && {
      id: e.id,
      state: e.state,
      resname: e.parts[0]!.res.name,
      resnames: e.parts.map((p) => p.res.name),
      expires: e.state === "leased" ? e.expires : 0,
    };
  }

  /** The cookies an owner holds or waits for. */
  cookiesOf(owner: string): string[] {
    return [...(this.#owners.get(owner)?.keys() ?? [])];
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
      owner: e.entry.owner,
      cookie: e.entry.cookie,
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
    return resourceStatus(res, this.#now());
  }

  #isLive(entry: Entry): boolean {
    return this.#owners.get(entry.owner)?.get(entry.cookie) === entry;
  }

  #remove(entry: Entry): void {
    if (entry.state === "leased" && this.#isLive(entry)) {
      this.#leasesLive--;
      if (this.#expiries.size > 2 * this.#leasesLive + STALE_SLACK) {
        this.#compactExpiries(entry);
      }
    }
    const owned = this.#owners.get(entry.owner);
    owned?.delete(entry.cookie);
    if (owned?.size === 0) this.#owners.delete(entry.owner);
    if (entry.state === "queued") this.#countQueued(entry.owner, -1);
    for (const p of entry.parts) {
      if (entry.state === "leased") {
        p.res.allocated -= p.amount;
        const held = (p.res.heldBy.get(entry.owner) ?? 0) - p.amount;
        if (held === 0) p.res.heldBy.delete(entry.owner);
        else p.res.heldBy.set(entry.owner, held);
        p.res.leased.delete(p);
      } else {
        p.res.unlink(p);
      }
    }
  }

  /**
   * Grants what the policy picks in each resource, until nothing changes:
   * a multi-resource grant touches other queues, which are then looked at
   * again.
   */
  #schedule(start: Iterable<Resource>, out: Outcome[]): Outcome[] {
    if (this.#reclaiming) return out;
    const now = this.#now();
    // Only multi-resource grants need a work list: most calls never make one.
    let again: Set<Resource> | undefined;
    const run = (res: Resource) => {
      if (res.head === null) return;
      for (const part of this.#policy.pick(res, now)) {
        const entry = part.entry;
        if (entry.state !== "queued") continue;
        if (entry.parts.length > 1) {
          if (!this.#pickedEverywhere(entry, now)) continue;
          for (const p of entry.parts) {
            if (p.res !== res) (again ??= new Set()).add(p.res);
          }
        }
        this.#grant(entry, now, out);
      }
    };
    for (const res of start) run(res);
    while (again !== undefined && again.size > 0) {
      const [res] = again;
      again.delete(res!);
      run(res!);
    }
    return out;
  }

  /** Whether every part of a multi-resource request can start now. */
  #pickedEverywhere(entry: Entry, now: number): boolean {
    return entry.parts.every((p) => this.#policy.pick(p.res, now).includes(p));
  }

  #grant(entry: Entry, now: number, out: Outcome[]): void {
    for (const p of entry.parts) p.res.unlink(p);
    this.#countQueued(entry.owner, -1);
    this.#lease(entry, now);
    for (const p of entry.parts) {
      if (p.res.allocated > p.res.budget) p.res.overBudgetGrants++;
    }
    out.push(grantOf(entry, now, false));
  }

  /** Drops the stale entries of the expiry heap, and `leaving` with them. */
  #compactExpiries(leaving: Entry): void {
    this.#expiries.retain((key, entry) =>
      entry !== leaving && this.#isLive(entry) && entry.state === "leased" &&
      entry.expires + this.#marginMs === key
    );
  }

  /** How many entries the expiry heap holds, stale ones included (tests). */
  get expiryHeapSize(): number {
    return this.#expiries.size;
  }

  /** Makes an entry, already out of every queue, a live lease from `now`. */
  #lease(entry: Entry, now: number): void {
    entry.state = "leased";
    // A restored lease may bring the id its grant had.
    if (entry.id === "") {
      entry.id = this.#idPrefix + (++this.#grants).toString(36);
    }
    entry.grantedAt = now;
    entry.expires = now + entry.leaseMs;
    for (const p of entry.parts) {
      const res = p.res;
      p.expires = entry.expires;
      res.allocated += p.amount;
      res.heldBy.set(
        entry.owner,
        (res.heldBy.get(entry.owner) ?? 0) + p.amount,
      );
      if (res.allocated > res.peak) res.peak = res.allocated;
      res.leased.add(p);
    }
    this.#expiries.push(entry.expires + this.#marginMs, entry);
    this.#leasesLive++;
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
    const touched = new Set<Resource>([res]);
    const out = this.#refuseQueued(
      res,
      (p) => p.amount > budget,
      "exceeds-budget",
      (p) =>
        `Cannot lease "${name}": amount ${p.amount} exceeds the budget, lowered to ${budget}`,
      touched,
    );
    return { previous, outcomes: this.#schedule(touched, out) };
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
    const touched = new Set<Resource>();
    const out = this.#refuseQueued(
      res,
      () => true,
      "unknown-resource",
      () => `Cannot lease "${name}": the resource was removed`,
      touched,
    );
    this.#resources.delete(name);
    touched.delete(res);
    return { result: "removed", outcomes: this.#schedule(touched, out) };
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
    const entry = this.#owners.get(owner)?.get(cookie);
    if (!entry || entry.state !== "leased") {
      return { lease: undefined, outcomes: [] };
    }
    this.#remove(entry);
    const first = entry.parts[0]!;
    return {
      lease: {
        owner,
        cookie,
        id: entry.id,
        resname: first.res.name,
        amount: first.amount,
      },
      outcomes: this.#schedule(resourcesTouched(entry), []),
    };
  }

  /**
   * Refuses (whole) every queued request with a part in `res` that `which`
   * picks; adds every resource they were queued in to `touched`.
   */
  #refuseQueued(
    res: Resource,
    which: (p: Part) => boolean,
    reason: RefusalReason,
    message: (p: Part) => string,
    touched: Set<Resource>,
  ): Outcome[] {
    const out: Outcome[] = [];
    for (const p of [...res.queue()]) {
      if (!which(p)) continue;
      this.#remove(p.entry);
      for (const q of p.entry.parts) touched.add(q.res);
      out.push({
        type: "refuse",
        owner: p.entry.owner,
        cookie: p.entry.cookie,
        reason,
        message: message(p),
      });
    }
    return out;
  }
}
