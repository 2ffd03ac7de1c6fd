/**
 * Sai Resource Manager: lease named, budgeted resources across builders.
 *
 * The allocator is pure and can be driven directly; the server, builder and
 * client shells are exported for embedding and tests.
 *
 * @module
 */

export {
  Allocator,
  type AllocatorOptions,
  type ExpiryOutcome,
  type GrantedLease,
  type GrantOutcome,
  type HeadStatus,
  type LeaseRequest,
  type LeaseStatus,
  type Outcome,
  type QueuedStatus,
  type RefusalOutcome,
  type RefusalReason,
  type ResourceStatus,
} from "./src/allocator/allocator.ts";
export {
  backfill,
  type BackfillOptions,
  createBackfill,
  fifo,
  type LeaseView,
  POLICIES,
  type Policy,
  type QueuedView,
  reservation,
  type ResourceView,
} from "./src/allocator/policy.ts";
export {
  MAX_BUDGET,
  parseBudgets,
  resourcesFromConfig,
} from "./src/server/budgets.ts";
export * from "./src/protocol/protocol.ts";
export { JsonObjectSplitter } from "./src/protocol/json_splitter.ts";
export {
  acquire,
  AcquireError,
  type AcquireOptions,
  type FailureKind,
  HeldLease,
  type LeaseEnd,
  type LeaseSpec,
} from "./src/client/lease_client.ts";
export {
  type SaiServer,
  type ServerOptions,
  startServer,
} from "./src/server/server_app.ts";
export type {
  ServerStats,
  StatusDocument,
  StatusLease,
  StatusQueued,
  StatusResource,
} from "./src/server/status_document.ts";
export {
  type BuilderOptions,
  NameInUseError,
  type SaiBuilder,
  startBuilder,
} from "./src/builder/builder_app.ts";
export {
  defaultSocketPath,
  UnsafeSocketDirError,
} from "./src/builder/socket_listen.ts";

export {
  type Fields,
  type Level,
  type LogFormat,
  Logger,
} from "./src/shared/log.ts";
