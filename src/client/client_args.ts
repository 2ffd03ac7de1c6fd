/**
 * The command line of `sai-resource`: every form it takes, parsed into a
 * {@linkcode Command}.  Usage errors are `TypeError`s.
 *
 * @module
 */

import type { LeaseSpec } from "./lease_client.ts";
import {
  COOKIE_PATTERN,
  COOKIE_RULE,
  MAX_PRIORITY,
  MAX_UINT,
  NAME_PATTERN,
  type ResourceAmount,
} from "../protocol/protocol.ts";
import { parseFlags, positiveSeconds, wantsHelp } from "../shared/cli_flags.ts";
import { type Help, wantsVersion } from "../shared/help.ts";
import { DEFAULT_GRACE_SECONDS, type LaunchOptions } from "./launcher.ts";
import { DEFAULT_RELEASE_WAIT_SECONDS } from "./release.ts";
import { DEFAULT_CHECK_WAIT_SECONDS } from "./check.ts";

/** Everything `sai-resource --help` says. */
export const HELP: Help = {
  usage: [
    "sai-resource NAME AMOUNT LEASE_SECONDS [COOKIE | --scope SCOPE] [OPTIONS]",
    "sai-resource NAME=AMOUNT,... LEASE_SECONDS [COOKIE | --scope S] [OPTIONS]",
    "sai-resource NAME AMOUNT LEASE_SECONDS [COOKIE] [OPTIONS] -- CMD [ARG...]",
    "sai-resource --release COOKIE | --release-scope SCOPE [OPTIONS]",
    "sai-resource --check [--socket PATH] [--wait SECONDS]",
    "sai-resource --help | --version",
  ],
  about:
    "Takes a lease on AMOUNT of the resource NAME for LEASE_SECONDS from the builder (sai-builder) and blocks until it is granted.  Then a detached holder keeps it (the cookie is printed on stdout) until it expires, is released, or the process it was taken for (the nearest ctest, else the caller) is gone; with -- CMD it holds the lease while CMD runs; in the foreground form the started process holds it until signalled or its ctest ends.",
  options: [
    {
      flag: "--wait SECONDS",
      text: "give up waiting after this long (up to a week)",
      default: "600; 10 for --release, 5 for --check",
    },
    {
      flag: "--scope SCOPE",
      text: "the cookie is $SAI_RESOURCE_COOKIE_PREFIX + SCOPE",
    },
    {
      flag: "--priority N",
      text: "-1000 to 1000, higher first (write --priority=-2)",
      default: "0",
    },
    {
      flag: "--socket PATH|@NAME",
      text: "the builder's Unix socket",
      default: "$SAI_BUILDER_RESOURCE_PROXY",
    },
    {
      flag: "-q, --quiet",
      text: "no queue progress or link notices on stderr",
    },
    {
      flag: "-d, --debug LEVEL",
      text:
        "libwebsockets' log bits (upstream tooling passes -d1039): 0 is --quiet, 8 or 16 print every message; selects the foreground form unless --detach",
    },
    {
      flag: "--optional",
      text: "no socket is no error: nothing is leased (CMD runs ungated)",
    },
    {
      flag: "--foreground",
      text: "hold the lease in this process, until signalled or its ctest ends",
    },
    { flag: "--detach", text: "hold it in a detached holder, even with -d" },
    {
      flag: "--owner-pid PID",
      text: "the holder follows this process",
      default: "the nearest ctest, else the caller",
    },
    { flag: "--no-owner", text: "the holder follows no process" },
    {
      flag: "--kill-on-expiry",
      text: "launcher: stop CMD's process group when the lease ends",
    },
    {
      flag: "--grace SECONDS",
      text: "launcher: SIGTERM to SIGKILL with --kill-on-expiry",
      default: "10",
    },
    { flag: "--release COOKIE", text: "release a lease by its cookie" },
    {
      flag: "--release-scope SCOPE",
      text: "release the lease of --scope SCOPE",
    },
    {
      flag: "--strict",
      text: "--release fails (exit 1) if the lease had already expired",
    },
    {
      flag: "--check",
      text: "print the builder's name, server and link state",
    },
    { flag: "-h, --help", text: "this text" },
    { flag: "--version", text: "the version, and Deno's" },
  ],
  environment: [
    [
      "SAI_BUILDER_RESOURCE_PROXY",
      "the builder's socket, when --socket is not given",
    ],
    [
      "SAI_RESOURCE_COOKIE_PREFIX",
      "put before the cookies it makes up, and scopes",
    ],
    [
      "SAI_RESOURCE_FOREGROUND",
      "1: the foreground form; 0: a detached holder even with -d",
    ],
  ],
  exitCodes: [
    [
      "0",
      "granted (or released, or --optional with no socket); --check: linked",
    ],
    [
      "1",
      "refused, timed out, builder unreachable, no such lease to release; --check: not linked",
    ],
    ["2", "usage error; --check: no builder answered"],
    [
      "CMD's",
      "launcher form: CMD's status (128+N if signal N ended it; 126/127: it cannot be run or found)",
    ],
  ],
  more:
    "PATH may be @NAME, an abstract Unix socket (Linux).  See README.md, docs/ctest.md and docs/compatibility.md.",
};

