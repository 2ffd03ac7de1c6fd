/**
 * The builder's protocol logic as a sans-I/O state machine (issue 19): its
 * clients on the Unix socket and its link to the server
 * ({@linkcode LinkMachine}).  It forwards each client's request, routes the
 * server's answers back by cookie and grant id, ends each lease at its end
 * by its own clock (and fences every lease when the server may have given
 * them away), gives a lease back the moment its client's connection closes,
 * restores leases and requests after a reconnect, and answers `--check`
 * and release by cookie.
 *
 * It reads no clock, arms no timer and opens nothing: each event comes
 * with a {@linkcode Tick} and returns the {@linkcode BuilderAction}s it
 * caused, which the shell (`../builder_app.ts`) or a simulator carries out
 * in order.  Every duration is measured on `tick.mono`; `tick.wall` only
 * turns times into what clients are shown.
 *
 * @module
 */

import type { Mutant, Tick } from "../../shared/core_io.ts";
import type { Fields, Level } from "../../shared/log.ts";
import {
  type BuilderReply,
  encode,
  isCheck,
  isRequest,
  type LinkState,
  parseClientMessage,
  ProtocolError,
  type RequestMessage,
  SCHEMA,
  type ServerMessage,
  type YieldMessage,
  type YieldReason,
} from "../../protocol/protocol.ts";
import type { BuilderAction, ClientId, LinkClose } from "./actions.ts";
import { DeadlineHeap } from "./deadline_heap.ts";
import {
  CONNECT_TIMEOUT_MS,
  type LeaseMessage,
  LinkMachine,
  type LinkStatus,
} from "./link_machine.ts";

/** Options for {@linkcode BuilderCore}. */
export interface BuilderCoreOptions {
  /** The server's URL: shown to clients (link states) and in logs. */
  server: string;
  /** How the server shows this builder (the hello, `--check`). */
  name: string;
  /**
   * This builder process's session: a secret of 16 to 64 characters the
   * shell makes (the core calls no random source of its own), the same in
   * every hello, so that the server knows a reconnect from a new builder.
   */
  session: string;
  /** Sent in the hello when the server requires builder authentication. */
  token?: string | undefined;
  /** Where clients connect, for messages (`@NAME`: an abstract socket). */
  socket?: string;
  /**
   * The socket is abstract (`@NAME`): any local user can connect, so
   * release by cookie is refused, and a warning is logged at start.
   */
  abstractSocket?: boolean;
  /** A server silent this long counts as lost, in ms (default 10,000). */
  heartbeatMs?: number;
  /** Time a client has to send its request, in ms (default 10,000). */
  requestTimeoutMs?: number;
  /** Longest pause between reconnect attempts, in ms (default 5,000). */
  maxBackoffMs?: number;
  /** Time a connection attempt has to open, in ms (default 10,000). */
  connectTimeoutMs?: number;
  /** Log actions below this level are not made (default `info`). */
  logLevel?: Level;
  /**
   * Uniform in [0, 1), for the reconnect jitter: `Math.random` in the
   * shell, a seeded generator in a simulator that replays a run.
   */
  random: () => number;
  /**
   * A deliberately wrong behaviour, for the simulator only:
   * `wall-clock-fence` (the fence measured on `tick.wall`) or `fence-late`
   * (fencing at twice the announced fence plus a heartbeat: after the
   * server's builder grace).  Others leave the builder as it is.
   */
  mutant?: Mutant | undefined;
}

/** A lease the builder holds for a client (see {@linkcode BuilderCore.leases}). */
export interface HeldLease {
  /** The holder's connection. */
  client: ClientId;
  cookie: string;
  /** The grant's id from the server (none from an upstream server). */
  grantId: string | undefined;
  /** When the builder ends it, on its monotonic clock (ms). */
  expires: number;
}

/** Where a connection's request stands. */
type RequestState = "none" | "pending" | "sent" | "granted";

