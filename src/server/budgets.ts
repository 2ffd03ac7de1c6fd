/**
 * Parses budgets: `name=integer[,name=integer…]`, the Sai server's
 * `resources` option, given on the command line or in a vhost config.
 *
 * @module
 */

import { NAME_PATTERN } from "../protocol/protocol.ts";
import { MAX_BUDGET } from "./core/budget_sources.ts";

export { MAX_BUDGET };

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
 * Where a `--config` file's budgets are, as a jq path: the `resources`
 * option of the `com-warmcat-sai` protocol of a vhost.  A file holding a
 * single vhost object (no `vhosts`) is read the same way.
 */
export const CONFIG_RESOURCES_PATH =
  '.vhosts[]."ws-protocols"[]."com-warmcat-sai".resources';

/** The smallest config with budgets, for messages. */
const CONFIG_EXAMPLE =
  '{"vhosts":[{"ws-protocols":[{"com-warmcat-sai":{"resources":"warmcat_conns=4"}}]}]}';

/**
 * Drops lwsws-style comments: `#` outside a string starts a comment that
 * runs to the end of the line (upstream Sai's config files have them).
 */
export function stripComments(text: string): string {
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      out += c;
      if (c === "\\" && i + 1 < text.length) out += text[++i];
      else if (c === '"') inString = false;
    } else if (c === "#") {
      while (i + 1 < text.length && text[i + 1] !== "\n") i++;
    } else {
      if (c === '"') inString = true;
      out += c;
    }
  }
  return out;
}

/**
 * Finds the `resources` option of the `com-warmcat-sai` protocol in a Sai
 * server vhost config (JSON, `#` comments allowed), or undefined if it has
 * none: at {@linkcode CONFIG_RESOURCES_PATH}, the first vhost's that has it.
 */
export function resourcesFromConfig(json: string): string | undefined {
  let config: unknown;
  try {
    config = JSON.parse(stripComments(json));
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
          `Cannot parse config: ${CONFIG_RESOURCES_PATH} must be a string such as "warmcat_conns=4", got ${
            JSON.stringify(resources)
          }`,
        );
      }
      return resources;
    }
  }
  return undefined;
}

/**
 * The budgets of a Sai server vhost config.  Throws `SyntaxError` if it
 * cannot be parsed or has none, saying where they are expected.
 */
export function budgetsFromConfig(json: string): Map<string, number> {
  const resources = resourcesFromConfig(json);
  if (resources === undefined) {
    throw new SyntaxError(
      `Cannot find budgets: expected "resources" at ${CONFIG_RESOURCES_PATH}, as in ${CONFIG_EXAMPLE}`,
    );
  }
  return parseBudgets(resources);
}
