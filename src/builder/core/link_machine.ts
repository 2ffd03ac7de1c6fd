/**
 * The builder's one link to the server, as a state machine: connecting and
 * reconnecting with jittered backoff, a 10 s limit on an attempt, the hello
 * and its welcome, heartbeats, and fencing (ending every lease held on the
 * server's word when no round trip confirmed the link in time).  What the
 * link carries is `BuilderCore`'s business: it is told when the
 * link opens, what the server says, when to fence and when the link is
 * lost.
 *
 * No I/O, clock or timer: each method takes the time, and what is to be
 * done goes out through {@linkcode LinkHooks.emit}; `nextDeadline()` says
 * when the link wants its `wake()`.
 *
 * @module
 */

import type { Mutant, Tick } from "../../shared/core_io.ts";
import type { Fields, Level } from "../../shared/log.ts";
import {
  encode,
  NAME_IN_USE,
  parseServerMessage,
  type PongMessage,
  ProtocolError,
  SCHEMA,
  type ServerMessage,
  type WelcomeMessage,
} from "../../protocol/protocol.ts";
import {
  type BuilderAction,
  type LinkClose,
  nameInUseMessage,
} from "./actions.ts";

/** What the server says about leases and requests (not pongs or welcomes). */
export type LeaseMessage = Exclude<ServerMessage, PongMessage | WelcomeMessage>;

/**
 * The link as the builder tells its clients.  `up`: welcomed.  `since`
 * (monotonic ms): when it came up or went down; before the first welcome,
 * when the link started.  `error`: while down, the last error, once a
 * connection attempt has failed (before that, the first is under way).
 */
export interface LinkStatus {
  readonly up: boolean;
  readonly since: number;
  readonly error: string | undefined;
}

/**
 * How long a connection attempt may take to open (TCP, TLS and the
 * WebSocket handshake): a server address that drops packets would
 * otherwise hold the first attempt for the kernel's connect timeout
 * (about two minutes), with no word to the clients.
 */
export const CONNECT_TIMEOUT_MS = 10_000;

/** Options for {@linkcode LinkMachine}. */
export interface LinkMachineOptions {
  /** The server's URL, for logs and the name-in-use message. */
  server: string;
  /** How the server shows this builder. */
  name: string;
  /** This builder process's secret session id, sent in every hello. */
  session: string;
  /** Sent in the hello when the server requires builder authentication. */
  token?: string | undefined;
  /** Without a word from the server this long, the link counts as dead. */
  heartbeatMs: number;
  /** Longest pause between reconnect attempts, in ms. */
  maxBackoffMs: number;
  /** How long an attempt may take to open. */
  connectTimeoutMs: number;
  /** Uniform in [0, 1): the reconnect jitter. */
  random: () => number;
  /** A deliberately wrong behaviour, for the simulator only. */
  mutant?: Mutant | undefined;
}

/** What the link needs from the builder it serves. */
export interface LinkHooks {
  /** Carries out an action (in the order emitted). */
  emit(action: BuilderAction): void;
  /** Writes a log line if its level is on. */
  log(level: Level, msg: string, fields: Fields): void;
  /** The link has a deadline at `at` (monotonic ms): wake then. */
  want(at: number): void;
  /**
   * The link is open and the hello sent: re-send what the server must
   * know again.  A `restored` marker follows it.
   */
  onOpen(): void;
  /** A validated message about a lease or a request, and its text. */
  onMessage(msg: LeaseMessage, text: string): void;
  /** End every lease held on the server's word; returns how many. */
  onFence(): number;
  /** The link is gone: what was sent on it must be sent again. */
  onLost(): void;
  /**
   * The link came up, or went down (or is known down: the first attempt
   * failed).  Not called when only the last error changes.
   */
  onLinkChange(status: LinkStatus): void;
}

/** Where the connection to the server is. */
type Phase = "none" | "connecting" | "open";