/** The first usage line, for messages that show it. */
export const USAGE = `usage: ${HELP.usage[0]}`;

/**
 * Set to 1, makes an acquire hold the lease in the foreground (`--foreground`);
 * set to 0, in a detached holder even with `-d` (`--detach`).
 */
export const FOREGROUND_ENV = "SAI_RESOURCE_FOREGROUND";

/**
 * libwebsockets' log bits that `-d LEVEL` reads: LLL_INFO and LLL_DEBUG make
 * `sai-resource` verbose; 0 makes it quiet.
 */
const LLL_INFO = 8;
const LLL_DEBUG = 16;

const DEFAULT_WAIT_SECONDS = 600;

/** The builder's socket, when `--socket` is not given. */
export const SOCKET_ENV = "SAI_BUILDER_RESOURCE_PROXY";

/** Prepended to the cookies `sai-resource` makes up (see docs/ctest.md). */
export const COOKIE_PREFIX_ENV = "SAI_RESOURCE_COOKIE_PREFIX";

/** A parsed command line. */
export type Command =
  | { kind: "help" }
  | { kind: "version" }
  | {
    /** `--check`: the builder's name, server and link state. */
    kind: "check";
    socket: string;
    /** Give up after this long without an answer (upstream never answers). */
    waitSeconds: number;
  }
  | {
    kind: "release";
    cookie: string;
    socket: string;
    /** Fail, not warn, when the lease had already expired. */
    strict: boolean;
    /** Give up after this long without an answer (upstream never answers). */
    waitSeconds: number;
  }
  | {
    kind: "acquire";
    spec: LeaseSpec;
    socket: string;
    waitSeconds: number;
    quiet: boolean;
    /** `-d` with LLL_INFO or LLL_DEBUG: say what goes over the socket. */
    verbose: boolean;
    holder: boolean;
    /**
     * Hold the lease in this process (no detached holder): `--foreground`,
     * `SAI_RESOURCE_FOREGROUND=1`, or `-d LEVEL`, which only upstream's
     * tooling passes and whose scripts kill the PID they started.
     */
    foreground: boolean;
    /** Whose lease it is (see `owner_watch.ts`): the holder follows it. */
    owner: OwnerFlags;
  }
  | {
    kind: "launch";
    argv: string[];
    options: LaunchOptions;
  }
  | {
    /** `--optional` with no builder socket: succeed without a lease. */
    kind: "unmanaged";
    /** The command to run in launcher mode. */
    argv?: string[];
    quiet: boolean;
  };

/** `--owner-pid`, `--no-owner` and the holder's `--owner-start`. */
export interface OwnerFlags {
  pid?: number;
  /** Start time of `pid`, as the parent saw it (holder only). */
  start?: number;
  none: boolean;
}

/**
 * Splits the command line at the first `--`: what follows is the command to
 * launch, and must not be read as our options.
 */
export function splitLaunch(
  args: string[],
): { ours: string[]; argv: string[] | undefined } {
  const at = args.indexOf("--");
  if (at < 0) return { ours: args, argv: undefined };
  return { ours: args.slice(0, at), argv: args.slice(at + 1) };
}

/**
 * The longest `--wait` or `--grace`: a week.  Timers cannot run past about
 * 24.8 days, and no test should wait that long for a lease anyway.
 */
export const MAX_WAIT_SECONDS = 7 * 86_400;

function seconds(flag: string, value: string): number {
  const n = positiveSeconds(flag, value);
  if (n > MAX_WAIT_SECONDS) {
    throw new TypeError(
      `${flag} must be at most ${MAX_WAIT_SECONDS} seconds (a week), got "${value}"`,
    );
  }
  return n;
}

