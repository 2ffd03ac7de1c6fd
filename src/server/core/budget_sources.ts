/**
 * Where each budget comes from: the config (`--resources`, or `--config`
 * and its SIGHUP reloads) or an operator's admin API call, which wins until
 * it is cleared through the API.  Overrides are kept in the state file, so
 * they outlive a restart.  Pure: the operator actions apply what it says.
 *
 * @module
 */

/** Largest budget accepted. */
export const MAX_BUDGET = 1_000_000_000;

/** Where a resource's budget comes from, as `/api/status` says. */
export type BudgetSource = "config" | "admin";

/**
 * The config's budgets and the admin API's overrides: by resource name, a
 * budget, or null for a resource removed through the API.
 */
export class BudgetSources {
  #config: Map<string, number>;
  #overrides = new Map<string, number | null>();

  constructor(config: Map<string, number>) {
    this.#config = new Map(config);
  }

  /** The config's budgets, before any override. */
  get config(): ReadonlyMap<string, number> {
    return this.#config;
  }

  /** A new config (SIGHUP): overrides stay. */
  setConfig(config: Map<string, number>): void {
    this.#config = new Map(config);
  }

  /** The overrides, in the order they were first made. */
  get overrides(): ReadonlyMap<string, number | null> {
    return this.#overrides;
  }

  /** Records what the admin API did: a budget set, or (null) a removal. */
  override(name: string, budget: number | null): void {
    this.#overrides.set(name, budget);
  }

  /**
   * The admin API removed a resource: the removal overrides the config if
   * the config names it; else nothing is left to override.
   */
  removed(name: string): void {
    if (this.#config.has(name)) this.#overrides.set(name, null);
    else this.#overrides.delete(name);
  }

  /** Drops an override; returns it, or undefined if there was none. */
  clear(name: string): number | null | undefined {
    const previous = this.#overrides.get(name);
    this.#overrides.delete(name);
    return previous;
  }

  /** Where `name`'s budget comes from. */
  source(name: string): BudgetSource {
    return this.#overrides.has(name) ? "admin" : "config";
  }

  /** The config's budget for `name`, or null if the config does not name it. */
  configBudget(name: string): number | null {
    return this.#config.get(name) ?? null;
  }

  /**
   * The budgets in force: the config's with each override applied (a
   * removal drops the name), then the names only the admin API added.
   */
  effective(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [name, budget] of this.#config) {
      const o = this.#overrides.get(name);
      if (o === undefined) out.set(name, budget);
      else if (o !== null) out.set(name, o);
    }
    for (const [name, o] of this.#overrides) {
      if (o !== null && !out.has(name)) out.set(name, o);
    }
    return out;
  }

  /** The overrides as the state file stores them. */
  toRecord(): Record<string, number | null> {
    // fromEntries defines own properties: a resource named __proto__ too.
    return Object.fromEntries(this.#overrides);
  }
}
