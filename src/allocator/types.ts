/**
 * The allocator's public types: requests, the outcomes its calls return and
 * the status snapshots it gives.
 *
 * @module
 */

import type { Policy } from "./policy.ts";

/** Why a request was refused; stable, for metrics and tests. */
export type RefusalReason =
  | "unknown-resource"
  | "exceeds-budget"
  | "lease-too-long"
  | "duplicate-cookie"
  | "queue-limit"
  | "invalid"
  /** A restored lease that would take a resource past its budget. */
  | "restore-over-budget"
  /**
   * A restored lease during a reclaim grace, from a builder session the
   * state file does not record (the server's refusal, not the allocator's).
   */
  | "restore-not-recorded";

/** One resource and amount of a multi-resource request. */
export interface ResourceAmount {
  resname: string;
  amount: number;
}

/** A request was granted. */
export interface GrantOutcome {
  type: "grant";
  owner: string;
  cookie: string;
  /** This grant's id: unique to one lease, unlike its cookie. */
  id: string;
  /** The first (or only) resource. */
  resname: string;
  amount: number;
  /** Every resource granted, for a multi-resource request only. */
  resources?: ResourceAmount[];
  lease: number;
  /** Epoch milliseconds by the injected clock. */
  expires: number;
  /** Milliseconds spent queued. */
  waited: number;
  /** Re-admitted after a reconnect, not newly granted. */
  restored?: boolean;
  /**
   * A restore of a lease the allocator already had: its grant re-sent,
   * nothing newly admitted.
   */
  known?: boolean;
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
  /** The lease's id. */
  id: string;
  resname: string;
  amount: number;
  /** Every resource freed, for a multi-resource request only. */
  resources?: ResourceAmount[];
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
  /**
   * Several resources at once, all or nothing; when given, `resname` and
   * `amount` are ignored.
   */
  resources?: ResourceAmount[];
  /**
   * Higher goes first (default 0); ties in arrival order.  Never ahead of a
   * queue's head, which holds the reservation.
   */
  priority?: number;
  /** A restored lease keeps the id its grant had (see `restore()`). */
  id?: string;
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
  /**
   * Starts every lease id (default ""): a server gives each run its own,
   * so that ids stay unique across restarts.
   */
  idPrefix?: string;
  /**
   * Keep an expired lease counted this many ms past its end (default 0),
   * so that its holder, told by a builder that saw the grant a moment
   * later, has let go before the amount is granted again.
   */
  expiryMarginMs?: number;
  /**
   * Admit a restored lease without checking it against the budget: the
   * simulator's `restore-unbounded` mutant (see `src/shared/core_io.ts`),
   * a deliberate bug it must find.  Never set outside the simulator.
   */
  restoreUnbounded?: boolean;
}

/** A live lease in a status snapshot. */
export interface LeaseStatus {
  owner: string;
  cookie: string;
  /** The grant's id. */
  id: string;
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
  /** The most ever allocated at once, restored leases included. */
  peak: number;
  /**
   * Grants, restores included, that left more allocated than the budget:
   * an audit that stays 0 (a restore that would is refused) unless the
   * budget was lowered under live leases.
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
  id: string;
  resname: string;
  amount: number;
}
