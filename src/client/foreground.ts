/**
 * Foreground holding (`--foreground`, `SAI_RESOURCE_FOREGROUND=1`, or `-d
 * LEVEL`, which only upstream's tooling passes): the process that was
 * started takes the lease and holds it itself, with no detached holder.
 * This is what upstream Sai's CMake scripts expect: they start
 * `sai-resource` in the background, record its PID, and later kill that PID
 * to give the lease back.
 *
 * - SIGTERM, SIGINT or SIGHUP: release (or withdraw) and exit 0 once
 *   granted, 128+N while still queued.
 * - The nearest `ctest` above it exits (when there is one): release and
 *   exit 0, or withdraw and exit 1 while still queued.  Upstream declares
 *   every setup test as a setup of one fixture, so ctest may run a scope's
 *   cleanup before its setup; nothing then kills what the setup started,
 *   and it must not outlive the run.
 * - The builder goes away while the lease is held: exit 1.
 * - The lease expires: close the connection (upstream's builder never
 *   says `expired`; the close is what frees the lease there), warn on
 *   stderr and keep running until signalled or ctest exits, since the
 *   caller's cleanup expects a live PID.
 *
 * @module
 */

import {
  acquire,
  AcquireError,
  type HeldLease,
  specAmounts,
  specNames,
} from "./lease_client.ts";
import { signalExitCode } from "./launcher.ts";
import { afterSeconds } from "../shared/timers.ts";
import { monotonic } from "../shared/clock.ts";
import type { Command } from "./client_args.ts";
import { linkLine } from "./link_line.ts";
import { encoder, EXIT_FAILED, EXIT_OK, printErr } from "./_common.ts";
import {
  ctestAncestor,
  describeOwner,
  type Owner,
  watchOwner,
} from "./owner_watch.ts";

type AcquireCommand = Extract<Command, { kind: "acquire" }>;

const SIGNALS = ["SIGTERM", "SIGINT", "SIGHUP"] as const;
type HoldSignal = typeof SIGNALS[number];

/** Waits for the first of SIGTERM, SIGINT and SIGHUP while in use. */
class Signals implements Disposable {
  readonly received = Promise.withResolvers<HoldSignal>();
  readonly aborted = new AbortController();
  /** The first signal received, if any. */
  first: HoldSignal | undefined;
  #handlers: [HoldSignal, () => void][] = [];

  constructor() {
    for (const sig of SIGNALS) {
      const handler = () => {
        this.first ??= sig;
        this.received.resolve(sig);
        this.aborted.abort(new Error(`received ${sig}`));
      };
      Deno.addSignalListener(sig, handler);
      this.#handlers.push([sig, handler]);
    }
  }

  [Symbol.dispose](): void {
    for (const [sig, handler] of this.#handlers) {
      Deno.removeSignalListener(sig, handler);
    }
  }
}

/** Runs an acquire in the foreground; returns the exit code. */
export async function runForeground(command: AcquireCommand): Promise<number> {
  // First of all: once the shell that started us in the background exits,
  // we are re-parented and the way up to ctest is lost.
  const ctest = ctestAncestor(Deno.ppid);
  const ctestGone = new AbortController();
  const stopWatch = ctest
    ? watchOwner(
      ctest,
      () => ctestGone.abort(new Error(`${describeOwner(ctest)} exited`)),
    )
    : () => {};
  try {
    return await acquireAndHold(command, ctest, ctestGone.signal);
  } finally {
    stopWatch();
  }
}