/** One link to the server, kept up for as long as the builder runs. */
export class LinkMachine {
  #opts: LinkMachineOptions;
  #hooks: LinkHooks;
  #phase: Phase = "none";
  #welcomed = false;
  #everWelcomed = false;
  #stopping = false;
  #attempt = 0;
  /** When to try again (monotonic ms); Infinity when no retry waits. */
  #retryAt = Infinity;
  /** When the attempt under way is given up; Infinity when none is. */
  #connectDeadline = Infinity;
  #lastHeard = 0;
  #pings = 0;
  #beatMs = 0;
  /** When the next heartbeat is due; Infinity before start and after stop. */
  #nextBeat = Infinity;
  /**
   * When the last confirmed round trip with the server began, on the
   * fence's clock: the send time of the last ping answered, or of the hello
   * that was welcomed.  The server heard us after that, so its own
   * last-heard time is later: fencing from here is always early enough.
   * Undefined while nothing is held on the server's word (before a
   * welcome, after fencing).
   */
  #roundTrip: number | undefined;
  #helloSentAt = 0;
  #pingSentAt = new Map<number, number>();
  /** The fence the server announced (ms): the heartbeat is set from it. */
  #fenceMs = 20_000;
  /** Fence after this long without a round trip (ms). */
  #fenceAfterMs = 20_000;
  /** When the fence is due (monotonic ms); Infinity when not armed. */
  #fenceAt = Infinity;
  #status: LinkStatus = { up: false, since: 0, error: undefined };

  constructor(options: LinkMachineOptions, hooks: LinkHooks) {
    this.#opts = options;
    this.#hooks = hooks;
  }

  /** Whether the link is open: what is sent now reaches the server. */
  get open(): boolean {
    return this.#phase === "open";
  }

  /** The link as clients are told it (see {@linkcode LinkStatus}). */
  get status(): LinkStatus {
    return this.#status;
  }

  /** The earliest of the link's deadlines (monotonic ms), or Infinity. */
  nextDeadline(): number {
    return Math.min(
      this.#connectDeadline,
      this.#retryAt,
      this.#nextBeat,
      this.#fenceAt,
    );
  }

  start(tick: Tick): void {
    this.#status = { up: false, since: tick.mono, error: undefined };
    this.#connect(tick);
    this.#setBeat(tick, this.#opts.heartbeatMs / 3);
  }

