// deno-lint-ignore-file no-console -- an entry point: printing is its job
/**
 * `sai-server`: the central allocator that builders connect to.
 *
 * @module
 */

import { budgetsFromConfig, parseBudgets } from "./src/server/budgets.ts";
import { Logger, parseLevel } from "./src/shared/log.ts";
import {
  type FlagOptions,
  intInRange,
  parseFlags,
  parseLogFormat,
  positiveInt,
  readFlagFile,
  secondsInRange,
  wantsHelp,
} from "./src/shared/cli_flags.ts";
import { defaultStatePath } from "./src/server/state_file.ts";
import { parseTokenFile, type TokenEntry } from "./src/server/auth.ts";
import { parseTokenFile as parseAdminTokenFile } from "./src/server/admin.ts";
import { DEFAULT_MAX_BUILDERS, startServer } from "./src/server/server_app.ts";
import { startErrorMessage } from "./src/shared/listen_error.ts";
import { runStatus } from "./src/server/status_cli.ts";
import { POLICIES, type Policy } from "./src/allocator/policy.ts";
import { MAX_UINT } from "./src/protocol/protocol.ts";
import {
  formatHelp,
  type Help,
  usageError,
  versionLine,
  wantsVersion,
} from "./src/shared/help.ts";
import {
  DEFAULT_MAX_EVENT_STREAMS,
  DEFAULT_MAX_HTTP_CONNECTIONS,
  MAX_HTTP_CONNECTIONS,
} from "./src/server/http_admission.ts";

/** Everything `sai-server --help` says. */
export const HELP: Help = {
  usage: [
    "sai-server (--resources NAME=BUDGET,... | --config FILE) [OPTIONS]",
    "sai-server status [--server URL] [--json]",
    "sai-server --help | --version",
  ],
  about:
    "The central allocator: builders connect to it over a WebSocket (ws://HOST:PORT, printed at start) and it grants leases within each resource's budget.  The same port serves the status page (/), /api/status, /metrics and the admin API.",
  options: [
    {
      flag: "--resources NAME=BUDGET,...",
      text: "the resources and their budgets; overrides --config",
    },
    {
      flag: "--config FILE",
      text:
        'a Sai vhost config: its "com-warmcat-sai" protocol\'s "resources"; SIGHUP re-reads it',
    },
    {
      flag: "--listen HOST:PORT",
      text: "where to listen; port 0 picks one",
      default: "127.0.0.1:4460",
    },
    {
      flag: "--max-lease SECONDS",
      text: "longest lease granted (1 to 4294967295)",
      default: "86400",
    },
    {
      flag: "--policy backfill|fifo",
      text: "how each queue is served",
      default: "backfill",
    },
    {
      flag: "--heartbeat SECONDS",
      text: "a builder silent this long is dropped (0.1 to 3600)",
      default: "10",
    },
    {
      flag: "--builder-grace SECONDS",
      text:
        "a lost builder's leases stay counted this long plus a heartbeat; it fences at half (up to 86400)",
      default: "4 heartbeats",
    },
    {
      flag: "--reclaim-grace SECONDS",
      text: "after a crash, only restores for this long; 0: off (up to 86400)",
      default: "the builder grace",
    },
    {
      flag: "--state-file PATH",
      text: "tells a crash from a first start",
      default:
        "$STATE_DIRECTORY, $XDG_STATE_HOME or ~/.local/state, then sai-server/HOST_PORT.json; none with port 0",
    },
    {
      flag: "--max-queued-per-builder N",
      text: "requests one builder may have queued",
      default: "10000",
    },
    {
      flag: "--max-http-connections N",
      text: "HTTP requests served at once, and connections awaiting a head",
      default: String(DEFAULT_MAX_HTTP_CONNECTIONS),
    },
    {
      flag: "--max-event-streams N",
      text: "open /api/events streams",
      default: String(DEFAULT_MAX_EVENT_STREAMS),
    },
    {
      flag: "--max-builders N",
      text: "builders connected at once",
      default: String(DEFAULT_MAX_BUILDERS),
    },
    {
      flag: "--builder-tokens FILE",
      text:
        "builders must present a token (token or name:token per line); without it only loopback",
    },
    { flag: "--cert FILE --key FILE", text: "serve wss:// and https://" },
    {
      flag: "--admin-token TOKEN",
      text: "enables the admin API (at least 8 characters)",
    },
    { flag: "--admin-token-file FILE", text: "the same, from a file" },
    {
      flag: "--log-level LEVEL",
      text: "error, warn, info or debug",
      default: "info",
    },
    {
      flag: "--log-format text|json",
      text: "log lines on stderr",
      default: "text",
    },
    { flag: "-h, --help", text: "this text" },
    { flag: "--version", text: "the version, and Deno's" },
  ],
  environment: [
    ["STATE_DIRECTORY", "where the default state file goes (systemd sets it)"],
    ["XDG_STATE_HOME, HOME", "else there, or in ~/.local/state"],
    ["NO_COLOR", "no colour in the log"],
  ],
  exitCodes: [
    ["0", "stopped by SIGINT or SIGTERM"],
    ["1", "could not start (address in use, state file unusable)"],
    ["2", "usage error"],
  ],
  more:
    "Signals: SIGHUP re-reads --config.  See README.md and docs/operations.md.",
};

