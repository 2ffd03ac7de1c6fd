/**
 * Launcher mode of `sai-resource`: take a lease in this process, run a
 * command with the caller's stdin, stdout and stderr, and give the lease back
 * the moment the command exits.  No holder process: the lease lives exactly
 * as long as the command, which is what a ctest `TEST_LAUNCHER`-style prefix
 * needs.
 *
 * @module
 */

import {
  acquire,
  AcquireError,
  type LeaseSpec,
  specAmounts,
  specNames,
} from "./lease_client.ts";
import { afterSeconds } from "../shared/timers.ts";
import { linkLine } from "./link_line.ts";

/** Signals forwarded to the command, with their numbers for exit codes. */
const FORWARDED = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
type Forwarded = keyof typeof FORWARDED;

/** Exit code when the lease is refused, timed out or unreachable. */
export const EXIT_NOT_GRANTED = 1;
/** Exit code when the command cannot be found (as in POSIX shells). */
export const EXIT_NOT_FOUND = 127;
/** Exit code when the command exists but cannot be run. */
export const EXIT_CANNOT_RUN = 126;

/** Default seconds between SIGTERM and SIGKILL with `--kill-on-expiry`. */
export const DEFAULT_GRACE_SECONDS = 10;

/** Options for {@linkcode launch}. */
export interface LaunchOptions {
  socket: string;
  spec: LeaseSpec;
  waitSeconds: number;
  quiet: boolean;
  /** SIGTERM the command when the lease ends before it exits. */
  killOnExpiry: boolean;
  /** Seconds from that SIGTERM to SIGKILL. */
  graceSeconds: number;
}

const encoder = new TextEncoder();

function printErr(line: string): void {
  Deno.stderr.writeSync(encoder.encode(`sai-resource: ${line}\n`));
}

/**
 * Sends `sig` to the process group `child` leads (see {@linkcode spawn}): the
 * command and whatever it started that did not leave the group.
 */
function signalGroup(child: Deno.ChildProcess, sig: Deno.Signal): void {
  try {
    Deno.kill(-child.pid, sig);
  } catch {
    // The whole group is gone already.
  }
}

/**
 * Catches SIGHUP, SIGINT and SIGTERM for as long as it is in use: before a
 * child exists it reports the signal (so the caller can withdraw its
 * request), afterwards it passes the signal on to the child's process group.
 * That group is not ours, so a terminal's Ctrl-C reaches the command only
 * this way, and only once.
 */
class SignalRelay implements Disposable {
  #child: Deno.ChildProcess | undefined;
  #handlers: [Forwarded, () => void][] = [];
  /** The first signal received, if any. */
  received: Forwarded | undefined;
  /** Whether a signal was passed on to the child's process group. */
  relayed = false;
  readonly aborted = new AbortController();

