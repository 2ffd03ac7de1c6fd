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
  ResourceStatus,
} from "../allocator/allocator.ts";
import type { OwnerProcess } from "../protocol/protocol.ts";
import type { BudgetSource } from "./core/budget_sources.ts";
import type { ServerStats } from "./core/stats.ts";

export { type ServerStats, zeroStats } from "./core/stats.ts";

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