/** The command line's options (each is in {@linkcode HELP}: a test checks). */
export const OPTIONS = {
  resources: { type: "string" },
  config: { type: "string" },
  listen: { type: "string", default: "127.0.0.1:4460" },
  "max-lease": { type: "string", default: "86400" },
  policy: { type: "string", default: "backfill" },
  "log-level": { type: "string", default: "info" },
  "log-format": { type: "string", default: "text" },
  heartbeat: { type: "string", default: "10" },
  "builder-grace": { type: "string" },
  "reclaim-grace": { type: "string" },
  "state-file": { type: "string" },
  "max-queued-per-builder": { type: "string", default: "10000" },
  "max-http-connections": {
    type: "string",
    default: String(DEFAULT_MAX_HTTP_CONNECTIONS),
  },
  "max-event-streams": {
    type: "string",
    default: String(DEFAULT_MAX_EVENT_STREAMS),
  },
  "max-builders": { type: "string", default: String(DEFAULT_MAX_BUILDERS) },
  "builder-tokens": { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  "admin-token": { type: "string" },
  "admin-token-file": { type: "string" },
} as const satisfies FlagOptions;

/**
 * The duration options' ranges, in seconds: every timer they arm stays far
 * below what `setTimeout` takes (2³¹−1 ms, about 24.8 days).
 */
export const DURATION_RANGES = {
  heartbeat: { min: 0.1, max: 3600 },
  /** At least the heartbeat, too. */
  builderGrace: { min: 0.1, max: 86_400 },
  /** 0 turns the reclaim grace off. */
  reclaimGrace: { min: 0, max: 86_400 },
  /** Whole seconds, up to what the wire's unsigned int holds. */
  maxLease: { min: 1, max: MAX_UINT },
} as const;

/** Server settings from the command line. */
export interface ServerArgs {
  budgets: Map<string, number>;
  hostname: string;
  port: number;
  maxLease: number;
  policy: Policy;
  logger: Logger;
  heartbeat: number;
  builderGrace: number;
  reclaimGrace?: number;
  stateFile?: string;
  maxQueuedPerBuilder: number;
  maxHttpConnections: number;
  maxEventStreams: number;
  maxBuilders: number;
  builderTokens?: TokenEntry[];
  tls?: { cert: string; key: string };
  /** The config file SIGHUP re-reads, when budgets come from it. */
  configPath?: string;
  adminToken?: string;
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

/** Parses the command line and the config file it names. */
export async function parseServerArgs(args: string[]): Promise<ServerArgs> {
  const { values, positionals } = parseFlags({
    args,
    strict: true,
    allowPositionals: true,
    options: OPTIONS,
  });
  if (positionals.length > 0) {
    throw new TypeError(`unexpected argument "${positionals[0]}"`);
  }
  let budgets: Map<string, number>;
  if (values.resources !== undefined) {
    budgets = parseBudgets(values.resources);
  } else if (values.config !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(values.config);
    } catch (err) {
      throw new TypeError(
        `cannot read --config "${values.config}": ${(err as Error).message}`,
      );
    }
    try {
      budgets = budgetsFromConfig(text);
    } catch (err) {
      throw new TypeError(
        `--config "${values.config}": ${(err as Error).message}`,
      );
    }
  } else {
    throw new TypeError("--resources or --config is required");
  }
  const format = parseLogFormat(values["log-format"]);
  if ((values.cert === undefined) !== (values.key === undefined)) {
    throw new TypeError("--cert and --key must be given together");
  }
  const tokensFile = values["builder-tokens"];
  let builderTokens: TokenEntry[] | undefined;
  if (tokensFile !== undefined) {
    try {
      builderTokens = await parseTokenFile(
        await readFlagFile("--builder-tokens", tokensFile),
      );
    } catch (err) {
      throw new TypeError(
        `--builder-tokens "${tokensFile}": ${(err as Error).message}`,
      );
    }
  }
  let adminToken = values["admin-token"];
  const adminTokenFile = values["admin-token-file"];
  if (adminToken !== undefined && adminTokenFile !== undefined) {
    throw new TypeError("give --admin-token or --admin-token-file, not both");
  }
  if (adminToken !== undefined && !/^\S{8,}$/.test(adminToken)) {
    throw new TypeError(
      "--admin-token must be at least 8 non-space characters",
    );
  }
  if (adminTokenFile !== undefined) {
    adminToken = parseAdminTokenFile(
      await readFlagFile("--admin-token-file", adminTokenFile),
      adminTokenFile,
    );
  }
  const policy = POLICIES.get(values.policy);
  if (policy === undefined) {
    throw new TypeError(
      `--policy must be one of ${
        [...POLICIES.keys()].join(", ")
      }, got "${values.policy}"`,
    );
  }
  const heartbeat = secondsInRange(
    "--heartbeat",
    values.heartbeat,
    DURATION_RANGES.heartbeat,
  );
  const builderGrace = values["builder-grace"] === undefined
    ? Math.min(4 * heartbeat, DURATION_RANGES.builderGrace.max)
    : secondsInRange(
      "--builder-grace",
      values["builder-grace"],
      DURATION_RANGES.builderGrace,
    );
  if (builderGrace < heartbeat) {
    throw new TypeError(
      `--builder-grace must be at least --heartbeat (${heartbeat} s), got "${
        values["builder-grace"]
      }"`,
    );
  }
  const maxHttpConnections = intInRange(
    "--max-http-connections",
    values["max-http-connections"],
    { min: 1, max: MAX_HTTP_CONNECTIONS },
  );
  const maxEventStreams = intInRange(
    "--max-event-streams",
    values["max-event-streams"],
    { min: 1, max: maxHttpConnections, maxFrom: "--max-http-connections" },
  );
  const listen = parseListen(values.listen);
  const stateFile = values["state-file"] ??
    defaultStatePath(listen.hostname, listen.port);
  return {
    ...(values.resources === undefined && values.config !== undefined &&
      { configPath: values.config }),
    ...(adminToken !== undefined && { adminToken }),
    ...(builderTokens && { builderTokens }),
    ...(values.cert !== undefined && values.key !== undefined && {
      tls: {
        cert: await readFlagFile("--cert", values.cert),
        key: await readFlagFile("--key", values.key),
      },
    }),
    heartbeat,
    builderGrace,
    ...(values["reclaim-grace"] !== undefined && {
      reclaimGrace: secondsInRange(
        "--reclaim-grace",
        values["reclaim-grace"],
        DURATION_RANGES.reclaimGrace,
      ),
    }),
    ...(stateFile !== undefined && { stateFile }),
    maxQueuedPerBuilder: positiveInt(
      "--max-queued-per-builder",
      values["max-queued-per-builder"],
    ),
    maxHttpConnections,
    maxEventStreams,
    maxBuilders: intInRange("--max-builders", values["max-builders"], {
      min: 1,
      max: 100_000,
    }),
    budgets,
    policy,
    ...listen,
    maxLease: intInRange(
      "--max-lease",
      values["max-lease"],
      DURATION_RANGES.maxLease,
    ),
    logger: new Logger(parseLevel(values["log-level"]), {
      format,
    }),
  };
}

/** Runs `sai-server` until SIGINT or SIGTERM. */
export async function main(args: string[]): Promise<void> {
  if (args[0] === "status") {
    Deno.exit(
      await runStatus(args.slice(1), {
        out: (t) => Deno.stdout.writeSync(new TextEncoder().encode(t)),
        err: (t) => Deno.stderr.writeSync(new TextEncoder().encode(t)),
      }),
    );
  }
  if (wantsHelp(args, OPTIONS)) {
    console.log(formatHelp(HELP));
    return;
  }
  if (wantsVersion(args)) {
    console.log(versionLine("sai-server"));
    return;
  }
  let parsed: ServerArgs;
  try {
    parsed = await parseServerArgs(args);
  } catch (err) {
    console.error(usageError("sai-server", (err as Error).message));
    Deno.exit(2);
  }
  let server;
  try {
    server = await startServer(parsed);
  } catch (err) {
    const address = parsed.hostname.includes(":")
      ? `[${parsed.hostname}]:${parsed.port}`
      : `${parsed.hostname}:${parsed.port}`;
    console.error(`sai-server: ${startErrorMessage(err, address)}`);
    Deno.exit(err instanceof TypeError ? 2 : 1);
  }
  if (!parsed.builderTokens) {
    parsed.logger.warn(
      "no builder authentication (--builder-tokens): listening on loopback only",
    );
  }
  // After the overrides a state file kept (see docs/operations.md).
  const budgets = [...server.admin.budgets()].map(([n, b]) => `${n}=${b}`).join(
    ",",
  );

  console.log(
    `sai-server: listening on ${server.url} (resources ${budgets}, policy ${parsed.policy.name})`,
  );
  const stop = () => server.shutdown();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  // One reload at a time, in signal order: two SIGHUPs in a row (an edit,
  // then another) must not apply the older file's read last.
  let reloading = Promise.resolve();
  Deno.addSignalListener("SIGHUP", () => {
    reloading = reloading.then(() => reload(parsed, server)).catch((err) =>
      parsed.logger.error("SIGHUP: reload failed", {
        error: (err as Error).message,
      })
    );
  });
  await server.finished;
  Deno.exit(0);
}

/** SIGHUP: re-reads `--config` and applies its budgets by the admin rules. */
async function reload(
  parsed: ServerArgs,
  server: Awaited<ReturnType<typeof startServer>>,
): Promise<void> {
  const log = parsed.logger;
  const path = parsed.configPath;
  if (path === undefined) {
    log.warn("SIGHUP ignored: budgets do not come from --config");
    return;
  }
  let budgets;
  try {
    budgets = budgetsFromConfig(await Deno.readTextFile(path));
  } catch (err) {
    log.error("SIGHUP: config not applied; budgets unchanged", {
      config: path,
      error: (err as Error).message,
    });
    return;
  }
  log.info("SIGHUP: reloading budgets", { config: path });
  const { draining, kept } = server.reloadBudgets(budgets);
  for (const { resname, budget, config } of kept) {
    // The config's budget does not apply: say so, each reload.
    log.warn("SIGHUP: budget set through the admin API kept", {
      resname,
      budget,
      config,
      hint:
        `DELETE /api/resources/${resname}/override hands it back to the config`,
    });
  }
  for (const name of draining) {
    log.warn("resource not removed: leases are live", {
      resname: name,
      hint: "its budget is 0 until they end; reload again to remove it",
    });
  }
}

if (import.meta.main) await main(Deno.args);