function checkedCookie(cookie: string, from: string): string {
  if (!COOKIE_PATTERN.test(cookie)) {
    throw new TypeError(
      `${from} must be ${COOKIE_RULE}, got "${cookie}"`,
    );
  }
  return cookie;
}

/** The cookie for `--scope SCOPE`: the prefix from the environment + SCOPE. */
function scopeCookie(
  scope: string,
  env: { get(key: string): string | undefined },
): string {
  if (!NAME_PATTERN.test(scope)) {
    throw new TypeError(
      `SCOPE must match ${NAME_PATTERN.source}, got "${scope}"`,
    );
  }
  return checkedCookie(
    (env.get(COOKIE_PREFIX_ENV) ?? "") + scope,
    `COOKIE (${COOKIE_PREFIX_ENV} + SCOPE)`,
  );
}

function positiveInt(name: string, value: string): number {
  if (!/^[1-9][0-9]*$/.test(value) || Number(value) > MAX_UINT) {
    throw new TypeError(
      `${name} must be a positive integer, got "${value}"`,
    );
  }
  return Number(value);
}

/** Parses `NAME=AMOUNT[,NAME=AMOUNT...]`. */
function parseResourceList(text: string): ResourceAmount[] {
  const resources = text.split(",").map((item) => {
    const [name = "", value = ""] = item.split("=");
    if (!NAME_PATTERN.test(name)) {
      throw new TypeError(
        `NAME must match ${NAME_PATTERN.source}, got "${name}"${
          amountHint(item)
        }`,
      );
    }
    return { resname: name, amount: positiveInt("AMOUNT", value) };
  });
  if (new Set(resources.map((r) => r.resname)).size < resources.length) {
    throw new TypeError(`a resource is named twice in "${text}"`);
  }
  return resources;
}

/** `--owner-start` (internal: parent to holder), clock ticks after boot. */
function startTicks(value: string): number {
  if (!/^[0-9]{1,20}$/.test(value)) {
    throw new TypeError(
      `--owner-start must be a non-negative integer, got "${value}"`,
    );
  }
  return Number(value);
}

function parsePriority(value: string): number {
  const priority = Number(value);
  if (!/^-?[0-9]+$/.test(value) || Math.abs(priority) > MAX_PRIORITY) {
    throw new TypeError(
      `--priority must be an integer from -${MAX_PRIORITY} to ${MAX_PRIORITY}, got "${value}"`,
    );
  }
  return priority;
}

/** The command line's options (each is in {@linkcode HELP}: a test checks). */
export const CLIENT_OPTIONS = {
  wait: { type: "string" },
  socket: { type: "string" },
  quiet: { type: "boolean", short: "q" },
  release: { type: "string" },
  "release-scope": { type: "string" },
  scope: { type: "string" },
  optional: { type: "boolean" },
  "kill-on-expiry": { type: "boolean" },
  grace: { type: "string" },
  holder: { type: "boolean" },
  priority: { type: "string" },
  foreground: { type: "boolean" },
  detach: { type: "boolean" },
  strict: { type: "boolean" },
  check: { type: "boolean" },
  // libwebsockets tooling passes -dLEVEL (a log bitmask) to every tool.
  debug: { type: "string", short: "d" },
  "owner-pid": { type: "string" },
  "no-owner": { type: "boolean" },
  // Internal, parent to holder: the owner's start time as the parent saw it.
  "owner-start": { type: "string" },
} as const;

