/**
 * Operator actions (issue #5), as the admin API and SIGHUP use them:
 * budgets set live, resources added and removed, leases force-released.
 * Each is logged with who asked.
 *
 * @module
 */

import type { Allocator, Outcome } from "../allocator/allocator.ts";
import type { Logger } from "../shared/log.ts";
import type {
  Actor,
  AdminTarget,
  BudgetChange,
  ForceReleaseResult,
  RemoveResult,
} from "./admin.ts";
import type { QueueProgress } from "./progress.ts";
import type { Session } from "./sessions.ts";
import type { ServerStats } from "./status_document.ts";
import { SCHEMA, type ServerMessage } from "../protocol/protocol.ts";

/** What operator actions need from the server. */
export interface OperatorContext {
  allocator: Allocator;
  log: Logger;
  stats: ServerStats;
  /** The builders connected now. */
  sessions: () => Iterable<Session>;
  send: (session: Session, msg: ServerMessage) => void;
  /** Delivers outcomes (grants the action allowed). */
  apply: (outcomes: Outcome[]) => void;
  progress: QueueProgress;
}

/** The server's side of the admin API. */
export class OperatorActions implements AdminTarget {
  #opts: OperatorContext;

  constructor(context: OperatorContext) {
    this.#opts = context;
  }

  #audit(action: string, by: Actor, fields: Record<string, unknown>): void {
    this.#opts.log.info("admin", {
      action,
      by: by.addr,
      ...by.operator !== undefined && { operator: by.operator },
      ...fields,
    });
  }

  setBudget(name: string, budget: number, by: Actor): BudgetChange {
    const { previous, outcomes } = this.#opts.allocator.setBudget(name, budget);
    this.#audit(previous === undefined ? "add-resource" : "set-budget", by, {
      resname: name,
      budget,
      previous: previous ?? null,
    });
    this.#opts.progress.touch(name);
    this.#opts.apply(outcomes);
    return {
      resource: name,
      budget,
      previous: previous ?? null,
      granted: outcomes.filter((o) => o.type === "grant").length,
      refused: outcomes.filter((o) => o.type === "refuse").length,
    };
  }

  removeResource(name: string, by: Actor): RemoveResult {
    const leases = this.#opts.allocator.status().find((r) => r.name === name)
      ?.leases.length ?? 0;
    const { result, outcomes } = this.#opts.allocator.removeResource(name);
    this.#audit("remove-resource", by, { resname: name, result });
    this.#opts.apply(outcomes);
    if (result === "busy") return { result, leases };
    if (result === "unknown") return { result };
    return { result, refused: outcomes.length };
  }

  budgets(): Map<string, number> {
    return this.#opts.allocator.budgets();
  }

  forceRelease(builder: string, cookie: string, by: Actor): ForceReleaseResult {
    const sessions = [...this.#opts.sessions()];
    // Ids and names share a shape (a builder may be named "b3"): take
    // neither over the other, refuse what matches several builders.
    const matches = sessions.filter((s) =>
      s.publicId === builder || s.name === builder
    );
    if (matches.length !== 1) {
      this.#audit("force-release", by, {
        builder,
        cookie,
        result: matches.length === 0 ? "unknown-builder" : "ambiguous-builder",
      });
      return matches.length === 0
        ? { result: "unknown-builder" }
        : { result: "ambiguous-builder", ids: matches.map((s) => s.publicId) };
    }
    const session = matches[0]!;
    const { lease, outcomes } = this.#opts.allocator.forceRelease(
      session.owner!,
      cookie,
    );
    this.#audit("force-release", by, {
      builder: session.publicId,
      name: session.name,
      cookie,
      result: lease ? "released" : "no-lease",
    });
    if (!lease) return { result: "no-lease" };
    this.#opts.stats.releases++;
    this.#opts.stats.forcedReleases++;
    this.#opts.progress.forget(session.owner!, cookie);
    this.#opts.progress.touch(lease.resname);
    // A refusal after the grant: the builder drops the client, so the
    // holder's connection closes and it exits.
    this.#opts.send(session, {
      schema: SCHEMA,
      cookie,
      error: "Lease revoked by an operator",
      id: lease.id,
    });
    this.#opts.apply(outcomes);
    return {
      result: "released",
      builder: session.name ?? session.publicId,
      resource: lease.resname,
      amount: lease.amount,
    };
  }
}