  /** Stops for good, closing the link cleanly. */
  stop(): void {
    this.#stopping = true;
    this.#retryAt =
      this.#connectDeadline =
      this.#nextBeat =
      this.#fenceAt =
        Infinity;
    if (this.#phase !== "none") {
      this.#phase = "none";
      this.#hooks.emit({
        type: "linkClose",
        code: 1000,
        reason: "builder shutting down",
      });
    }
  }

  /** Sends a message if the link is open; else it is dropped. */
  send(text: string): void {
    if (this.#phase === "open") this.#hooks.emit({ type: "linkSend", text });
  }

  /** The connection asked for is open: say hello, and restore. */
  opened(tick: Tick): void {
    if (this.#phase !== "connecting") return;
    this.#connectDeadline = Infinity;
    this.fenceIfStale(tick);
    this.#phase = "open";
    this.#lastHeard = tick.mono;
    this.#helloSentAt = this.#fenceClock(tick);
    this.#hooks.emit({
      type: "linkSend",
      text: encode({
        schema: SCHEMA,
        hello: {
          name: this.#opts.name,
          session: this.#opts.session,
          ...(this.#opts.token !== undefined && { token: this.#opts.token }),
        },
      }),
    });
    this.#hooks.onOpen();
    // Whatever the server kept for us that we did not just re-send (a
    // yield lost with the old link) is to be dropped.
    this.send(encode({ schema: SCHEMA, restored: true }));
  }

  /** A text message from the server. */
  message(tick: Tick, text: string): void {
    if (this.#phase !== "open") return;
    // First, before anything the message says: a builder waking from
    // SIGSTOP must end leases whose fence time ran out.
    if (this.fenceIfStale(tick)) return;
    this.#lastHeard = tick.mono;
    this.#fromServer(tick, text);
  }

  /** The connection closed, or the attempt failed. */
  closed(tick: Tick, close: LinkClose): void {
    if (this.#phase === "none") return;
    const { code, reason } = close;
    if (code === 1008 && reason.startsWith(NAME_IN_USE)) {
      this.#nameInUse(tick, reason.slice(NAME_IN_USE.length));
      return;
    }
    // A refused token will not fix itself: retry, but at the slowest pace.
    if (code === 1008) this.#attempt = Math.max(this.#attempt, 16);
    const why = code === 1008
      ? `refused by the server: ${reason}`
      : close.error ||
        `closed (code ${code}${reason ? `, ${reason}` : ""})`;
    this.#lost(tick, why, false);
  }

  /** The attempt asked for could not even start (a bad URL). */
  failed(tick: Tick, error: string): void {
    if (this.#phase !== "connecting") return;
    this.#phase = "none";
    this.#connectDeadline = Infinity;
    this.#hooks.log("error", "cannot connect to server", {
      server: this.#opts.server,
      error,
    });
    this.#down(tick, error);
    this.#scheduleReconnect(tick);
  }

  /** Does what is due by `tick`. */
  wake(tick: Tick): void {
    const now = tick.mono;
    if (now >= this.#fenceAt && !this.fenceIfStale(tick)) {
      // Not stale on the fence's clock yet (it is not this one).
      this.#armFence(tick);
    }
    if (now >= this.#connectDeadline) {
      this.#lost(
        tick,
        `no connection within ${this.#opts.connectTimeoutMs / 1000} s`,
        true,
      );
    }
    if (now >= this.#retryAt) {
      this.#retryAt = Infinity;
      this.#connect(tick);
    }
    if (now >= this.#nextBeat) {
      this.#nextBeat = now + this.#beatMs;
      this.#beat(tick);
    }
  }

  /**
   * Ends every lease our holders hold if the server may have given them
   * away: no round trip for longer than the fence.  The server keeps a
   * lost builder's leases counted for longer (its builder grace), so no
   * holder outlives its count.  Returns whether it fenced.
   */
  fenceIfStale(tick: Tick): boolean {
    if (this.#roundTrip === undefined) return false;
    const silentMs = this.#fenceClock(tick) - this.#roundTrip;
    if (silentMs <= this.#fenceAfterMs) return false;
    const ended = this.#hooks.onFence();
    const open = this.#phase === "open";
    if (ended > 0 || open) {
      this.#hooks.log("warn", "fenced: no round trip with the server in time", {
        seconds: Math.round(silentMs / 100) / 10,
        fence: this.#fenceAfterMs / 1000,
        leases: ended,
      });
    }
    // Nothing is held on the server's word any more until a new welcome.
    this.#roundTrip = undefined;
    this.#fenceAt = Infinity;
    if (open) {
      this.#lost(
        tick,
        `no round trip for ${Math.round(silentMs / 1000)} s`,
        true,
      );
    }
    return true;
  }

  /**
   * The fence's clock: the monotonic one, which no one can step; or, as
   * the mutant `wall-clock-fence`, the wall clock, which a step moves.
   */
  #fenceClock(tick: Tick): number {
    return this.#opts.mutant === "wall-clock-fence" ? tick.wall : tick.mono;
  }

  #connect(tick: Tick): void {
    if (this.#stopping) return;
    this.#phase = "connecting";
    this.#connectDeadline = tick.mono + this.#opts.connectTimeoutMs;
    this.#hooks.want(this.#connectDeadline);
    this.#hooks.emit({ type: "connect" });
  }

  /**
   * Another live builder holds our name: every retry would be refused for
   * as long as it lives, so the link stops and the builder exits.
   */
  #nameInUse(tick: Tick, other: string): void {
    const { name, server } = this.#opts;
    this.#hooks.log(
      "error",
      "refused by the server: another live builder has our name",
      { name, other, hint: "give this builder another --name" },
    );
    this.#phase = "none";
    this.#welcomed = false;
    this.#down(tick, `refused by the server: ${NAME_IN_USE}${other}`);
    this.stop();
    this.#hooks.emit({
      type: "refused",
      other,
      message: nameInUseMessage({ name, server, other }),
    });
  }

  /** The link is up (welcomed): tell the clients that were told it was down. */
  #upNow(tick: Tick): void {
    this.#status = { up: true, since: tick.mono, error: undefined };
    this.#hooks.onLinkChange(this.#status);
  }

  /**
   * The link is down, or an attempt failed again.  Clients hear of it when
   * it goes down and when the first attempt fails, not at every retry.
   */
  #down(tick: Tick, error: string): void {
    const was = this.#status;
    if (!was.up && was.error !== undefined) {
      this.#status = { up: false, since: was.since, error };
      return;
    }
    this.#status = {
      up: false,
      since: was.up ? tick.mono : was.since,
      error,
    };
    this.#hooks.onLinkChange(this.#status);
  }

  /**
   * The link is gone (closed, silent past the heartbeat, not open in
   * time, or fenced).  Clients stay: their leases and requests are
   * restored when the link returns.  `close`: the connection is still
   * there, and is to be closed.
   */
  #lost(tick: Tick, why: string, close: boolean): void {
    this.#connectDeadline = Infinity;
    // Up means welcomed: a link refused at its hello was never up.
    const wasUp = this.#welcomed;
    this.#phase = "none";
    this.#welcomed = false;
    if (close) this.#hooks.emit({ type: "linkClose", code: 1000, reason: "" });
    if (this.#stopping) return;
    if (wasUp) {
      this.#hooks.log("warn", "lost the server", { reason: why });
    } else {
      this.#hooks.log("error", "cannot connect to server", {
        server: this.#opts.server,
        reason: why,
      });
    }
    this.#down(tick, why);
    this.#hooks.onLost();
    this.#scheduleReconnect(tick);
  }

  #scheduleReconnect(tick: Tick): void {
    if (this.#stopping) return;
    const cap = this.#opts.maxBackoffMs;
    const base = Math.min(cap, 100 * 2 ** this.#attempt++);
    const delay = base / 2 + this.#opts.random() * base / 2;
    this.#retryAt = tick.mono + delay;
    this.#hooks.want(this.#retryAt);
  }

  #setBeat(tick: Tick, ms: number): void {
    if (ms === this.#beatMs || this.#stopping) return;
    this.#beatMs = ms;
    this.#nextBeat = tick.mono + ms;
    this.#hooks.want(this.#nextBeat);
  }

  #armFence(tick: Tick): void {
    if (this.#roundTrip === undefined || this.#stopping) {
      this.#fenceAt = Infinity;
      return;
    }
    // On the monotonic clock whatever the fence's: the wake-up is.
    this.#fenceAt = tick.mono +
      (this.#roundTrip + this.#fenceAfterMs + 1 - this.#fenceClock(tick));
    this.#hooks.want(this.#fenceAt);
  }

  /** Pings the server, and declares the link dead when it stays silent. */
  #beat(tick: Tick): void {
    if (this.fenceIfStale(tick)) return;
    if (this.#phase !== "open") return;
    const silentMs = tick.mono - this.#lastHeard;
    if (silentMs > this.#opts.heartbeatMs) {
      this.#lost(tick, `no answer for ${Math.round(silentMs / 1000)} s`, true);
      return;
    }
    const n = ++this.#pings;
    this.#pingSentAt.set(n, this.#fenceClock(tick));
    this.send(encode({ schema: SCHEMA, ping: n }));
  }

  #fromServer(tick: Tick, text: string): void {
    let msg;
    try {
      msg = parseServerMessage(text);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.#hooks.log("warn", "bad message from server", {
        error: err.message,
      });
      return;
    }
    if ("pong" in msg) {
      const sentAt = this.#pingSentAt.get(msg.pong);
      if (sentAt !== undefined && this.#welcomed) {
        for (const n of this.#pingSentAt.keys()) {
          if (n <= msg.pong) this.#pingSentAt.delete(n);
        }
        this.#roundTrip = Math.max(this.#roundTrip ?? sentAt, sentAt);
        this.#armFence(tick);
      }
      return;
    }
    if ("welcome" in msg) {
      this.#welcome(tick, msg.welcome);
      return;
    }
    this.#hooks.onMessage(msg, text);
  }

  #welcome(tick: Tick, welcome: WelcomeMessage["welcome"]): void {
    // Only now is the link healthy: the backoff starts again from short.
    this.#attempt = 0;
    this.#welcomed = true;
    this.#pingSentAt.clear();
    if (welcome.fence !== undefined) this.#fenceMs = welcome.fence * 1000;
    const heartbeatMs = (welcome.heartbeat ?? Infinity) * 1000;
    this.#fenceAfterMs = this.#opts.mutant === "fence-late"
      // The mutant `fence-late`: fence only after the server's builder
      // grace (twice the fence) and a heartbeat have passed, and a
      // heartbeat more: the server has given our leases away by then.
      ? 2 * this.#fenceMs +
        2 *
          (Number.isFinite(heartbeatMs) ? heartbeatMs : this.#opts.heartbeatMs)
      : this.#fenceMs;
    // Ping often enough that a healthy link never nears the fence, and
    // at least every half of the server's heartbeat: the server drops a
    // lost builder's leases a builder grace and a heartbeat after it last
    // heard it, so a builder frozen for less than the grace always wakes
    // (and fences) first.
    this.#setBeat(
      tick,
      Math.min(this.#opts.heartbeatMs / 3, this.#fenceMs / 4, heartbeatMs / 2),
    );
    this.#roundTrip = this.#helloSentAt;
    this.#armFence(tick);
    this.#hooks.log("info", "connected to server", {
      server: this.#opts.server,
      id: welcome.id,
    });
    this.#upNow(tick);
    if (!this.#everWelcomed) {
      this.#everWelcomed = true;
      this.#hooks.emit({ type: "connected" });
    }
  }
}