/** A client connection, and its one request once it came. */
class Conn {
  readonly id: ClientId;
  /**
   * The request as validated: only this is forwarded, never the client's
   * text, whose other members (a `hello`, a `ping`) the server would read.
   */
  request: RequestMessage | undefined = undefined;
  cookie = "";
  state: RequestState = "none";
  /** Whether the request ever reached a server. */
  sent = false;
  /** When the lease ends by this builder's clock, once granted. */
  expires = 0;
  /**
   * The grant's id from the server, once granted (our server's; upstream's
   * sends none).  Every yield and restore names it, and a server message
   * naming another grant is about an ended lease of the same cookie.
   */
  grantId: string | undefined = undefined;
  /** Why the client gave it back, when it said (passed on to the server). */
  reason: YieldReason | undefined = undefined;
  /** Whether it was told the link is down, and not yet that it is back. */
  toldDown = false;
  /** When its request is overdue, while none came. */
  deadline = 0;
  /** The write after which its ended lease is given back (0: none waits). */
  yieldSeq = 0;

  constructor(id: ClientId) {
    this.id = id;
  }
}

/** How many expired cookies a builder remembers for late releases. */
const MAX_EXPIRED_REMEMBERED = 4096;

const RANKS: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/**
 * The builder, as a state machine.  Every event method takes the clocks'
 * reading and returns the actions it caused, in order, in an array the
 * core empties and fills again at its next event: carry them out (or copy
 * them) before calling it again.  One array for all saves two allocations
 * per event on the hot path; the actions themselves are new each time.
 *
 * The shell's side of the contract:
 * - `start()` once, first; after `shutdown()` every event is ignored.
 * - Link: after a `connect` action, report `linkOpened()`, then each text
 *   message with `linkMessage()`, and `linkClosed()` when it closes or
 *   the attempt fails (`linkFailed()` if it cannot even start).  After a
 *   `linkClose` action, report nothing more about that connection.
 * - Clients: `clientOpened()` for each accepted connection, with an id
 *   never used before; `clientMessage()` for each whole JSON text it
 *   sends; `clientBadInput()` if its bytes cannot be split into messages;
 *   `clientClosed()` when it closes or a read fails; `clientWritten()` for
 *   each `clientSend` that had a `seq`, once written or failed.
 * - Time: call `wake()` at the time of the last `wake` action, or soon
 *   after; a call that finds nothing due does no harm.  A tick is read
 *   only during its event: the core keeps none.
 * - Never call the core while carrying out its actions (a write that fails
 *   at once, say): report it once they are all carried out.
 */
