/**
 * The builder's one link to the server: connecting and reconnecting with
 * backoff, the hello and its welcome, heartbeats, and fencing (ending every
 * lease held on the server's word when no round trip confirmed the link in
 * time).  What the link carries is the builder's business
 * (`builder_app.ts`): it is told when the link opens, what the server says,
 * when to fence and when the link is lost.
 *
 * @module
 */

import type { Logger } from "../shared/log.ts";
import {
  encode,
  NAME_IN_USE,
  parseServerMessage,
  type PongMessage,
  ProtocolError,
  SCHEMA,
  type ServerMessage,
  type WelcomeMessage,
} from "../protocol/protocol.ts";
import {
  openWebSocket,
  type WebSocketLike,
  type WebSocketOptions,
} from "./ws_client.ts";
import { monotonic } from "../shared/clock.ts";

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
 * The server refused this builder for good: another live builder holds
 * its name.  `other` is that builder's address, as the server sees it.
 */
export class NameInUseError extends Error {
  override name = "NameInUseError";
  other: string;
  constructor(name: string, server: string, other: string) {
    super(
      `Cannot join the server at "${server}": the name "${name}" is in use by a live builder at ${other}; give this builder another --name`,
    );
    this.other = other;
  }
}

/**
 * How long a connection attempt may take to open (TCP, TLS and the
 * WebSocket handshake): a server address that drops packets would
 * otherwise hold the first attempt for the kernel's connect timeout
 * (about two minutes), with no word to the clients.
 */
export const CONNECT_TIMEOUT_MS = 10_000;

/** Options for {@linkcode ServerLink}. */
export interface ServerLinkOptions {
  /** `ws://` or `wss://` URL of the server. */
  server: string;
  /** How the server shows this builder. */
  name: string;
  /** Sent in the hello when the server requires builder authentication. */
  token?: string | undefined;
  /** PEM CA certificate(s) to trust for a wss:// server. */
  ca?: string | undefined;
  /** Without a word from the server this long, the link counts as dead. */
  heartbeatMs: number;
  /** Longest pause between reconnect attempts, in ms. */
  maxBackoffMs: number;
  /** How long an attempt may take to open (default {@linkcode CONNECT_TIMEOUT_MS}). */
  connectTimeoutMs?: number;
  log: Logger;
  /**
   * The link is open and the hello sent: re-send what the server must
   * know again.  A `restored` marker follows it.
   */
  onOpen: () => void;
  /** A validated message about a lease or a request, and its text. */
  onMessage: (msg: LeaseMessage, text: string) => void;
  /** End every lease held on the server's word; returns how many. */
  onFence: () => number;
  /** The link is gone: what was sent on it must be sent again. */
  onLost: () => void;
  /**
   * The link came up, or went down (or is known down: the first attempt
   * failed).  Not called when only the last error changes.
   */
  onLinkChange?: (status: LinkStatus) => void;
  /** The server refused this builder for good; the link has stopped. */
  onNameInUse?: (err: NameInUseError) => void;
}

