/**
 * `sai-resource --release COOKIE`: give back a lease held elsewhere (by a
 * holder), by its cookie, and wait for the builder's answer, but never for
 * ever: an upstream Sai builder forwards only the first message of each
 * connection and never answers a release, so silence must end in a failure
 * that says what to do instead.
 *
 * @module
 */

import { connectUnix, readMessages, writeAll } from "./lease_client.ts";
import { encode, SCHEMA } from "../protocol/protocol.ts";
import { EXIT_FAILED, EXIT_OK, printErr } from "./_common.ts";
import { wallClock } from "../shared/clock.ts";

/** How long `--release` waits for the builder by default, in seconds. */
export const DEFAULT_RELEASE_WAIT_SECONDS = 10;

/** Why a release failed. */
export type ReleaseFailure =
  | "unreachable"
  | "refused"
  | "closed"
  | "no answer";

/** A release failed; `kind` says how. */
export class ReleaseError extends Error {
  override name = "ReleaseError";
  kind: ReleaseFailure;
  constructor(kind: ReleaseFailure, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }
}

/** Options for {@linkcode releaseCookie}. */
export interface ReleaseOptions {
  /** Give up after this many seconds without an answer (default 10). */
  waitSeconds?: number;
}

/**
 * Releases the lease (or withdraws the queued request) with `cookie` on the
 * builder at `socketPath`.  Resolves when the builder confirms, with when the
 * lease had already expired if it had; rejects with {@linkcode ReleaseError}
 * otherwise, at the latest after `waitSeconds`.
 */
export async function releaseCookie(
  socketPath: string,
  cookie: string,
  options: ReleaseOptions = {},
): Promise<{ expiredAt?: number }> {
  const waitSeconds = options.waitSeconds ?? DEFAULT_RELEASE_WAIT_SECONDS;
  const deadline = AbortSignal.timeout(waitSeconds * 1000);
  let conn: Deno.UnixConn;
  try {
    conn = await connectUnix(socketPath, deadline);
  } catch (err) {
    throw new ReleaseError(
      "unreachable",
      `Cannot reach the builder at "${socketPath}": ${(err as Error).message}`,
      { cause: err },
    );
  }
  const close = () => {
    try {
      conn.close();
    } catch { /* closed */ }
  };
  deadline.addEventListener("abort", close, { once: true });
  try {
    await writeAll(
      conn,
      new TextEncoder().encode(encode({ schema: SCHEMA, cookie })),
    );
    for await (const msg of readMessages(conn)) {
      if ("released" in msg && msg.cookie === cookie) {
        return msg.expiredAt === undefined ? {} : { expiredAt: msg.expiredAt };
      }
      if ("error" in msg) throw new ReleaseError("refused", msg.error);
    }
  } catch (err) {
    if (err instanceof ReleaseError) throw err;
    if (!deadline.aborted) {
      throw new ReleaseError(
        "closed",
        `Cannot release: ${(err as Error).message}`,
        { cause: err },
      );
    }
  } finally {
    deadline.removeEventListener("abort", close);
    close();
  }
  if (deadline.aborted) {
    throw new ReleaseError(
      "no answer",
      `Cannot release "${cookie}": the builder did not answer within ${waitSeconds} s; ` +
        "upstream Sai builders cannot release by cookie: end the holder process instead, or use launcher (-- CMD) or --foreground mode",
    );
  }
  throw new ReleaseError(
    "closed",
    "Cannot release: the builder closed the connection without answering",
  );
}

/**
 * `--release` / `--release-scope`: releases `cookie` and returns the exit
 * code.  A lease that had already expired passes with a warning saying how
 * long what it gated ran ungated; `strict` makes that a failure.
 */
export async function release(
  socket: string,
  cookie: string,
  options: { strict?: boolean; waitSeconds?: number } = {},
): Promise<number> {
  let expiredAt: number | undefined;
  try {
    ({ expiredAt } = await releaseCookie(socket, cookie, options));
  } catch (err) {
    printErr((err as Error).message);
    return EXIT_FAILED;
  }
  if (expiredAt === undefined) return EXIT_OK;
  // The builder turned its monotonic time into wall-clock time as it sent
  // it, so this reads right unless the wall clock stepped in between.
  const ago = Math.max(0, Math.round((wallClock() - expiredAt) / 1000));
  printErr(
    `${
      options.strict ? "error" : "warning"
    }: the lease with cookie "${cookie}" had already expired ${ago} s ago: the tests it gated ran ungated for up to ${ago} s (raise LEASE_SECONDS)`,
  );
  return options.strict ? EXIT_FAILED : EXIT_OK;
}