/** Parses the command line; throws `TypeError` for usage errors. */
export function parseCommand(
  args: string[],
  env: { get(key: string): string | undefined },
): Command {
  const { ours, argv } = splitLaunch(args);
  const options = CLIENT_OPTIONS;
  if (wantsHelp(ours, options)) return { kind: "help" };
  if (wantsHelp(ours, options)) return { kind: "help" };
  if (wantsVersion(ours)) return { kind: "version" };
  const { values, positionals } = parseFlags({
    args: ours,
    strict: true,
    allowPositionals: true,
    options,
  });
  const level = values.debug === undefined ? undefined : logBits(values.debug);
  if (values.check) return checkCommand(values, { positionals, argv, env });
  if (argv !== undefined && argv.length === 0) {
    throw new TypeError("no command after --");
  }
  if (argv === undefined) {
    for (const flag of ["kill-on-expiry", "grace"] as const) {
      if (values[flag] !== undefined) {
        throw new TypeError(`--${flag} needs a command after --`);
      }
    }
  }
  const releasing = values.release !== undefined ||
    values["release-scope"] !== undefined;
  if (values.foreground && values.detach) {
    throw new TypeError("give --foreground or --detach, not both");
  }
  if (values.detach && (argv !== undefined || releasing)) {
    throw new TypeError("--detach is for the holder form (no -- CMD)");
  }
  // -d LEVEL means upstream's tooling, whose cleanup kills the PID it
  // started: hold in that process unless told otherwise.
  const foreground = argv === undefined && !releasing && !values.holder &&
    (values.foreground === true ||
      (!values.detach &&
        (onOff(env.get(FOREGROUND_ENV)) ?? level !== undefined)));
  // The owner is for a holder; a launcher or a foreground holder is the
  // process the job runs, and ends with it.
  if (argv !== undefined || releasing || foreground) {
    const why = !foreground || values.foreground
      ? ""
      : onOff(env.get(FOREGROUND_ENV))
      ? `; ${FOREGROUND_ENV} selects the foreground form: add --detach`
      : "; -d LEVEL selects the foreground form: add --detach";
    for (const flag of ["owner-pid", "no-owner"] as const) {
      if (values[flag] !== undefined) {
        throw new TypeError(
          `--${flag} is for the holder form (a lease that outlives the command)${why}`,
        );
      }
    }
  }
  if (values["owner-pid"] !== undefined && values["no-owner"]) {
    throw new TypeError("give --owner-pid or --no-owner, not both");
  }
  const owner: OwnerFlags = {
    none: values["no-owner"] ?? false,
    ...(values["owner-pid"] !== undefined &&
      { pid: positiveInt("--owner-pid", values["owner-pid"]) }),
    ...(values["owner-start"] !== undefined &&
      { start: startTicks(values["owner-start"]) }),
  };
  const socket = values.socket ?? env.get(SOCKET_ENV);
  const socketFrom = values.socket !== undefined ? "--socket" : SOCKET_ENV;
  const quiet = (values.quiet ?? false) || level === 0;
  const verbose = !quiet && level !== undefined &&
    (level & (LLL_INFO | LLL_DEBUG)) !== 0;
  if (releasing) {
    if (positionals.length > 0 || argv !== undefined) {
      throw new TypeError("--release takes no other arguments");
    }
    if (values.release !== undefined && values["release-scope"] !== undefined) {
      throw new TypeError("give --release or --release-scope, not both");
    }
    const cookie = values.release !== undefined
      ? checkedCookie(values.release, "COOKIE")
      : scopeCookie(values["release-scope"]!, env);
    if (!socket && values.optional) return { kind: "unmanaged", quiet };
    return {
      kind: "release",
      cookie,
      socket: needSocket(socket, socketFrom),
      strict: values.strict ?? false,
      waitSeconds: values.wait !== undefined
        ? seconds("--wait", values.wait)
        : DEFAULT_RELEASE_WAIT_SECONDS,
    };
  }
  if (values.strict) {
    throw new TypeError("--strict is for --release and --release-scope");
  }
  // NAME=AMOUNT[,NAME=AMOUNT...] LEASE_SECONDS [COOKIE]: several at once.
  const multi = positionals[0]?.includes("=") ?? false;
  const [min, max] = multi ? [2, 3] : [3, 4];
  if (positionals.length < min || positionals.length > max) {
    throw new TypeError(
      multi
        ? `expected NAME=AMOUNT[,NAME=AMOUNT...] LEASE_SECONDS [COOKIE], got ${positionals.length} argument(s)`
        : `expected NAME AMOUNT LEASE_SECONDS [COOKIE], got ${positionals.length} argument(s)${
          amountHint(positionals[0])
        }`,
    );
  }
  const resources = multi ? parseResourceList(positionals[0]!) : undefined;
  const [resname, amount, lease, given] = resources
    ? [
      resources[0]!.resname,
      String(resources[0]!.amount),
      ...positionals.slice(1),
    ] as [string, string, string, string?]
    : positionals as [string, string, string, string?];
  if (!NAME_PATTERN.test(resname)) {
    throw new TypeError(
      `NAME must match ${NAME_PATTERN.source}, got "${resname}"${
        amountHint(resname)
      }`,
    );
  }
  if (given !== undefined && values.scope !== undefined) {
    throw new TypeError("give COOKIE or --scope, not both");
  }
  const cookie = given !== undefined
    ? checkedCookie(given, "COOKIE")
    : values.scope !== undefined
    ? scopeCookie(values.scope, env)
    : checkedCookie(
      (env.get(COOKIE_PREFIX_ENV) ?? "") + crypto.randomUUID(),
      `COOKIE (${COOKIE_PREFIX_ENV} + a random UUID)`,
    );
  const waitSeconds = values.wait !== undefined
    ? seconds("--wait", values.wait)
    : DEFAULT_WAIT_SECONDS;
  const priority = values.priority === undefined
    ? 0
    : parsePriority(values.priority);
  const spec: LeaseSpec = {
    resname,
    amount: positiveInt("AMOUNT", amount),
    lease: positiveInt("LEASE_SECONDS", lease),
    cookie,
    ...(resources && resources.length > 1 && { resources }),
    ...(priority !== 0 && { priority }),
  };
  const graceSeconds = values.grace !== undefined
    ? seconds("--grace", values.grace)
    : DEFAULT_GRACE_SECONDS;
  if (!socket && values.optional) {
    return { kind: "unmanaged", ...(argv && { argv }), quiet };
  }
  if (argv !== undefined) {
    return {
      kind: "launch",
      argv,
      options: {
        socket: needSocket(socket, socketFrom),
        spec,
        waitSeconds,
        quiet,
        killOnExpiry: values["kill-on-expiry"] ?? false,
        graceSeconds,
      },
    };
  }
  return {
    kind: "acquire",
    spec,
    socket: needSocket(socket, socketFrom),
    waitSeconds,
    quiet,
    verbose,
    holder: values.holder ?? false,
    foreground,
    owner,
  };
}

