/**
 * `sai-resource`: ask the builder for a lease and block until it is granted
 * (exit 0) or refused / timed out (exit 1).
 *
 * Deno cannot fork, so the process that ctest runs (the parent) re-spawns
 * itself as a detached holder.  The holder connects and makes the request
 * itself, reports to the parent over its stdout pipe, and keeps the
 * connection (so the lease) open after the parent exits.  Its stdio is never
 * the caller's: ctest waits for every process that holds its pipes.
 *
 * With `-- CMD [ARGS...]` it is a launcher instead (`launcher.ts`): no
 * holder, the lease lasts as long as CMD.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  acquire,
  AcquireError,
  type LeaseSpec,
  specAmounts,
  specNames,
} from "./lease_client.ts";
import {
  COOKIE_PATTERN,
  MAX_PRIORITY,
  MAX_UINT,
  NAME_PATTERN,
  type ResourceAmount,
} from "../protocol/protocol.ts";
import { positiveSeconds } from "../shared/cli_flags.ts";
import { DEFAULT_RELEASE_WAIT_SECONDS, releaseCookie } from "./release.ts";
import {
  chooseOwner,
  describeOwner,
  type Owner,
  ownerFor,
  watchOwner,
} from "./owner_watch.ts";
import {
  afterSeconds,
  DEFAULT_GRACE_SECONDS,
  launch,
  type LaunchOptions,
  runUnmanaged,
} from "./launcher.ts";

/** Exit codes. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

export const USAGE =
  `usage: sai-resource NAME AMOUNT LEASE_SECONDS [COOKIE | --scope SCOPE] [--wait SECONDS] [--priority N] [--socket PATH] [--quiet] [--optional] [--owner-pid PID | --no-owner]
       sai-resource NAME=AMOUNT[,NAME=AMOUNT...] LEASE_SECONDS [COOKIE | --scope SCOPE] [OPTIONS]
       sai-resource NAME AMOUNT LEASE_SECONDS [COOKIE | --scope SCOPE] [OPTIONS] [--kill-on-expiry] [--grace SECONDS] -- CMD [ARGS...]
       sai-resource (--release COOKIE | --release-scope SCOPE) [--wait SECONDS] [--socket PATH] [--optional]`;

const DEFAULT_WAIT_SECONDS = 600;

/** Prepended to the cookies `sai-resource` makes up (see docs/ctest.md). */
export const COOKIE_PREFIX_ENV = "SAI_RESOURCE_COOKIE_PREFIX";

