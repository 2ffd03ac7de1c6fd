/**
 * The `/api/status` document: what the status page, `sai-server status`,
 * the metrics and the tests read.  Its own module so that none of them
 * depends on the server shell, and the shell not on them in a circle.
 *
 * @module
 */

import type {
  LeaseStatus,
  QueuedStatus,
  RefusalReason,
  ResourceStatus,
} from "../allocator/allocator.ts";
import type { OwnerProcess } from "../protocol/protocol.ts";
import type { BudgetSource } from "./core/budget_sources.ts";

/** Counters since start, for `/api/status` and metrics. */
export interface ServerStats {
  grants: number;
  refusals: Partial<Record<RefusalReason, number>>;
  expiries: number;
  releases: number;
  withdrawals: number;
  /** Leases ended by an operator (also counted in `releases`). */
  forcedReleases: number;
  /**
   * Leases given back because the process they were held for was gone (a
   * cancelled CI job, a killed ctest); also counted in `releases`.
   */
  ownerGone: number;
  /** Leases newly admitted by a builder's restore after a reconnect. */
  restores: number;
  /**
   * Leases ended because their builder was gone past the builder grace,
   * or did not re-send them when it came back.  With these,
   * `grants + restores − releases − expiries − drops` is the number of
   * live leases.
   */
  drops: number;
}

/** Counters at start: all zero. */
export function zeroStats(): ServerStats {
  return {
    grants: 0,
    refusals: {},
    expiries: 0,
    releases: 0,
    withdrawals: 0,
    forcedReleases: 0,
    ownerGone: 0,
    restores: 0,
    drops: 0,
  };
}

/**
 * A lease in `/api/status`: the allocator's view plus the builder's name
 * and, for our holders, the process it is held for (released when that
 * process is gone).
 */
export type StatusLease = LeaseStatus & {
  builder: string;
  process?: OwnerProcess;
};
/** A queued request in `/api/status`, with the builder's name. */
export type StatusQueued = QueuedStatus & {
  builder: string;
  process?: OwnerProcess;
};
/** A resource in `/api/status`. */
export type StatusResource = Omit<ResourceStatus, "leases" | "queue"> & {
  /**
   * Where the budget comes from: `config` (`--resources` or `--config`) or
   * `admin` (set through the admin API, which wins until cleared).  Added in
   * version 1 by issue #21.
   */
  budgetSource: BudgetSource;
  /** The config's budget, or null if the config does not name it. */
  configBudget: number | null;
  leases: StatusLease[];
  queue: StatusQueued[];
};

/** The `/api/status` document. */
export interface StatusDocument {
  version: 1;
  time: number;
  /** Until when (epoch ms) only restores are admitted, or null. */
  reclaimUntil: number | null;
  policy: string;
  builders: { id: string; name: string; connectedAt: number }[];
  resources: StatusResource[];
  stats: ServerStats;
}