  constructor() {
    for (const sig of Object.keys(FORWARDED) as Forwarded[]) {
      const handler = () => {
        this.received ??= sig;
        if (this.#child) {
          this.relayed = true;
          signalGroup(this.#child, sig);
        } else {
          this.aborted.abort(new Error(`received ${sig}`));
        }
      };
      Deno.addSignalListener(sig, handler);
      this.#handlers.push([sig, handler]);
    }
  }

  attach(child: Deno.ChildProcess): void {
    this.#child = child;
  }

  [Symbol.dispose](): void {
    for (const [sig, handler] of this.#handlers) {
      Deno.removeSignalListener(sig, handler);
    }
  }
}

/** Exit code for a process ended by `sig`, as shells report it. */
export function signalExitCode(sig: Forwarded): number {
  return 128 + FORWARDED[sig];
}

/**
 * Whether `cmd` names a file we could run, as the shell would look it up:
 * checked before taking a lease, so a typo holds no budget.
 */
function findCommand(cmd: string): boolean {
  const candidates = cmd.includes("/")
    ? [cmd]
    : (Deno.env.get("PATH") ?? "").split(":").filter(Boolean).map((dir) =>
      `${dir}/${cmd}`
    );
  return candidates.some((path) => {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  });
}

/**
 * Spawns `argv` with inherited stdio, in a process group of its own so that
 * the signals meant for it reach what it starts too (a shell's background
 * jobs): `detached` makes Deno call setsid(2) in the child, which leads a new
 * session and a new group whose id is its pid.  Returns the child, or an exit
 * code when it could not be started.
 */
function spawn(argv: string[]): Deno.ChildProcess | number {
  const [cmd, ...args] = argv as [string, ...string[]];
  try {
    return new Deno.Command(cmd, {
      args,
      detached: true,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (err) {
    printErr(`cannot run "${cmd}": ${(err as Error).message}`);
    return err instanceof Deno.errors.NotFound
      ? EXIT_NOT_FOUND
      : EXIT_CANNOT_RUN;
  }
}

/**
 * Runs `argv` without a lease (no builder socket, `--optional`), still
 * forwarding signals and passing its exit status through.
 */
export async function runUnmanaged(argv: string[]): Promise<number> {
  using relay = new SignalRelay();
  const child = spawn(argv);
  if (typeof child === "number") return child;
  relay.attach(child);
  return (await child.status).code;
}

/**
 * Takes the lease, runs `argv` while holding it, releases it when `argv`
 * exits and returns `argv`'s exit code (128 + N when killed by signal N).
 * Returns {@linkcode EXIT_NOT_GRANTED} without running `argv` when the lease
 * is refused, times out or the builder cannot be reached.
 */
export async function launch(
  argv: string[],
  options: LaunchOptions,
): Promise<number> {
  const { spec, quiet } = options;
  if (!findCommand(argv[0]!)) {
    printErr(`cannot run "${argv[0]}": not found; no lease was taken`);
    return EXIT_NOT_FOUND;
  }
  using relay = new SignalRelay();
  let lastProgress = "";
  let lease;
  try {
    lease = await acquire(options.socket, spec, {
      signal: AbortSignal.any([
        AbortSignal.timeout(options.waitSeconds * 1000),
        relay.aborted.signal,
      ]),
      onQueued: (q) => {
        const line = `queued for ${specNames(spec)}: position ${q.position}` +
          (q.eta >= 0 ? `, about ${q.eta} s` : "");
        if (!quiet && line !== lastProgress) printErr(line);
        lastProgress = line;
      },
      onLink: (link) => {
        if (!quiet) printErr(linkLine(link));
      },
    });
  } catch (err) {
    if (relay.received) {
      printErr(`${relay.received} while waiting; the request was withdrawn`);
      return signalExitCode(relay.received);
    }
    const message = err instanceof AcquireError
      ? err.message
      : `Cannot get a lease: ${(err as Error).message}`;
    printErr(message);
    return EXIT_NOT_GRANTED;
  }
  if (relay.received) {
    // A signal raced with the grant: do not start what was meant to stop.
    lease.release();
    return signalExitCode(relay.received);
  }
  if (!quiet) {
    printErr(
      `granted ${
        specAmounts(spec)
      } for ${spec.lease} s (cookie ${spec.cookie})`,
    );
  }
  const child = spawn(argv);
  if (typeof child === "number") {
    lease.release();
    return child;
  }
  relay.attach(child);

  let exited = false;
  let reported = false;
  /** Whether --kill-on-expiry has sent its SIGTERM. */
  let killing = false;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const onLeaseEnd = (why: string) => {
    // Once, whichever of the builder's notice and our clock comes first.
    if (exited || reported) return;
    reported = true;
    lease.release();
    printErr(
      `the lease on ${specNames(spec)} (cookie ${spec.cookie}) ${why} while "${
        argv[0]
      }" (pid ${child.pid}) is still running` +
        (options.killOnExpiry
          ? `; sending SIGTERM, then SIGKILL after ${options.graceSeconds} s`
          : "; it goes on without the lease (--kill-on-expiry stops it)"),
    );
    if (!options.killOnExpiry) return;
    killing = true;
    signalGroup(child, "SIGTERM");
    killTimer = setTimeout(
      () => signalGroup(child, "SIGKILL"),
      options.graceSeconds * 1000,
    );
  };
  lease.ended.then((how) => {
    if (how === "released") return;
    onLeaseEnd(
      how === "expired"
        ? "expired"
        : "was lost (the builder closed the connection: released by cookie or by an operator, or the builder stopped)",
    );
  });
  // A real Sai builder never says a lease expired: watch the clock as well.
  const cancelLocalEnd = afterSeconds(spec.lease, () => onLeaseEnd("expired"));
  try {
    const status = await child.status;
    exited = true;
    // The command was told to stop (its lease ended, or a signal was passed
    // on) and is gone; what it left behind in its group would go on using
    // the resource with no lease: kill it now, before the lease is released.
    if (killing || relay.relayed) signalGroup(child, "SIGKILL");
    return status.code;
  } finally {
    cancelLocalEnd();
    clearTimeout(killTimer);
    lease.release();
  }
}
