/**
 * Parses budgets: `name=integer[,name=integer…]`, the Sai server's
 * `resources` option, given on the command line or in a vhost config.
 *
 * @module
 */

import { NAME_PATTERN } from "../protocol/protocol.ts";

/** Largest budget accepted. */
export const MAX_BUDGET = 1_000_000_000;

/**
 * Parses `warmcat_conns=32,db=4` into a map of budgets.  Throws a
 * `SyntaxError` for anything else.
 */
export function parseBudgets(text: string): Map<string, number> {
  const budgets = new Map<string, number>();
  if (text.trim() === "") {
    throw new SyntaxError("Cannot parse resources: the list is empty");
  }
  for (const raw of text.split(",")) {
    const item = raw.trim();
    const eq = item.indexOf("=");
    if (eq < 0) {
      throw new SyntaxError(
        `Cannot parse resources: expected NAME=BUDGET, got "${item}"`,
      );
    }
    const name = item.slice(0, eq).trim();
    const value = item.slice(eq + 1).trim();
    if (!NAME_PATTERN.test(name)) {
      throw new SyntaxError(
        `Cannot parse resources: name must match ${NAME_PATTERN.source}, got "${name}"`,
      );
    }
    if (!/^[0-9]+$/.test(value) || Number(value) > MAX_BUDGET) {
      throw new SyntaxError(
        `Cannot parse resources: budget of "${name}" must be an integer from 0 to ${MAX_BUDGET}, got "${value}"`,
      );
    }
    if (budgets.has(name)) {
      throw new SyntaxError(
        `Cannot parse resources: "${name}" is given twice`,
      );
    }
    budgets.set(name, Number(value));
  }
  return budgets;
}

/**
 * Finds the `resources` option of the `com-warmcat-sai` protocol in a Sai
 * server vhost config (JSON), or undefined if it has none.
 */
export function resourcesFromConfig(json: string): string | undefined {
  let config: unknown;
  try {
    config = JSON.parse(json);
  } catch (err) {
    throw new SyntaxError(
      `Cannot parse config: not valid JSON (${(err as Error).message})`,
    );
  }
  const vhosts = (config as { vhosts?: unknown })?.vhosts;
  const candidates = Array.isArray(vhosts) ? vhosts : [config];
  for (const vhost of candidates) {
    const protocols = (vhost as { "ws-protocols"?: unknown })?.["ws-protocols"];
    if (!Array.isArray(protocols)) continue;
    for (const protocol of protocols) {
      const sai = (protocol as Record<string, unknown>)?.["com-warmcat-sai"];
      const resources = (sai as { resources?: unknown })?.resources;
      if (resources === undefined) continue;
      if (typeof resources !== "string") {
        throw new SyntaxError(
          'Cannot parse config: "resources" of "com-warmcat-sai" must be a string',
        );
      }
      return resources;
    }
  }
  return undefined;
}
