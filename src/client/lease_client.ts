/**
 * Talks to a builder's Unix socket the way `sai-resource` does: one request,
 * then wait for the grant or refusal; the lease lasts as long as the
 * connection stays open.
 *
 * @module
 */

import { JsonObjectSplitter } from "../protocol/json_splitter.ts";
import {
  type BuilderReply,
  encode,
  type GrantMessage,
  isGrant,
  isRefusal,
  type LinkState,
  type OwnerProcess,
  parseBuilderReply,
  ProtocolError,
  type ResourceAmount,
  SCHEMA,
  type YieldReason,
} from "../protocol/protocol.ts";
import { unixPath } from "../shared/socket_path.ts";
import { monotonic, wallClock } from "../shared/clock.ts";
import { linkTimeoutCause } from "./link_line.ts";

/** What to ask for. */
export interface LeaseSpec {
  resname: string;
  amount: number;
  /** Seconds. */
  lease: number;
  cookie: string;
  /** Several resources at once, all or nothing (then `resname`/`amount` are the first's). */
  resources?: ResourceAmount[];
  /** Higher goes first (default 0), never ahead of a queue's head. */
  priority?: number;
  /** The process the lease is held for (a holder's owner), for the status. */
  process?: OwnerProcess;
}

/** The resources a spec asks for, for messages: `db` or `warmcat_conns,db`. */
export function specNames(spec: LeaseSpec): string {
  return spec.resources?.map((r) => r.resname).join(",") ?? spec.resname;
}

/** What a spec asks for, for messages: `2 of db` or `warmcat_conns=2,db=1`. */
export function specAmounts(spec: LeaseSpec): string {
  return spec.resources?.map((r) => `${r.resname}=${r.amount}`).join(",") ??
    `${spec.amount} of ${spec.resname}`;
}

/** Why acquiring failed. */
export type FailureKind = "refused" | "timeout" | "unreachable" | "closed";

/** Acquiring failed; `kind` says how. */
export class AcquireError extends Error {
  override name = "AcquireError";
  kind: FailureKind;
  constructor(kind: FailureKind, message: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
  }
}

/** Options for {@linkcode acquire}. */
export interface AcquireOptions {
  /** Aborting withdraws the request (timeouts: `AbortSignal.timeout`). */
  signal?: AbortSignal;
  /**
   * Called when the queue position or estimate changes.  Given, the request
   * asks the builder for progress (`"progress": true`).
   */
  onQueued?: (queued: { position: number; eta: number }) => void;
  /**
   * Called when the builder says its link to the server is down (at once
   * if it is when the request arrives), and when that changes.  The
   * request always asks (`"link": true`): a timeout names the cause.
   */
  onLink?: (link: LinkState) => void;
  /** Called with every message from the builder (for `-d` verbosity). */
  onMessage?: (msg: BuilderReply) => void;
}

/** How a held lease ended. */
export type LeaseEnd = "expired" | "released" | "closed";

/** A granted lease; held while its connection stays open. */
export class HeldLease {
  readonly grant: GrantMessage;
  /** Resolves when the lease ends, saying how. */
  readonly ended: Promise<LeaseEnd>;
  #conn: Deno.UnixConn;
  #released = false;

  constructor(
    grant: GrantMessage,
    conn: Deno.UnixConn,
    ended: Promise<LeaseEnd>,
  ) {
    this.grant = grant;
    this.#conn = conn;
    this.ended = ended.then((how) => this.#released ? "released" : how);
  }

  /**
   * Gives the lease back saying why, then closes.  Only our builder reads
   * the reason; upstream's drops it, and the close frees the lease there.
   */
  async releaseFor(reason: YieldReason): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    try {
      await writeAll(
        this.#conn,
        new TextEncoder().encode(
          encode({ schema: SCHEMA, cookie: this.grant.cookie, reason }),
        ),
      );
    } catch {
      // Closed by the builder already: the lease is gone either way.
    }
    this.#close();
  }