async function acquireAndHold(
  command: AcquireCommand,
  ctest: Owner | undefined,
  ctestGone: AbortSignal,
): Promise<number> {
  const { quiet, verbose } = command;
  const spec = ctest
    ? { ...command.spec, process: { pid: ctest.pid, name: ctest.name } }
    : command.spec;
  using signals = new Signals();
  let lastProgress = "";
  let lease: HeldLease;
  try {
    lease = await acquire(command.socket, spec, {
      signal: AbortSignal.any([
        AbortSignal.timeout(command.waitSeconds * 1000),
        signals.aborted.signal,
        ctestGone,
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
      ...(verbose && {
        onMessage: (msg) =>
          printErr(`from the builder: ${JSON.stringify(msg)}`),
      }),
    });
  } catch (err) {
    if (signals.first) {
      printErr(`${signals.first} while waiting; the request was withdrawn`);
      return signalExitCode(signals.first);
    }
    if (ctest && ctestGone.aborted) {
      printErr(
        `${
          describeOwner(ctest)
        } exited while waiting; the request was withdrawn`,
      );
      return EXIT_FAILED;
    }
    printErr(
      err instanceof AcquireError
        ? err.message
        : `Cannot get a lease: ${(err as Error).message}`,
    );
    return EXIT_FAILED;
  }
  if (!quiet) {
    printErr(
      `granted ${
        specAmounts(spec)
      } for ${spec.lease} s (cookie ${spec.cookie}); holding it (pid ${Deno.pid}) until signalled${
        ctest ? ` or ${describeOwner(ctest)} exits` : ""
      }`,
    );
  }
  try {
    Deno.stdout.writeSync(encoder.encode(spec.cookie + "\n"));
  } catch {
    // Nobody reads our stdout; holding is what matters.
  }
  return await hold(lease, command, signals, ctest && { ctest, ctestGone });
}

async function hold(
  lease: HeldLease,
  command: AcquireCommand,
  signals: Signals,
  follow: { ctest: Owner; ctestGone: AbortSignal } | undefined,
): Promise<number> {
  const { spec } = command;
  const grantedAt = monotonic();
  let expired = false;
  const onExpired = (how: string) => {
    if (expired) return;
    expired = true;
    // Close our connection: that is what ends the lease at an upstream Sai
    // builder, which never says `expired` (ours has ended it already).
    lease.release();
    printErr(
      `the lease on ${specNames(spec)} (cookie ${spec.cookie}) ${how} after ${
        Math.round((monotonic() - grantedAt) / 1000)
      } s: what it gates runs ungated from now; still running until signalled${
        follow ? ` or ${describeOwner(follow.ctest)} exits` : ""
      }`,
    );
  };
  // A real Sai builder never says the lease expired: watch our own clock.
  const cancelLocalEnd = afterSeconds(
    spec.lease + 1,
    () => onExpired("has run out (LEASE_SECONDS passed)"),
  );
  const ctestGone = new Promise<"ctest gone">((resolve) => {
    if (!follow) return;
    if (follow.ctestGone.aborted) resolve("ctest gone");
    follow.ctestGone.addEventListener(
      "abort",
      () => resolve("ctest gone"),
      { once: true },
    );
  });
  // Keeps the event loop alive while we only wait for signals.
  const keepAlive = setInterval(() => {}, 3_600_000);
  try {
    for (;;) {
      const next = await Promise.race([
        signals.received.promise,
        ctestGone,
        expired ? new Promise<never>(() => {}) : lease.ended,
      ]);
      if (next === "expired") {
        onExpired("expired (the builder said so)");
        continue;
      }
      if (next === "released" || next === "closed") {
        if (expired) continue;
        printErr(
          `the builder closed the connection: the lease on ${
            specNames(spec)
          } (cookie ${spec.cookie}) is gone`,
        );
        return EXIT_FAILED;
      }
      if (next === "ctest gone") {
        // The run is over, and whatever would have signalled us with it.
        if (!expired) await lease.releaseFor("owner gone");
        if (!command.quiet) {
          printErr(
            `${describeOwner(follow!.ctest)} exited: ${
              expired ? "the lease on " : "released "
            }${specNames(spec)} (cookie ${spec.cookie})${
              expired ? " had ended already" : ""
            }`,
          );
        }
        return EXIT_OK;
      }
      lease.release();
      if (!command.quiet) {
        printErr(
          `${next}: released ${specNames(spec)} (cookie ${spec.cookie})`,
        );
      }
      return EXIT_OK;
    }
  } finally {
    cancelLocalEnd();
    clearInterval(keepAlive);
  }
}