/** The flags `--check` takes besides itself (`-d`: lws tooling passes it). */
const CHECK_FLAGS = new Set(["check", "socket", "wait", "debug", "quiet"]);

/** `--check [--socket PATH] [--wait SECONDS]`. */
function checkCommand(
  values: Record<string, string | boolean | undefined>,
  rest: {
    positionals: string[];
    argv: string[] | undefined;
    env: { get(key: string): string | undefined };
  },
): Command {
  const other = Object.keys(values).find((k) =>
    values[k] !== undefined && !CHECK_FLAGS.has(k)
  );
  if (rest.positionals.length > 0 || rest.argv !== undefined || other) {
    throw new TypeError(
      `--check takes only --socket and --wait, got ${
        other ? `--${other}` : `"${rest.argv ? "--" : rest.positionals[0]}"`
      }`,
    );
  }
  return {
    kind: "check",
    socket: needSocket(
      (values.socket as string | undefined) ?? rest.env.get(SOCKET_ENV),
      values.socket !== undefined ? "--socket" : SOCKET_ENV,
    ),
    waitSeconds: values.wait !== undefined
      ? seconds("--wait", values.wait as string)
      : DEFAULT_CHECK_WAIT_SECONDS,
  };
}

/** `-d LEVEL`: a libwebsockets log bitmask, a non-negative integer. */
function logBits(value: string): number {
  if (!/^[0-9]+$/.test(value) || Number(value) > MAX_UINT) {
    throw new TypeError(
      `-d must be a log level (a non-negative integer), got "${value}"`,
    );
  }
  return Number(value);
}

/** An on/off environment variable: on, off, or unset (anything else). */
function onOff(value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined;
  if (/^(1|true|yes|on)$/i.test(value.trim())) return true;
  if (/^(0|false|no|off)$/i.test(value.trim())) return false;
  return undefined;
}

function needSocket(socket: string | undefined, from: string): string {
  if (!socket) {
    throw new TypeError(
      `no builder socket: pass --socket PATH or set ${SOCKET_ENV}`,
    );
  }
  // Connecting to a URL as a path only says "No such file or directory".
  const url = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(socket);
  if (url || /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/.test(socket)) {
    throw new TypeError(
      `${from} must be the builder's Unix socket, a path or @NAME (sai-builder prints it as ${SOCKET_ENV}=PATH), got "${socket}": ${
        url ? "a URL" : "a HOST:PORT (for a file of that name write ./NAME)"
      } is what sai-builder --server takes`,
    );
  }
  return socket;
}

/**
 * `warmcat_conns:1` meant as `warmcat_conns=1`: the hint that says how a
 * resource and its amount are written, or "".
 */
function amountHint(text: string | undefined): string {
  const item = "[A-Za-z0-9_.-]{1,64}[:=][0-9]+";
  if (
    text === undefined || !text.includes(":") ||
    !new RegExp(`^${item}(,${item})*$`).test(text)
  ) {
    return "";
  }
  return `; a resource and its amount are written NAME=AMOUNT, as in "${
    text.replaceAll(":", "=")
  }"`;
}
