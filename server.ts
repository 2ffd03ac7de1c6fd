// deno-lint-ignore-file no-console -- an entry point: printing is its job
/**
 * `sai-server`: the central allocator that builders connect to.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { parseBudgets, resourcesFromConfig } from "./src/budgets.ts";
import { type LogFormat, Logger, parseLevel } from "./src/log.ts";
import { startServer } from "./src/server_app.ts";
import { POLICIES, type Policy } from "./src/policy.ts";

const USAGE =
  `usage: sai-server --resources NAME=BUDGET[,NAME=BUDGET...] [--config FILE]
                  [--listen HOST:PORT] [--max-lease SECONDS]
                  [--policy backfill|fifo]
                  [--log-level error|warn|info|debug] [--log-format text|json]`;

/** Server settings from the command line. */
export interface ServerArgs {
  budgets: Map<string, number>;
  hostname: string;
  port: number;
  maxLease: number;
  policy: Policy;
  logger: Logger;
}

/** Splits `HOST:PORT` (or `[V6]:PORT`); throws `TypeError` if malformed. */
export function parseListen(value: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):([0-9]{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new TypeError(`--listen must be HOST:PORT, got "${value}"`);
  }
  return { hostname: (m[1] ?? m[2])!, port };
}

function positiveInt(flag: string, value: string): number {
  if (!/^[1-9][0-9]*$/.test(value)) {
    throw new TypeError(`${flag} must be a positive integer, got "${value}"`);
  }
  return Number(value);
}

/** Parses the command line and the config file it names. */
export async function parseServerArgs(args: string[]): Promise<ServerArgs> {
  const { values, positionals } = parseArgs({
    args,
    strict: true,
    allowPositionals: true,
    options: {
      resources: { type: "string" },
      config: { type: "string" },
      listen: { type: "string", default: "127.0.0.1:4460" },
      "max-lease": { type: "string", default: "86400" },
      policy: { type: "string", default: "backfill" },
      "log-level": { type: "string", default: "info" },
      "log-format": { type: "string", default: "text" },
    },
  });
  if (positionals.length > 0) {
    throw new TypeError(`unexpected argument "${positionals[0]}"`);
  }
  let resources = values.resources;
  if (resources === undefined && values.config !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(values.config);
    } catch (err) {
      throw new TypeError(
        `cannot read --config "${values.config}": ${(err as Error).message}`,
      );
    }
    resources = resourcesFromConfig(text);
    if (resources === undefined) {
      throw new TypeError(
        `--config "${values.config}" has no "resources" in its "com-warmcat-sai" protocol options`,
      );
    }
  }
  if (resources === undefined) {
    throw new TypeError("--resources or --config is required");
  }
  const format = values["log-format"];
  if (format !== "text" && format !== "json") {
    throw new TypeError(`--log-format must be text or json, got "${format}"`);
  }
  const policy = POLICIES.get(values.policy);
  if (policy === undefined) {
    throw new TypeError(
      `--policy must be one of ${
        [...POLICIES.keys()].join(", ")
      }, got "${values.policy}"`,
    );
  }
  return {
    budgets: parseBudgets(resources),
    policy,
    ...parseListen(values.listen),
    maxLease: positiveInt("--max-lease", values["max-lease"]),
    logger: new Logger(parseLevel(values["log-level"]), {
      format: format as LogFormat,
    }),
  };
}

/** Runs `sai-server` until SIGINT or SIGTERM. */
export async function main(args: string[]): Promise<void> {
  let parsed: ServerArgs;
  try {
    parsed = await parseServerArgs(args);
  } catch (err) {
    console.error(`sai-server: ${(err as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
  let server;
  try {
    server = await startServer(parsed);
  } catch (err) {
    console.error(`sai-server: cannot listen: ${(err as Error).message}`);
    Deno.exit(1);
  }
  const budgets = [...parsed.budgets].map(([n, b]) => `${n}=${b}`).join(",");

  console.log(
    `sai-server: listening on ${server.url} (resources ${budgets}, policy ${parsed.policy.name})`,
  );
  const stop = () => server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await server.finished;
  Deno.exit(0);
}

if (import.meta.main) await main(Deno.args);