  /** Gives the lease back by closing the connection. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#close();
  }

  #close(): void {
    try {
      this.#conn.close();
    } catch {
      // Already closed by the builder.
    }
  }
}

/**
 * Requests a lease and resolves once it is granted.  Rejects with
 * {@linkcode AcquireError} if it is refused, the signal aborts (the request
 * is withdrawn by closing), or the builder cannot be reached.
 */
export async function acquire(
  socketPath: string,
  spec: LeaseSpec,
  options: AcquireOptions = {},
): Promise<HeldLease> {
  const { signal, onQueued, onLink, onMessage } = options;
  signal?.throwIfAborted();
  let conn: Deno.UnixConn;
  try {
    conn = await connectUnix(socketPath, signal);
  } catch (err) {
    throw new AcquireError(
      "unreachable",
      `Cannot reach the builder at "${socketPath}": ${(err as Error).message}`,
      { cause: err },
    );
  }
  const messages = readMessages(conn);
  const onAbort = () => {
    try {
      conn.close();
    } catch { /* closed already */ }
  };
  signal?.addEventListener("abort", onAbort, { once: true });
  /** The link's last state, and when (monotonic) it went down. */
  let link: { state: LinkState; downAt: number } | undefined;
  const sentAt = monotonic();
  const timedOut = () => {
    if (!link || link.state.up) return abortError(signal!);
    return abortError(signal!, {
      cause: linkTimeoutCause(link.state, { whole: link.downAt <= sentAt }),
    });
  };
  try {
    const request = {
      ...spec,
      ...(onQueued && { progress: true as const }),
      link: true as const,
    };
    await writeAll(conn, new TextEncoder().encode(encode(request)));
    for (;;) {
      const next = await messages.next();
      if (signal?.aborted) break;
      if (next.done) {
        throw new AcquireError(
          "closed",
          "Cannot get a lease: the builder closed the connection before answering",
        );
      }
      const msg = next.value;
      onMessage?.(msg);
      if ("pong" in msg || "welcome" in msg || "builder" in msg) continue;
      if (msg.cookie !== spec.cookie && msg.cookie !== "") continue;
      if ("link" in msg) {
        // Its start on our clock, from how long ago it was by the wall
        // clock now (as a late release's expiry is read).
        const ago = Math.max(0, wallClock() - msg.link.since);
        link = { state: msg.link, downAt: monotonic() - ago };
        onLink?.(msg.link);
        continue;
      }
      if (isGrant(msg)) {
        signal?.removeEventListener("abort", onAbort);
        return new HeldLease(msg, conn, waitForEnd(messages));
      }
      if (isRefusal(msg)) {
        throw new AcquireError("refused", msg.error);
      }
      if ("queued" in msg) onQueued?.(msg.queued);
    }
  } catch (err) {
    onAbort();
    if (signal?.aborted) throw timedOut();
    if (err instanceof AcquireError) throw err;
    throw new AcquireError(
      "closed",
      `Cannot get a lease: ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  onAbort();
  throw timedOut();
}

function abortError(
  signal: AbortSignal,
  options: { cause?: string } = {},
): AcquireError {
  const reason = signal.reason;
  const timedOut = reason instanceof DOMException &&
    reason.name === "TimeoutError";
  return new AcquireError(
    "timeout",
    timedOut
      ? "Cannot get a lease: timed out waiting; the request was withdrawn" +
        (options.cause ? `; ${options.cause}` : "")
      : `Cannot get a lease: cancelled${
        reason instanceof Error ? ` (${reason.message})` : ""
      }; the request was withdrawn`,
    { cause: reason },
  );
}

async function waitForEnd(
  messages: AsyncGenerator<BuilderReply>,
): Promise<LeaseEnd> {
  try {
    for await (const msg of messages) {
      if ("expired" in msg) return "expired";
    }
  } catch {
    // A reset connection ends the lease all the same.
  }
  return "closed";
}

/** Yields validated messages until the connection closes. */
export async function* readMessages(
  conn: Deno.Conn,
): AsyncGenerator<BuilderReply> {
  const splitter = new JsonObjectSplitter();
  const buf = new Uint8Array(4096);
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch (err) {
      if (err instanceof Deno.errors.BadResource) return;
      if (err instanceof Deno.errors.ConnectionReset) return;
      throw err;
    }
    if (n === null) return;
    for (const text of splitter.push(buf.subarray(0, n))) {
      try {
        yield parseBuilderReply(text);
      } catch (err) {
        if (!(err instanceof ProtocolError)) throw err;
        // Skip what we cannot read; the next message may still be ours.
      }
    }
  }
}

/**
 * Connects to a Unix socket (`@NAME`: an abstract one), retrying for a few seconds while its accept
 * queue is full (EAGAIN): a storm of ctest jobs starting at once must queue,
 * not fail.
 */
export async function connectUnix(
  path: string,
  signal?: AbortSignal,
): Promise<Deno.UnixConn> {
  const deadline = monotonic() + 5000;
  for (let delay = 5;; delay = Math.min(delay * 2, 200)) {
    try {
      return await Deno.connect({ transport: "unix", path: unixPath(path) });
    } catch (err) {
      if (!(err instanceof Deno.errors.WouldBlock) || monotonic() > deadline) {
        throw err;
      }
      signal?.throwIfAborted();
      await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random())));
    }
  }
}

/** Writes all of `data`. */
export async function writeAll(
  conn: Deno.Conn,
  data: Uint8Array,
): Promise<void> {
  let at = 0;
  while (at < data.length) at += await conn.write(data.subarray(at));
}