/** One WebSocket to the server, kept up for as long as the builder runs. */
export class ServerLink {
  #opts: ServerLinkOptions;
  #log: Logger;
  #ws: WebSocketLike | undefined;
  #up = false;
  #welcomed = false;
  #stopping = false;
  #attempt = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #connected = Promise.withResolvers<void>();
  #session = crypto.randomUUID();
  #lastHeard = 0;
  #pings = 0;
  #beatTimer: ReturnType<typeof setInterval> | undefined;
  #beatMs = 0;
  /**
   * When the last confirmed round trip with the server began, by our
   * clock: the send time of the last ping answered, or of the hello that
   * was welcomed.  The server heard us after that, so its own last-heard
   * time is later: fencing from here is always early enough.
   */
  #roundTrip = 0;
  #helloSentAt = 0;
  #pingSentAt = new Map<number, number>();
  /** Fence after this long without a round trip (from the welcome). */
  #fenceMs = 20_000;
  #fenceTimer: ReturnType<typeof setTimeout> | undefined;
  #status: LinkStatus = { up: false, since: monotonic(), error: undefined };
  #openTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ServerLinkOptions) {
    this.#opts = options;
    this.#log = options.log;
  }

  /** Resolves when the first connection is welcomed. */
  get connected(): Promise<void> {
    return this.#connected.promise;
  }

  /** Whether the link is open: what is sent now reaches the server. */
  get up(): boolean {
    return this.#up;
  }

  /** The link as clients are told it (see {@linkcode LinkStatus}). */
  get status(): LinkStatus {
    return this.#status;
  }

  start(): void {
    this.#status = { up: false, since: monotonic(), error: undefined };
    this.#connect();
    this.#setBeat(this.#opts.heartbeatMs / 3);
  }

  /** Stops for good, closing the link cleanly. */
  close(): void {
    this.#stopping = true;
    clearTimeout(this.#retryTimer);
    clearInterval(this.#beatTimer);
    clearTimeout(this.#fenceTimer);
    clearTimeout(this.#openTimer);
    this.#ws?.close(1000, "builder shutting down");
  }

  /** Sends a message if the link is up; else it is dropped. */
  send(text: string): void {
    if (this.#up && this.#ws?.readyState === WebSocket.OPEN) {
      this.#ws.send(text);
    }
  }

  #connect(): void {
    if (this.#stopping) return;
    let ws: WebSocketLike;
    try {
      ws = openWebSocket(this.#opts.server, this.#wsOptions());
    } catch (err) {
      this.#log.error("cannot connect to server", {
        server: this.#opts.server,
        error: (err as Error).message,
      });
      this.#down((err as Error).message);
      this.#scheduleReconnect();
      return;
    }
    this.#ws = ws;
    const openMs = this.#opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    clearTimeout(this.#openTimer);
    this.#openTimer = setTimeout(() => {
      this.#linkLost(ws, `no connection within ${openMs / 1000} s`);
    }, openMs);
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      clearTimeout(this.#openTimer);
      this.#fenceIfStale();
      this.#up = true;
      this.#lastHeard = monotonic();
      this.#helloSentAt = this.#lastHeard;
      ws.send(encode({
        schema: SCHEMA,
        hello: {
          name: this.#opts.name,
          session: this.#session,
          ...(this.#opts.token !== undefined && { token: this.#opts.token }),
        },
      }));
      this.#opts.onOpen();
      // Whatever the server kept for us that we did not just re-send (a
      // yield lost with the old link) is to be dropped.
      this.send(encode({ schema: SCHEMA, restored: true }));
    };
    ws.onmessage = (ev) => {
      if (this.#ws !== ws) return;
      // First, before anything the message says: a builder waking from
      // SIGSTOP must end leases whose fence time ran out.
      if (this.#fenceIfStale()) return;
      this.#lastHeard = monotonic();
      if (typeof ev.data === "string") this.#fromServer(ev.data);
    };
    let error = "";
    ws.onerror = (ev) => {
      error = (ev as ErrorEvent).message ?? "";
    };
    ws.onclose = (ev) => {
      if (
        ev.code === 1008 && ev.reason.startsWith(NAME_IN_USE) &&
        this.#ws === ws
      ) {
        this.#nameInUse(ev.reason.slice(NAME_IN_USE.length));
        return;
      }
      // A refused token will not fix itself: retry, but at the slowest pace.
      if (ev.code === 1008) this.#attempt = Math.max(this.#attempt, 16);
      const why = ev.code === 1008
        ? `refused by the server: ${ev.reason}`
        : error ||
          `closed (code ${ev.code}${ev.reason ? `, ${ev.reason}` : ""})`;
      this.#linkLost(ws, why);
    };
  }

  /**
   * Another live builder holds our name: every retry would be refused for
   * as long as it lives, so the link stops and the builder exits.
   */
  #nameInUse(other: string): void {
    const err = new NameInUseError(this.#opts.name, this.#opts.server, other);
    this.#log.error(
      "refused by the server: another live builder has our name",
      {
        name: this.#opts.name,
        other,
        hint: "give this builder another --name",
      },
    );
    this.#down(`refused by the server: ${NAME_IN_USE}${other}`);
    this.close();
    this.#ws = undefined;
    this.#up = false;
    this.#welcomed = false;
    this.#opts.onNameInUse?.(err);
  }

  /** The link is up (welcomed): tell the clients that were told it was down. */
  #upNow(): void {
    this.#status = { up: true, since: monotonic(), error: undefined };
    this.#opts.onLinkChange?.(this.#status);
  }

  /**
   * The link is down, or an attempt failed again.  Clients hear of it when
   * it goes down and when the first attempt fails, not at every retry.
   */
  #down(error: string): void {
    const was = this.#status;
    if (!was.up && was.error !== undefined) {
      this.#status = { up: false, since: was.since, error };
      return;
    }
    this.#status = {
      up: false,
      since: was.up ? monotonic() : was.since,
      error,
    };
    this.#opts.onLinkChange?.(this.#status);
  }

  #wsOptions(): WebSocketOptions {
    return this.#opts.ca === undefined ? {} : { caCerts: [this.#opts.ca] };
  }

  /**
   * The link is gone (closed, or silent past the heartbeat).  Clients stay:
   * their leases and requests are restored when the link returns.
   */
  #linkLost(ws: WebSocketLike, why: string): void {
    if (this.#ws !== ws) return;
    clearTimeout(this.#openTimer);
    // Up means welcomed: a link refused at its hello was never up.
    const wasUp = this.#welcomed;
    this.#ws = undefined;
    this.#up = false;
    this.#welcomed = false;
    try {
      ws.close();
    } catch {
      // Closing already.
    }
    if (this.#stopping) return;
    if (wasUp) {
      this.#log.warn("lost the server", { reason: why });
    } else {
      this.#log.error("cannot connect to server", {
        server: this.#opts.server,
        reason: why,
      });
    }
    this.#down(why);
    this.#opts.onLost();
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#stopping) return;
    const cap = this.#opts.maxBackoffMs;
    const base = Math.min(cap, 100 * 2 ** this.#attempt++);
    const delay = base / 2 + Math.random() * base / 2;
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #setBeat(ms: number): void {
    if (ms === this.#beatMs) return;
    this.#beatMs = ms;
    clearInterval(this.#beatTimer);
    this.#beatTimer = setInterval(() => this.#beat(), ms);
  }

  /**
   * Ends every lease our holders hold if the server may have given them
   * away: no round trip for longer than the fence.  The server keeps a
   * lost builder's leases counted for longer (its builder grace), so no
   * holder outlives its count.  Returns whether it fenced.
   */
  #fenceIfStale(): boolean {
    if (this.#roundTrip === 0) return false;
    const silentMs = monotonic() - this.#roundTrip;
    if (silentMs <= this.#fenceMs) return false;
    const ended = this.#opts.onFence();
    const ws = this.#ws;
    if (ended > 0 || (ws && this.#up)) {
      this.#log.warn("fenced: no round trip with the server in time", {
        seconds: Math.round(silentMs / 100) / 10,
        fence: this.#fenceMs / 1000,
        leases: ended,
      });
    }
    // Nothing is held on the server's word any more until a new welcome.
    this.#roundTrip = 0;
    if (ws && this.#up) {
      this.#linkLost(ws, `no round trip for ${Math.round(silentMs / 1000)} s`);
    }
    return true;
  }

  #armFence(): void {
    clearTimeout(this.#fenceTimer);
    if (this.#roundTrip === 0 || this.#stopping) return;
    const at = this.#roundTrip + this.#fenceMs + 1;
    this.#fenceTimer = setTimeout(
      () => this.#fenceIfStale(),
      Math.max(0, at - monotonic()),
    );
  }

  /** Pings the server, and declares the link dead when it stays silent. */
  #beat(): void {
    if (this.#fenceIfStale()) return;
    const ws = this.#ws;
    if (!ws || !this.#up) return;
    const silentMs = monotonic() - this.#lastHeard;
    if (silentMs > this.#opts.heartbeatMs) {
      this.#linkLost(ws, `no answer for ${Math.round(silentMs / 1000)} s`);
      return;
    }
    const n = ++this.#pings;
    this.#pingSentAt.set(n, monotonic());
    this.send(encode({ schema: SCHEMA, ping: n }));
  }

  #fromServer(text: string): void {
    let msg;
    try {
      msg = parseServerMessage(text);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.#log.warn("bad message from server", { error: err.message });
      return;
    }
    if ("pong" in msg) {
      const sentAt = this.#pingSentAt.get(msg.pong);
      if (sentAt !== undefined && this.#welcomed) {
        for (const n of this.#pingSentAt.keys()) {
          if (n <= msg.pong) this.#pingSentAt.delete(n);
        }
        this.#roundTrip = Math.max(this.#roundTrip, sentAt);
        this.#armFence();
      }
      return;
    }
    if ("welcome" in msg) {
      // Only now is the link healthy: the backoff starts again from short.
      this.#attempt = 0;
      this.#welcomed = true;
      this.#pingSentAt.clear();
      if (msg.welcome.fence !== undefined) {
        this.#fenceMs = msg.welcome.fence * 1000;
      }
      // Ping often enough that a healthy link never nears the fence, and
      // at least every half of the server's heartbeat: the server drops a
      // lost builder's leases a builder grace and a heartbeat after it last
      // heard it, so a builder frozen for less than the grace always wakes
      // (and fences) first.
      this.#setBeat(
        Math.min(
          this.#opts.heartbeatMs / 3,
          this.#fenceMs / 4,
          (msg.welcome.heartbeat ?? Infinity) * 1000 / 2,
        ),
      );
      this.#roundTrip = this.#helloSentAt;
      this.#armFence();
      this.#log.info("connected to server", {
        server: this.#opts.server,
        id: msg.welcome.id,
      });
      this.#upNow();
      this.#connected.resolve();
      return;
    }
    this.#opts.onMessage(msg, text);
  }
}
