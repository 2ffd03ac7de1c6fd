/**
 * The detached holder: the process `sai-resource` re-spawns to make the
 * request and keep the connection (so the lease) open after the caller
 * exits.  It reports to its parent as JSON lines on its stdout.
 *
 * @module
 */

import { acquire, AcquireError, type LeaseSpec } from "./lease_client.ts";
import type { LinkState } from "../protocol/protocol.ts";
import { afterSeconds } from "../shared/timers.ts";
import type { Command, OwnerFlags } from "./client_args.ts";
import {
  describeOwner,
  type Owner,
  ownerFor,
  watchOwner,
} from "./owner_watch.ts";
import { encoder, EXIT_FAILED, EXIT_OK } from "./_common.ts";
import { PROGRAMS } from "../shared/permissions.ts";

/** What the holder tells the parent, one JSON line each. */
export type HolderReport =
  | { event: "queued"; position: number; eta: number }
  | { event: "link"; link: LinkState }
  | { event: "granted"; amount: number; expires: number }
  | { event: "failed"; kind: string; message: string };

/**
 * The command that re-runs this program as a holder: the binary itself when
 * compiled (`standalone`, default `Deno.build.standalone`), else `deno run`
 * with the binary's permissions.  `denoFlags` (such as `--v8-flags=…`) go to
 * `deno run` when running from source; the benchmark uses them to measure
 * holders exactly as this spawns them.
 */
export function holderCommand(
  args: string[],
  options: { denoFlags?: string[]; standalone?: boolean } = {},
): { exe: string; args: string[] } {
  const exe = Deno.execPath();
  if (options.standalone ?? Deno.build.standalone) {
    return { exe, args: ["--holder", ...args] };
  }
  const script = new URL("../../client.ts", import.meta.url);
  return {
    exe,
    args: [
      "run",
      ...PROGRAMS["sai-resource"].permissions,
      "--no-prompt",
      "--no-config",
      "--quiet",
      ...(options.denoFlags ?? []),
      script.href,
      "--holder",
      ...args,
    ],
  };
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

/** Runs the holder (`--holder`); returns the exit code. */
export async function runHolder(
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
      onLink: (link) => report({ event: "link", link }),
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
