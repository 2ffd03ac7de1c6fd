/**
 * The admin API's actions as the core takes them: who asked, what each
 * action returns, and how a whole new config (SIGHUP) is applied as
 * actions.  The HTTP side (tokens, bodies, answers) is the shell's
 * `admin.ts`.
 *
 * @module
 */

/** Who asked for an admin action, for the log. */
export interface Actor {
  /** The peer's address, `HOST:PORT`. */
  addr: string;
  /** The optional `X-Sai-Operator` header: a name for the log. */
  operator?: string;
}

/** Result of changing a budget. */
export interface BudgetChange {
  resource: string;
  budget: number;
  previous: number | null;
  granted: number;
  refused: number;
}

/** Result of removing a resource. */
export type RemoveResult =
  | { result: "removed"; refused: number }
  | { result: "busy"; leases: number }
  | { result: "unknown" };

/** Result of force-releasing a lease. */
export type ForceReleaseResult =
  | { result: "released"; builder: string; resource: string; amount: number }
  | { result: "unknown-builder" }
  | { result: "ambiguous-builder"; ids: string[] }
  | { result: "no-lease" };

/** Result of handing a resource's budget back to the config. */
export type ClearResult =
  | { result: "none" }
  | {
    /**
     * `config`: the config's budget applies; `removed`: the config does
     * not name it; `draining`: nor, but leases are live (budget 0).
     */
    result: "config" | "removed" | "draining";
    resource: string;
    /** The config's budget, or null if it does not name the resource. */
    budget: number | null;
    /** The override cleared: a budget, or null for a removal. */
    override: number | null;
    granted: number;
    refused: number;
  };

/** What budgets are applied to. */
export interface BudgetTarget {
  /** Current budgets by resource name. */
  budgets(): Map<string, number>;
  setBudget(name: string, budget: number, by: Actor): BudgetChange;
  removeResource(name: string, by: Actor): RemoveResult;
}

/**
 * Applies a whole new set of budgets (SIGHUP) as admin actions: changed
 * budgets are set, new names added, missing names removed, or, while they
 * still hold leases, set to 0 to drain (returned, so the caller can warn;
 * the next reload removes them).
 */
export function applyBudgets(
  target: BudgetTarget,
  budgets: Map<string, number>,
  by: Actor,
): { draining: string[] } {
  const current = target.budgets();
  for (const [name, budget] of budgets) {
    if (current.get(name) !== budget) target.setBudget(name, budget, by);
  }
  const draining: string[] = [];
  for (const [name, budget] of current) {
    if (budgets.has(name)) continue;
    if (target.removeResource(name, by).result !== "busy") continue;
    if (budget !== 0) target.setBudget(name, 0, by);
    draining.push(name);
  }
  return { draining };
}
