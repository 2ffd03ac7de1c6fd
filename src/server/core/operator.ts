/**
 * Operator actions (issue #5), as the admin API and SIGHUP use them:
 * budgets set live, resources added and removed, leases force-released.
 * Each is logged once, with who asked.  What the admin API sets overrides
 * the config (SIGHUP keeps it) until it is cleared through the API, and is
 * kept in the state file (issue #21).
 *
 * @module
 */

import type { Allocator, Outcome } from "../../allocator/allocator.ts";
import type { Log } from "./log.ts";
import {
  type Actor,
  applyBudgets,
  type BudgetChange,
  type BudgetTarget,
  type ClearResult,
  type ForceReleaseResult,
  type RemoveResult,
} from "./admin_rules.ts";
import { type BudgetSource, BudgetSources } from "./budget_sources.ts";
import type { QueueProgress } from "./progress.ts";
import type { ServerStats } from "./stats.ts";
import { SCHEMA, type ServerMessage } from "../../protocol/protocol.ts";

/** A connected builder, as an operator names it. */
export interface OperatorSession {
  /** Its session (the allocator's owner). */
  owner: string | undefined;
  publicId: string;
  name: string | undefined;
}

/** What operator actions need from the server. */
export interface OperatorContext {
  allocator: Allocator;
  log: Log;
  stats: ServerStats;
  /** The builders connected now. */
  sessions: () => Iterable<OperatorSession>;
  /** Sends to a connected builder, by its owner. */
  send: (owner: string, msg: ServerMessage) => void;
  /** Delivers outcomes (grants the action allowed). */
  apply: (outcomes: Outcome[]) => void;
  progress: QueueProgress;
  /** Budgets from `--resources` or `--config`, before any override. */
  config: Map<string, number>;
  /** The overrides changed: the state file must record them. */
  persist: () => void;
}

/** A resource that keeps an override through a new config (SIGHUP). */
export interface KeptOverride {
  resname: string;
  /** The override: a budget, or null for a resource removed through the API. */
  budget: number | null;
  /** The config's budget, or null if the config does not name it. */
  config: number | null;
}

/** The server's side of the admin API. */
export class OperatorActions implements BudgetTarget {
  #opts: OperatorContext;
  #sources: BudgetSources;
  /** SIGHUP's target: applies the config without recording overrides. */
  #config: BudgetTarget = {
    budgets: () => this.budgets(),
    setBudget: (name, budget, by) => this.#setBudget(name, budget, by),
    removeResource: (name, by) => this.#removeResource(name, by),
  };

  constructor(context: OperatorContext) {
    this.#opts = context;
    this.#sources = new BudgetSources(context.config);
  }

  /** Where `name`'s budget comes from. */
  source(name: string): BudgetSource {
    return this.#sources.source(name);
  }

  /** The config's budget for `name`, or null if the config does not name it. */
  configBudget(name: string): number | null {
    return this.#sources.configBudget(name);
  }

  /** The overrides, as the state file records them. */
  overrides(): Record<string, number | null> {
    return this.#sources.toRecord();
  }

  /**
   * Applies the overrides a state file recorded, at start (no lease is
   * live yet): one line each, none of the admin action lines.
   */
  restore(overrides: Record<string, number | null>): void {
    for (const [name, budget] of Object.entries(overrides)) {
      this.#sources.override(name, budget);
      if (budget === null) this.#opts.allocator.removeResource(name);
      else this.#opts.allocator.setBudget(name, budget);
      this.#opts.progress.touch(name);
      this.#opts.log.info("budget set through the admin API kept", {
        resname: name,
        budget,
        config: this.#sources.configBudget(name),
        from: "state file",
      });
    }
  }

  /**
   * A new config (SIGHUP), applied by the admin rules as actions by `by`;
   * overrides win.  Returns the resources left draining (removed from the
   * config while leased: budget 0) and those that keep an override.
   */
  reload(
    config: Map<string, number>,
    by: Actor,
  ): { draining: string[]; kept: KeptOverride[] } {
    this.#sources.setConfig(config);
    const { draining } = applyBudgets(
      this.#config,
      this.#sources.effective(),
      by,
    );
    const kept = [...this.#sources.overrides].map(([resname, budget]) => ({
      resname,
      budget,
      config: this.#sources.configBudget(resname),
    }));
    return { draining, kept };
  }

  #persist(): void {
    this.#opts.persist();
  }

  #audit(action: string, by: Actor, fields: Record<string, unknown>): void {
    this.#opts.log.info("admin", {
      action,
      by: by.addr,
      ...by.operator !== undefined && { operator: by.operator },
      ...fields,
    });
  }

  /** The admin API sets a budget: an override. */
  setBudget(name: string, budget: number, by: Actor): BudgetChange {
    const change = this.#setBudget(name, budget, by);
    this.#sources.override(name, budget);
    this.#persist();
    return change;
  }

  #setBudget(name: string, budget: number, by: Actor): BudgetChange {
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

  /** The admin API removes a resource: an override if the config names it. */
  removeResource(name: string, by: Actor): RemoveResult {
    const result = this.#removeResource(name, by);
    if (result.result === "removed") {
      this.#sources.removed(name);
      this.#persist();
    }
    return result;
  }

  /**
   * The admin API hands a resource back to the config: its budget, or, if
   * the config does not name it, removal (budget 0 while leases are live).
   */
  clearOverride(name: string, by: Actor): ClearResult {
    const override = this.#sources.clear(name);
    if (override === undefined) {
      this.#audit("clear-override", by, { resname: name, result: "none" });
      return { result: "none" };
    }
    this.#persist();
    const budget = this.#sources.configBudget(name);
    const allocator = this.#opts.allocator;
    let outcomes: Outcome[] = [];
    let result: "config" | "removed" | "draining" = "config";
    if (budget !== null) {
      outcomes = allocator.setBudget(name, budget).outcomes;
    } else {
      const removed = allocator.removeResource(name);
      outcomes = removed.outcomes;
      result = "removed";
      if (removed.result === "busy") {
        outcomes = allocator.setBudget(name, 0).outcomes;
        result = "draining";
      }
    }
    this.#audit("clear-override", by, {
      resname: name,
      override,
      budget,
      result,
    });
    this.#opts.progress.touch(name);
    this.#opts.apply(outcomes);
    return {
      result,
      resource: name,
      budget,
      override,
      granted: outcomes.filter((o) => o.type === "grant").length,
      refused: outcomes.filter((o) => o.type === "refuse").length,
    };
  }

  #removeResource(name: string, by: Actor): RemoveResult {
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
    this.#opts.send(session.owner!, {
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