export class BuilderCore {
  #opts: BuilderCoreOptions;
  #link: LinkMachine;
  /** The reading of the event being handled. */
  #tick: Tick = { mono: 0, wall: 0 };
  /** This event's actions: one array for every event, emptied at each. */
  #out: BuilderAction[] = [];
  #stopped = false;
  /** The wake-up last asked for (monotonic ms); Infinity when none is. */
  #armedAt = Infinity;
  /** The earliest deadline set during this event. */
  #wantAt = Infinity;
  #rank: number;
  /** Whether info and debug events are made: fields are built only then. */
  #info: boolean;
  #debug: boolean;
  #requestTimeoutMs: number;
  #conns = new Map<ClientId, Conn>();
  /** Connections with a request, by cookie. */
  #clients = new Map<string, Conn>();
  /** Cookies whose lease expired, newest last, with when (monotonic ms). */
  #expired = new Map<string, number>();
  /** Connections yet to send their request, in deadline order. */
  #awaiting = new Set<Conn>();
  /** Ends each lease at its end by our clock, link up or not. */
  #leaseEnds = new DeadlineHeap<Conn>((conn, at) =>
    conn.state === "granted" && conn.expires === at &&
    this.#clients.get(conn.cookie) === conn
  );
  #seq = 0;
  /** Ended leases to give back once the holder's write is done, by seq. */
  #yieldAfter = new Map<number, Conn>();

  constructor(options: BuilderCoreOptions) {
    this.#opts = options;
    this.#rank = RANKS[options.logLevel ?? "info"];
    this.#info = this.#rank >= RANKS.info;
    this.#debug = this.#rank >= RANKS.debug;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#link = new LinkMachine({
      server: options.server,
      name: options.name,
      session: options.session,
      token: options.token,
      heartbeatMs: options.heartbeatMs ?? 10_000,
      maxBackoffMs: options.maxBackoffMs ?? 5_000,
      connectTimeoutMs: options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
      random: options.random,
      mutant: options.mutant,
    }, {
      emit: (action) => this.#emit(action),
      log: (level, msg, fields) => this.#log(level, msg, fields),
      want: (at) => this.#want(at),
      onOpen: () => this.#restore(),
      onMessage: (msg, text) => this.#fromServer(msg, text),
      onFence: () => this.#fence(),
      onLost: () => {
        for (const conn of this.#clients.values()) {
          if (conn.state === "sent") conn.state = "pending";
        }
      },
      onLinkChange: (status) => this.#linkChanged(status),
    });
  }

  /** The link as clients are told it (`since` on the monotonic clock). */
  get linkStatus(): LinkStatus {
    return this.#link.status;
  }

  /** The leases held for clients now: what the builder answers for. */
  leases(): HeldLease[] {
    const out: HeldLease[] = [];
    for (const conn of this.#clients.values()) {
      if (conn.state !== "granted") continue;
      out.push({
        client: conn.id,
        cookie: conn.cookie,
        grantId: conn.grantId,
        expires: conn.expires,
      });
    }
    return out;
  }

  // --- events ----------------------------------------------------------

  /** Starts: the first connection attempt and the heartbeat. */
  start(tick: Tick): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    if (this.#opts.abstractSocket) {
      // No file, so no modes: the cost of upstream's convention, said once.
      this.#log(
        "warn",
        "abstract socket: every local user can connect to this builder and impersonate it",
        {
          socket: this.#opts.socket,
          hint:
            "release by cookie is refused on it; --socket PATH keeps the builder to this user",
        },
      );
    }
    this.#link.start(tick);
    return this.#end();
  }

  /** The connection to the server asked for is open. */
  linkOpened(tick: Tick): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    this.#link.opened(tick);
    return this.#end();
  }

  /** A text message from the server. */
  linkMessage(tick: Tick, text: string): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    this.#link.message(tick, text);
    return this.#end();
  }

  /** The connection to the server closed, or could not open. */
  linkClosed(tick: Tick, close: LinkClose): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    this.#link.closed(tick, close);
    return this.#end();
  }

  /** The connection attempt asked for could not start (`error` says why). */
  linkFailed(tick: Tick, error: string): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    this.#link.failed(tick, error);
    return this.#end();
  }

  /** A client connected; `id` names its connection from now on. */
  clientOpened(tick: Tick, id: ClientId): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    const conn = new Conn(id);
    this.#conns.set(id, conn);
    // In insertion order, which is deadline order: the timeout is fixed.
    conn.deadline = tick.mono + this.#requestTimeoutMs;
    this.#awaiting.add(conn);
    this.#want(conn.deadline);
    return this.#end();
  }

  /**
   * One whole message (a JSON object's text) from a client.  Three
   * positional parameters, against the house style: this is the hot path,
   * and an options object would be one more allocation per message.
   */
  clientMessage(
    tick: Tick,
    id: ClientId,
    text: string,
  ): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    const conn = this.#conns.get(id);
    if (conn !== undefined) {
      this.#awaiting.delete(conn);
      this.#clientMessage(conn, text);
    }
    return this.#end();
  }

  /** A client's bytes cannot be split into messages: refused and closed. */
  clientBadInput(
    tick: Tick,
    id: ClientId,
    message: string,
  ): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    const conn = this.#conns.get(id);
    if (conn !== undefined) {
      this.#refuseAndClose(
        conn,
        conn.request === undefined ? "" : conn.cookie,
        message,
      );
    }
    return this.#end();
  }

  /**
   * A client's connection closed (or a read failed): its lease is given
   * back, or its request withdrawn.
   */
  clientClosed(tick: Tick, id: ClientId): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    const conn = this.#conns.get(id);
    if (conn !== undefined) {
      this.#drop(conn);
      // Its holder has let go, told or not: what waited for the write
      // need not wait any more.
      if (conn.yieldSeq !== 0) this.#yieldNow(conn.yieldSeq);
    }
    return this.#end();
  }

  /** The write of a `clientSend` with this `seq` is done, or failed. */
  clientWritten(tick: Tick, seq: number): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    this.#yieldNow(seq);
    return this.#end();
  }

  /** The time of a `wake` action came: does what is due. */
  wake(tick: Tick): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    this.#armedAt = Infinity;
    const now = tick.mono;
    // First of all, as on every event from the server: a builder waking
    // from SIGSTOP ends the leases whose fence ran out before it does
    // anything else.  (A client's event cannot extend what the server may
    // have given away: it is not checked there.)
    this.#link.fenceIfStale(tick);
    this.#link.wake(tick);
    for (let conn; (conn = this.#leaseEnds.popDue(now)) !== undefined;) {
      this.#endLease(conn, "expired");
    }
    for (const conn of this.#awaiting) {
      if (conn.deadline > now) break;
      this.#awaiting.delete(conn);
      this.#refuseAndClose(conn, "", "No request within the time limit");
    }
    this.#want(this.#nextDeadline());
    return this.#end();
  }

  /**
   * Stops: the link is closed and nothing more is done.  The shell closes
   * the client connections itself.
   */
  shutdown(tick: Tick): readonly BuilderAction[] {
    if (!this.#begin(tick)) return this.#out;
    this.#link.stop();
    this.#stopped = true;
    return this.#end();
  }

  // --- the machinery of events and actions -----------------------------

  /** Starts handling an event; false when the core has stopped. */
  #begin(tick: Tick): boolean {
    this.#tick = tick;
    this.#out.length = 0;
    return !this.#stopped;
  }

  /** Ends an event: the wake-up it needs, then its actions. */
  #end(): readonly BuilderAction[] {
    const at = this.#wantAt;
    this.#wantAt = Infinity;
    // Only an earlier wake-up than the one asked for is worth re-arming a
    // timer for: a later deadline is found when that one comes.
    if (at < this.#armedAt && !this.#stopped) {
      this.#armedAt = at;
      this.#emit({ type: "wake", at });
    }
    return this.#out;
  }

  #emit(action: BuilderAction): void {
    this.#out.push(action);
  }

  #want(at: number): void {
    if (at < this.#wantAt) this.#wantAt = at;
  }

  #log(level: Level, msg: string, fields: Fields): void {
    if (RANKS[level] <= this.#rank) {
      this.#emit({ type: "log", level, msg, fields });
    }
  }

  #nextDeadline(): number {
    let at = Math.min(this.#link.nextDeadline(), this.#leaseEnds.next());
    for (const conn of this.#awaiting) {
      at = Math.min(at, conn.deadline);
      break;
    }
    return at;
  }

  /** A time of the monotonic clock as the wall clock shows it now. */
  #wall(mono: number): number {
    return Math.round(mono + this.#tick.wall - this.#tick.mono);
  }

  // --- the server's side ----------------------------------------------

  /** Ends every lease held on the server's word (fencing); how many. */
  #fence(): number {
    let ended = 0;
    for (const conn of [...this.#clients.values()]) {
      if (conn.state !== "granted") continue;
      ended++;
      this.#endLease(conn, "fenced: lease lost");
    }
    return ended;
  }

  /**
   * Ends a granted lease here (its own end, or fencing): the holder is told
   * it expired, as when the server expires it, and the server is told it is
   * yielded, which spares the server's expiry margin (it counts a yield at
   * or after the end as an expiry).  After fencing the link is down: our
   * `restored` marker drops the lease there on reconnect.
   */
  #endLease(conn: Conn, why: string): void {
    if (this.#clients.get(conn.cookie) !== conn) return;
    this.#log("info", why, { cookie: conn.cookie });
    // Given back only once the holder has been told (the write is done):
    // then its unit may go to another.  By then the cookie may be in use
    // again: the grant's id keeps this late yield from ending that lease.
    const seq = ++this.#seq;
    conn.yieldSeq = seq;
    this.#yieldAfter.set(seq, conn);
    this.#expire(
      conn,
      { schema: SCHEMA, cookie: conn.cookie, expired: true },
      seq,
    );
  }

  /** Gives back the ended lease that waited for write `seq`, if one does. */
  #yieldNow(seq: number): void {
    const conn = this.#yieldAfter.get(seq);
    if (conn === undefined) return;
    this.#yieldAfter.delete(seq);
    conn.yieldSeq = 0;
    this.#yield(conn.cookie, undefined, conn.grantId);
  }

  /**
   * After (re)connecting: re-admit the leases our holders still hold (with
   * the time they have left by our clock), then the waiting requests in
   * their original order.  A lease that ran out while the link was down is
   * ended here: the server has already forgotten it.
   */
  #restore(): void {
    const now = this.#tick.mono;
    for (const conn of [...this.#clients.values()]) {
      if (conn.state !== "granted") continue;
      const left = conn.expires - now;
      if (left <= 0) {
        this.#log("info", "expired while the server was away", {
          cookie: conn.cookie,
        });
        this.#expire(conn, {
          schema: SCHEMA,
          cookie: conn.cookie,
          expired: true,
        });
        continue;
      }
      this.#link.send(encode({
        ...conn.request!,
        lease: Math.ceil(left / 1000),
        restore: "lease",
        ...(conn.grantId !== undefined && { id: conn.grantId }),
      }));
    }
    for (const conn of this.#clients.values()) {
      if (conn.state === "pending") this.#forward(conn);
    }
  }

  #forward(conn: Conn): void {
    const again = conn.sent;
    conn.state = "sent";
    conn.sent = true;
    const request = conn.request!;
    this.#link.send(
      encode(again ? { ...request, restore: "queued" } : request),
    );
  }

  #yield(cookie: string, reason?: YieldReason, id?: string): void {
    const msg: YieldMessage = { schema: SCHEMA, cookie };
    if (reason !== undefined) msg.reason = reason;
    if (id !== undefined) msg.id = id;
    this.#link.send(encode(msg));
  }

  #fromServer(msg: LeaseMessage, text: string): void {
    const conn = this.#clients.get(msg.cookie);
    if (conn === undefined) {
      if ("amount" in msg) {
        // The client left before the grant arrived: give it straight back.
        this.#yield(msg.cookie, undefined, msg.id);
      } else if (msg.cookie === "" && "error" in msg) {
        this.#log("warn", "server reported an error", { error: msg.error });
      }
      return;
    }
    if (
      ("expired" in msg || "error" in msg) && msg.id !== undefined &&
      msg.id !== conn.grantId
    ) {
      // About an ended lease of this cookie (the server's expiry or a
      // force-release, crossing our own end of it): not this client's.
      if (this.#debug) {
        this.#log("debug", "ignored: about an ended lease", {
          cookie: msg.cookie,
          id: msg.id,
        });
      }
      return;
    }
    if ("amount" in msg) {
      // A restored lease is acknowledged again: the holder already knows.
      if (conn.state === "granted") {
        if (msg.id !== undefined) conn.grantId = msg.id;
        return;
      }
      conn.state = "granted";
      if (msg.id !== undefined) conn.grantId = msg.id;
      const asked = conn.request!.lease;
      // The grant's own length: shorter than asked when the server re-sends
      // a grant this builder missed (it counts from when it granted).
      const seconds = msg.lease > 0 && msg.lease < asked ? msg.lease : asked;
      conn.expires = this.#tick.mono + seconds * 1000;
      // Ended here at its end, whether or not the server can say so.
      this.#leaseEnds.add(conn.expires, conn);
      this.#want(conn.expires);
      if (this.#info) {
        this.#log("info", "granted", {
          cookie: msg.cookie,
          amount: msg.amount,
        });
      }
      // The server's text, validated, as is: no second encoding.
      this.#send(conn, text);
    } else if ("expired" in msg) {
      this.#log("info", "expired", { cookie: msg.cookie });
      this.#expire(conn, msg);
    } else if ("error" in msg && conn.state === "granted") {
      // The server ended it (an operator's force-release), or refused our
      // restore of it (after a fault that outlived the graces it would take
      // the resource past its budget): the server holds nothing for it, so
      // the lease is lost, and the holder is told so as of an expiry (a
      // launcher's --kill-on-expiry applies).
      this.#log("warn", "lease lost: the server ended it", {
        cookie: msg.cookie,
        error: msg.error,
      });
      this.#expire(conn, {
        schema: SCHEMA,
        cookie: conn.cookie,
        expired: true,
      });
    } else if ("error" in msg) {
      this.#clients.delete(conn.cookie);
      this.#log("info", "refused", { cookie: msg.cookie, error: msg.error });
      this.#reply(conn, msg, true);
    } else {
      this.#reply(conn, msg, false);
    }
  }

  // --- the link's state, for the clients that wait ---------------------

  /** The link's state as a client is told it, wall-clock `since`. */
  #linkState(status: LinkStatus): LinkState {
    return {
      up: status.up,
      server: this.#opts.server,
      since: this.#wall(status.since),
      ...(status.error !== undefined && { error: status.error }),
    };
  }

  /**
   * The link came up or went down: every waiting client that asked is
   * told it went down, and those told so that it is back.  Granted
   * clients hold their leases on the fence's terms, not told.
   */
  #linkChanged(status: LinkStatus): void {
    let link: LinkState | undefined;
    for (const conn of this.#clients.values()) {
      if (conn.state === "granted" || !conn.request!.link) continue;
      if (status.up && !conn.toldDown) continue;
      link ??= this.#linkState(status);
      this.#tellLink(conn, link);
    }
  }

  #tellLink(conn: Conn, link: LinkState): void {
    conn.toldDown = !link.up;
    this.#send(conn, encode({ schema: SCHEMA, cookie: conn.cookie, link }));
  }

  // --- the clients ----------------------------------------------------

  /** Handles one message on a client connection. */
  #clientMessage(conn: Conn, text: string): void {
    const mine = conn.request !== undefined;
    let msg;
    try {
      msg = parseClientMessage(text);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.#refuseAndClose(
        conn,
        err.cookie ?? (mine ? conn.cookie : ""),
        err.message,
      );
      return;
    }
    if (isCheck(msg)) {
      if (mine) {
        this.#refuseAndClose(
          conn,
          conn.cookie,
          "Cannot handle message: a check is alone on its connection",
        );
      } else {
        this.#answerAndClose(conn, {
          schema: SCHEMA,
          builder: this.#opts.name,
          link: this.#linkState(this.#link.status),
        });
      }
      return;
    }
    if (mine) {
      // The one thing a client may say after its request: give it back.
      if (!isRequest(msg) && msg.cookie === conn.cookie) {
        if (msg.reason) conn.reason = msg.reason;
        this.#close(conn);
        return;
      }
      this.#refuseAndClose(
        conn,
        conn.cookie,
        "Cannot handle message: only one request per connection",
      );
      return;
    }
    if (!isRequest(msg)) {
      this.#releaseOther(conn, msg.cookie);
      return;
    }
    if (this.#clients.has(msg.cookie)) {
      this.#refuseAndClose(
        conn,
        msg.cookie,
        `Cannot lease "${msg.resname}": cookie "${msg.cookie}" is already in use on this builder`,
      );
      return;
    }
    conn.request = msg;
    conn.cookie = msg.cookie;
    conn.state = "pending";
    this.#clients.set(msg.cookie, conn);
    // A new lease under this cookie: a later release is about that one.
    this.#expired.delete(msg.cookie);
    if (this.#debug) this.#log("debug", "request", { ...msg });
    if (this.#link.open) this.#forward(conn);
    const status = this.#link.status;
    // Known down: said at once, not after the whole --wait.
    if (msg.link && !status.up && status.error !== undefined) {
      this.#tellLink(conn, this.#linkState(status));
    }
  }

  /**
   * A release by cookie from another connection (`sai-resource --release`).
   * Refused on an abstract socket: any local user can connect to it, and
   * would end other users' leases and take their units.  A path socket's
   * mode keeps it to the builder's own user (or `--socket-group`).
   */
  #releaseOther(conn: Conn, cookie: string): void {
    if (this.#opts.abstractSocket) {
      this.#refuseAndClose(
        conn,
        cookie,
        `Cannot release "${cookie}" by cookie on the abstract socket "${this.#opts.socket}": every local user can connect to it; run the builder on a path socket (--socket PATH), or end the holder process (or use launcher or --foreground mode)`,
      );
      return;
    }
    const held = this.#clients.get(cookie);
    const expiredAt = this.#expired.get(cookie);
    if (held === undefined && expiredAt !== undefined) {
      // Released after it ran out: say when, so the caller can tell how
      // long what it gated ran ungated.
      this.#expired.delete(cookie);
      this.#log("info", "released after expiry", { cookie });
      this.#answerAndClose(conn, {
        schema: SCHEMA,
        cookie,
        released: true,
        expiredAt: this.#wall(expiredAt),
      });
      return;
    }
    if (held === undefined) {
      this.#refuseAndClose(
        conn,
        cookie,
        `Cannot release: no lease with cookie "${cookie}" on this builder`,
      );
      return;
    }
    this.#clients.delete(cookie);
    if (held.state !== "pending") this.#yield(cookie, undefined, held.grantId);
    this.#log("info", "released by cookie", { cookie });
    this.#close(held);
    this.#answerAndClose(conn, { schema: SCHEMA, cookie, released: true });
  }

  /**
   * The lease ran out: tell the client, and forget it, but keep its
   * connection open until the client closes it (the C client exits when
   * its connection drops, and upstream's cleanup expects it alive).  The
   * open connection counts toward nothing.
   */
  #expire(conn: Conn, msg: ServerMessage, seq?: number): void {
    this.#clients.delete(conn.cookie);
    this.#expired.delete(conn.cookie);
    this.#expired.set(conn.cookie, this.#tick.mono);
    if (this.#expired.size > MAX_EXPIRED_REMEMBERED) {
      this.#expired.delete(this.#expired.keys().next().value!);
    }
    this.#send(conn, encode(msg), seq);
  }

  #answerAndClose(conn: Conn, msg: BuilderReply): void {
    this.#send(conn, encode(msg));
    this.#close(conn);
  }

  #refuseAndClose(conn: Conn, cookie: string, error: string): void {
    this.#log("warn", "bad request from client", { error });
    this.#send(conn, encode({ schema: SCHEMA, cookie, error }));
    this.#close(conn);
  }

  /**
   * Writes to a client, after what was written before; optionally closes
   * it afterwards.  Queue progress goes only to a client that asked.
   */
  #reply(conn: Conn, msg: ServerMessage, close: boolean): void {
    if ("queued" in msg && !conn.request!.progress) return;
    this.#send(conn, encode(msg));
    if (close) this.#close(conn);
  }

  #send(conn: Conn, text: string, seq?: number): void {
    this.#emit(
      seq === undefined
        ? { type: "clientSend", id: conn.id, text }
        : { type: "clientSend", id: conn.id, text, seq },
    );
  }

  /** Closes a connection (after what was written to it), forgetting it. */
  #close(conn: Conn): void {
    if (!this.#drop(conn)) return;
    this.#emit({ type: "clientClose", id: conn.id });
  }

  /**
   * Forgets a connection, closed by either side: its lease is given back,
   * or its request withdrawn, if it still has one.  False if it was
   * forgotten already.
   */
  #drop(conn: Conn): boolean {
    if (!this.#conns.delete(conn.id)) return false;
    this.#awaiting.delete(conn);
    if (
      conn.request !== undefined && this.#clients.get(conn.cookie) === conn
    ) {
      this.#clients.delete(conn.cookie);
      if (conn.state !== "pending") {
        this.#yield(conn.cookie, conn.reason, conn.grantId);
      }
      if (this.#info) {
        this.#log("info", conn.state === "granted" ? "released" : "withdrawn", {
          cookie: conn.cookie,
          ...(conn.reason && { reason: conn.reason }),
        });
      }
    }
    return true;
  }
}