/** A parsed command line. */
export type Command =
  | { kind: "help" }
  | { kind: "release"; cookie: string; socket: string; waitSeconds: number }
  | {
    kind: "acquire";
    spec: LeaseSpec;
    socket: string;
    waitSeconds: number;
    quiet: boolean;
    holder: boolean;
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
      `${from} must be 1 to 64 printable ASCII characters other than '"' and '\\', got "${cookie}"`,
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
        `NAME must match ${NAME_PATTERN.source}, got "${name}"`,
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

/** Parses the command line; throws `TypeError` for usage errors. */
export function parseCommand(
  args: string[],
  env: { get(key: string): string | undefined },
): Command {
  const { ours, argv } = splitLaunch(args);
  const { values, positionals } = parseArgs({
    args: ours,
    strict: true,
    allowPositionals: true,
    options: {
      wait: { type: "string" },
      socket: { type: "string" },
      quiet: { type: "boolean", short: "q" },
      release: { type: "string" },
      "release-scope": { type: "string" },
      scope: { type: "string" },
      optional: { type: "boolean" },
      "kill-on-expiry": { type: "boolean" },
      grace: { type: "string" },
      help: { type: "boolean", short: "h" },
      holder: { type: "boolean" },
      priority: { type: "string" },
      "owner-pid": { type: "string" },
      "no-owner": { type: "boolean" },
      "owner-start": { type: "string" },
    },
  });
  if (values.help) return { kind: "help" };
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
  if (
    argv !== undefined || values.release !== undefined ||
    values["release-scope"] !== undefined
  ) {
    for (const flag of ["owner-pid", "no-owner"] as const) {
      if (values[flag] !== undefined) {
        throw new TypeError(
          `--${flag} is for the holder form (a lease that outlives the command)`,
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
  const socket = values.socket ?? env.get("SAI_BUILDER_RESOURCE_PROXY");
  const quiet = values.quiet ?? false;
  if (values.release !== undefined || values["release-scope"] !== undefined) {
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
      socket: needSocket(socket),
      waitSeconds: values.wait !== undefined
        ? seconds("--wait", values.wait)
        : DEFAULT_RELEASE_WAIT_SECONDS,
    };
  }
  // NAME=AMOUNT[,NAME=AMOUNT...] LEASE_SECONDS [COOKIE]: several at once.
  const multi = positionals[0]?.includes("=") ?? false;
  const [min, max] = multi ? [2, 3] : [3, 4];
  if (positionals.length < min || positionals.length > max) {
    throw new TypeError(
      multi
        ? `expected NAME=AMOUNT[,NAME=AMOUNT...] LEASE_SECONDS [COOKIE], got ${positionals.length} argument(s)`
        : `expected NAME AMOUNT LEASE_SECONDS [COOKIE], got ${positionals.length} argument(s)`,
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
      `NAME must match ${NAME_PATTERN.source}, got "${resname}"`,
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
        socket: needSocket(socket),
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
    socket: needSocket(socket),
    waitSeconds,
    quiet,
    holder: values.holder ?? false,
    owner,
  };
}

function needSocket(socket: string | undefined): string {
  if (!socket) {
    throw new TypeError(
      "no builder socket: pass --socket PATH or set SAI_BUILDER_RESOURCE_PROXY",
    );
  }
  return socket;
}

/** What the holder tells the parent, one JSON line each. */
type HolderReport =
  | { event: "queued"; position: number; eta: number }
  | { event: "granted"; amount: number; expires: number }
  | { event: "failed"; kind: string; message: string };

const encoder = new TextEncoder();

function printErr(line: string): void {
  Deno.stderr.writeSync(encoder.encode(`sai-resource: ${line}\n`));
}

/** Runs `sai-resource`; returns the exit code. */
export async function runClient(args: string[]): Promise<number> {
  let command: Command;
  try {
    command = parseCommand(args, Deno.env);
  } catch (err) {
    printErr((err as Error).message);
    Deno.stderr.writeSync(encoder.encode(USAGE + "\n"));
    return EXIT_USAGE;
  }
  switch (command.kind) {
    case "help":
      Deno.stdout.writeSync(encoder.encode(USAGE + "\n"));
      return EXIT_OK;
    case "release":
      try {
        await releaseCookie(command.socket, command.cookie, command);
        return EXIT_OK;
      } catch (err) {
        printErr((err as Error).message);
        return EXIT_FAILED;
      }
    case "launch":
      return await launch(command.argv, command.options);
    case "unmanaged":
      if (!command.quiet) {
        printErr(
          "no builder socket (SAI_BUILDER_RESOURCE_PROXY is not set): --optional, so going ahead without a lease",
        );
      }
      return command.argv ? await runUnmanaged(command.argv) : EXIT_OK;
    case "acquire":
      return command.holder
        ? await runHolder(command)
        : await runParent(command);
  }
}

/**
 * The command that re-runs this program as a holder.  `denoFlags` (such as
 * `--v8-flags=…`) go to `deno run` when running from source; the benchmark
 * uses them to measure holders exactly as this spawns them.
 */
export function holderCommand(
  args: string[],
  options: { denoFlags?: string[] } = {},
): { exe: string; args: string[] } {
  const exe = Deno.execPath();
  if (Deno.build.standalone) return { exe, args: ["--holder", ...args] };
  const script = new URL("../../client.ts", import.meta.url);
  return {
    exe,
    args: [
      "run",
      // All, not read: Deno reads /proc (the owner watch) only with all.
      // The holder runs the same code as its parent, which may already run
      // any command (launcher mode, --allow-run).
      "--allow-all",
      "--no-config",
      "--quiet",
      ...(options.denoFlags ?? []),
      script.href,
      "--holder",
      ...args,
    ],
  };
}

async function runParent(
  command: Extract<Command, { kind: "acquire" }>,
): Promise<number> {
  const { spec, quiet } = command;
  // Whose lease this is: decided here, where the caller's process tree is.
  const owner = chooseOwner({
    parent: Deno.ppid,
    noOwner: command.owner.none,
    ...(command.owner.pid !== undefined && { ownerPid: command.owner.pid }),
  });
  // The holder must use the same cookie and socket we settled on.
  const holderArgs = [
    ...(spec.resources
      ? [spec.resources.map((r) => `${r.resname}=${r.amount}`).join(",")]
      : [spec.resname, String(spec.amount)]),
    String(spec.lease),
    spec.cookie,
    "--socket",
    command.socket,
    "--wait",
    String(command.waitSeconds),
    ...(spec.priority ? [`--priority=${spec.priority}`] : []),
    ...(owner.kind === "watch"
      ? [
        "--owner-pid",
        String(owner.owner.pid),
        "--owner-start",
        String(owner.owner.start),
      ]
      : ["--no-owner"]),
  ];
  const { exe, args: argv } = holderCommand(holderArgs);
  const child = new Deno.Command(exe, {
    args: argv,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
    detached: true,
  }).spawn();
  const writer = child.stdin.getWriter();
  // Backstop: a holder that never reports is killed, which withdraws it.
  const backstop = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, command.waitSeconds * 1000 + 10_000);
  let lastProgress = "";
  try {
    for await (const report of readReports(child.stdout)) {
      if (report.event === "queued") {
        const line =
          `queued for ${specNames(spec)}: position ${report.position}` +
          (report.eta >= 0 ? `, about ${report.eta} s` : "");
        if (!quiet && line !== lastProgress) printErr(line);
        lastProgress = line;
        continue;
      }
      if (report.event === "granted") {
        await writer.write(encoder.encode("ok\n"));
        await writer.close();
        child.unref();
        if (!quiet) {
          printErr(
            `granted ${
              specAmounts(spec)
            } for ${spec.lease} s (cookie ${spec.cookie})` +
              (owner.kind === "watch"
                ? `; held while ${describeOwner(owner.owner)} runs`
                : ""),
          );
        }
        if (owner.kind === "none" && owner.reason) {
          printErr(
            `${owner.reason}: the holder keeps the lease until it is released or expires`,
          );
        }
        Deno.stdout.writeSync(encoder.encode(spec.cookie + "\n"));
        return EXIT_OK;
      }
      printErr(report.message);
      return EXIT_FAILED;
    }
    const status = await child.status;
    printErr(
      `the holder exited (code ${status.code}) before the lease was granted`,
    );
    return EXIT_FAILED;
  } finally {
    clearTimeout(backstop);
  }
}

async function* readReports(
  stream: ReadableStream<Uint8Array>,
): AsyncGenerator<HolderReport> {
  let pending = "";
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      pending += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.trim()) yield JSON.parse(line) as HolderReport;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function report(r: HolderReport): void {
  try {
    Deno.stdout.writeSync(encoder.encode(JSON.stringify(r) + "\n"));
  } catch {
    // The parent is gone; stdin's end tells us too.
  }
}

/**
 * Resolves true when the parent acknowledges the grant, false when it is
 * gone (its end of our stdin closed).
 */
async function parentAck(): Promise<boolean> {
  const buf = new Uint8Array(16);
  let seen = "";
  for (;;) {
    let n: number | null;
    try {
      n = await Deno.stdin.read(buf);
    } catch {
      return false;
    }
    if (n === null) return false;
    seen += new TextDecoder().decode(buf.subarray(0, n));
    if (seen.includes("ok\n")) return true;
  }
}

async function runHolder(
  command: Extract<Command, { kind: "acquire" }>,
): Promise<number> {
  const owner = holderOwner(command.owner);
  const spec: LeaseSpec = owner
    ? { ...command.spec, process: { pid: owner.pid, name: owner.name } }
    : command.spec;
  // The owner gone, before the grant: withdraw; after it: give the lease
  // back at once (a cancelled CI job must not keep it until it expires).
  const ownerGone = new AbortController();
  const stopWatch = owner
    ? watchOwner(
      owner,
      () => ownerGone.abort(new Error(`${describeOwner(owner)} exited`)),
    )
    : () => {};
  try {
    return await holdLease(command, spec, ownerGone.signal);
  } finally {
    stopWatch();
  }
}

/** The owner the parent chose for us, or none. */
function holderOwner(flags: OwnerFlags): Owner | undefined {
  if (flags.none || flags.pid === undefined) return undefined;
  return ownerFor(flags.pid, flags.start);
}

async function holdLease(
  command: Extract<Command, { kind: "acquire" }>,
  spec: LeaseSpec,
  ownerGone: AbortSignal,
): Promise<number> {
  const parentGone = new AbortController();
  const ack = parentAck();
  // Before the grant, the parent's end of our stdin closing means it died
  // (ctest's timeout killed it): withdraw instead of holding for nobody.
  ack.then((ok) => {
    if (!ok) parentGone.abort(new Error("the caller exited"));
  });
  let lease;
  try {
    lease = await acquire(command.socket, spec, {
      signal: AbortSignal.any([
        AbortSignal.timeout(command.waitSeconds * 1000),
        parentGone.signal,
        ownerGone,
      ]),
      onQueued: (q) => report({ event: "queued", ...q }),
    });
  } catch (err) {
    const kind = err instanceof AcquireError ? err.kind : "failed";
    report({ event: "failed", kind, message: (err as Error).message });
    return EXIT_FAILED;
  }
  // A real Sai builder never says the lease expired: stop holding at the
  // declared end ourselves, counted from the grant (even a parent that
  // never acknowledges cannot make us hold past it).
  // afterSeconds, not setTimeout: a lease may outlast setTimeout's limit.
  const cancelLocalEnd = afterSeconds(spec.lease + 1, () => lease.release());
  report({
    event: "granted",
    amount: lease.grant.amount,
    expires: lease.grant.expires,
  });
  if (!(await ack)) {
    cancelLocalEnd();
    lease.release();
    return EXIT_FAILED;
  }
  try {
    Deno.stdout.close();
  } catch { /* closed */ }
  const onOwnerGone = () => lease.releaseFor("owner gone");
  if (ownerGone.aborted) onOwnerGone();
  ownerGone.addEventListener("abort", onOwnerGone, { once: true });
  await lease.ended;
  cancelLocalEnd();
  return EXIT_OK;
}
