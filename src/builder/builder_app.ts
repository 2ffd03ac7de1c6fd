/**
 * The builder shell: a Unix socket that `sai-resource` clients (ours or the
 * C one) connect to, and one link to the server (`server_link.ts`).  It
 * forwards each client's request, routes answers back by cookie, ends each
 * lease at its end by its own clock, and yields a client's lease or queued
 * request the moment its connection closes.
 *
 * @module
 */

import { JsonObjectSplitter } from "../protocol/json_splitter.ts";
import { Logger } from "../shared/log.ts";
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
} from "../protocol/protocol.ts";
import { writeAll } from "../client/lease_client.ts";
import { isAbstract } from "../shared/socket_path.ts";
import { Deadlines } from "./deadlines.ts";
import {
  type LeaseMessage,
  type LinkStatus,
  NameInUseError,
  ServerLink,
} from "./server_link.ts";
import { listenUnix, UnsafeSocketDirError } from "./socket_listen.ts";
import { monotonic, toWallClock } from "../shared/clock.ts";

/** Options for {@linkcode startBuilder}. */
export interface BuilderOptions {
  /** `ws://HOST:PORT` of the server. */
  server: string;
  /** Where to listen; `@NAME` is an abstract socket (Linux). */
  socketPath: string;
  /** How the server shows this builder. */
  name: string;
  logger?: Logger;
  /** How long a client may take to send its request, in ms (default 10000). */
  requestTimeoutMs?: number;
  /** Longest pause between reconnect attempts, in ms (default 5000). */
  maxBackoffMs?: number;
  /** Seconds without a word from the server before the link counts as dead (default 10). */
  heartbeat?: number;
  /** Sent in the hello when the server requires builder authentication. */
  token?: string;
  /** PEM CA certificate(s) to trust for a wss:// server. */
  ca?: string;
  /** Open the socket to this group (name or gid): modes 0770 and 0660. */
  socketGroup?: string;
  /**
   * `socketPath` is the default, not one the user chose: if its directory
   * is unsafe (another user made it first), listen in a private directory
   * of our own instead of failing.
   */
  socketFallback?: boolean;
}

/** A running builder. */
export interface SaiBuilder {
  readonly socketPath: string;
  /** Resolves when the first connection to the server is up. */
  readonly connected: Promise<void>;
  /**
   * Resolves if the server refuses this builder for good (another live
   * builder holds its name): it has stopped trying, and should exit.
   */
  readonly refused: Promise<NameInUseError>;
  /** Stops listening, drops the clients and the server link. */
  shutdown(): Promise<void>;
}

type ClientState = "pending" | "sent" | "granted";

interface Client {
  conn: Deno.UnixConn;
  cookie: string;
  /**
   * The request as validated: only this is forwarded, never the client's
   * text, whose other members (a `hello`, a `ping`) the server would read.
   */
  request: RequestMessage;
  state: ClientState;
  /** Whether the request ever reached a server. */
  sent: boolean;
  /** When the lease ends by this builder's clock, once granted. */
  expires: number;
  /**
   * The grant's id from the server, once granted (our server's; upstream's
   * sends none).  Every yield and restore names it, and a server message
   * naming another grant is about an ended lease of the same cookie.
   */
  grantId?: string;
  /** Why the client gave it back, when it said (passed on to the server). */
  reason?: YieldReason;
  /** The last write to the client, once there was one: later ones follow it. */
  writes?: Promise<void>;
  /** Whether it was told the link is down, and not yet that it is back. */
  toldDown?: boolean;
}

/** Starts a builder; resolves once its Unix socket is listening. */
export async function startBuilder(
  options: BuilderOptions,
): Promise<SaiBuilder> {
  let socketPath = options.socketPath;
  let listener;
  let madeDir: string | undefined;
  try {
    listener = await listenUnix(socketPath, options.socketGroup);
  } catch (err) {
    if (!options.socketFallback || !(err instanceof UnsafeSocketDirError)) {
      throw err;
    }
    // Any local user can make /tmp/sai-UID before us, and keep our default
    // from ever being safe: a directory of a random name is ours alone.
    madeDir = await Deno.makeTempDir({
      prefix: `sai-${Deno.uid() ?? "user"}-`,
    });
    socketPath = `${madeDir}/${
      socketPath.slice(socketPath.lastIndexOf("/") + 1)
    }`;
    (options.logger ?? new Logger("info")).warn(
      "the default socket directory is unsafe: listening in a private one",
      { unsafe: err.message, socket: socketPath },
    );
    listener = await listenUnix(socketPath, options.socketGroup);
  }
  const app = new BuilderApp({ ...options, socketPath }, listener);
  app.start();
  return {
    socketPath,
    connected: app.connected,
    refused: app.refused,
    shutdown: async () => {
      await app.shutdown();
      if (madeDir !== undefined) await Deno.remove(madeDir).catch(() => {});
    },
  };
}

const encoder = new TextEncoder();

/**
 * A client connection's read buffer: a request is a few hundred bytes at
 * most in practice, and longer ones are read in parts.
 */
const READ_BUFFER_BYTES = 1024;

/** A write buffer of the pool: a grant with a cookie of 255 characters fits. */
const WRITE_BUFFER_BYTES = 1024;

/** Splits reads that hold whole objects, for any connection (see below). */
let shared = new JsonObjectSplitter();

/** How many read buffers of closed client connections are kept for reuse. */
const MAX_SPARE_BUFFERS = 1024;

/** How many expired cookies a builder remembers for late releases. */
const MAX_EXPIRED_REMEMBERED = 4096;

class BuilderApp {
  #opts: BuilderOptions;
  #log: Logger;
  #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  #clients = new Map<string, Client>();
  /** Cookies whose lease expired, newest last, with when (monotonic ms). */
  #expired = new Map<string, number>();
  #open = new Set<Deno.UnixConn>();
  #link: ServerLink;
  #stopping = false;
  #accepting: Promise<void> | undefined;
  #refused = Promise.withResolvers<NameInUseError>();
  /**
   * Connections yet to send their request, with their deadline (monotonic ms):
   * one sweep for all instead of a timer per connection.
   */
  #awaiting = new Map<Deno.UnixConn, number>();
  #requestTimeoutMs: number;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  /** Read buffers of closed connections, for the next ones. */
  #buffers: Uint8Array<ArrayBuffer>[] = [];
  /** Buffers grants are encoded into, between writes. */
  #writeBuffers: Uint8Array<ArrayBuffer>[] = [];
  /** Whether info events are written: their fields are built only then. */
  #logInfo: boolean;
  /** Ends each lease at its end by our clock, link up or not. */
  #leaseEnds = new Deadlines<Client>({
    onDue: (client) => this.#endLease(client, "expired"),
    isLive: (client, at) =>
      client.state === "granted" && client.expires === at &&
      this.#clients.get(client.cookie) === client,
  });

  constructor(
    opts: BuilderOptions,
    listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>,
  ) {
    this.#opts = opts;
    this.#log = opts.logger ?? new Logger("info");
    this.#listener = listener;
    this.#link = new ServerLink({
      server: opts.server,
      name: opts.name,
      token: opts.token,
      ca: opts.ca,
      heartbeatMs: (opts.heartbeat ?? 10) * 1000,
      maxBackoffMs: opts.maxBackoffMs ?? 5000,
      log: this.#log,
      onOpen: () => this.#restore(),
      onMessage: (msg, text) => this.#fromServer(msg, text),
      onFence: () => this.#fence(),
      onLost: () => {
        for (const client of this.#clients.values()) {
          if (client.state === "sent") client.state = "pending";
        }
      },
      onLinkChange: (status) => this.#linkChanged(status),
      onNameInUse: (err) => this.#refused.resolve(err),
    });
    this.#logInfo = this.#log.enabled("info");
    this.#requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  }

  get connected(): Promise<void> {
    return this.#link.connected;
  }

  get refused(): Promise<NameInUseError> {
    return this.#refused.promise;
  }

  start(): void {
    if (isAbstract(this.#opts.socketPath)) {
      // No file, so no modes: the cost of upstream's convention, said once.
      this.#log.warn(
        "abstract socket: every local user can connect to this builder and impersonate it",
        {
          socket: this.#opts.socketPath,
          hint:
            "release by cookie is refused on it; --socket PATH keeps the builder to this user",
        },
      );
    }
    this.#link.start();
    // A late request is refused within a quarter of the limit past it.
    this.#sweepTimer = setInterval(
      () => this.#sweep(),
      Math.min(1000, this.#requestTimeoutMs / 4),
    );
    this.#accepting = this.#acceptLoop();
  }

  async shutdown(): Promise<void> {
    this.#stopping = true;
    this.#link.close();
    clearInterval(this.#sweepTimer);
    this.#leaseEnds.close();
    this.#listener.close();
    await this.#accepting;
    for (const conn of this.#open) closeQuietly(conn);
    if (isAbstract(this.#opts.socketPath)) return;
    try {
      await Deno.remove(this.#opts.socketPath);
    } catch {
      // Already gone.
    }
  }

  // --- the server's side ----------------------------------------------

  /** Ends every lease held on the server's word (fencing); how many. */
  #fence(): number {
    let ended = 0;
    for (const client of [...this.#clients.values()]) {
      if (client.state !== "granted") continue;
      ended++;
      this.#endLease(client, "fenced: lease lost");
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
  #endLease(client: Client, why: string): void {
    if (this.#clients.get(client.cookie) !== client) return;
    this.#clients.delete(client.cookie);
    this.#log.info(why, { cookie: client.cookie });
    this.#expire(client, {
      schema: SCHEMA,
      cookie: client.cookie,
      expired: true,
    });
    // Only once the holder has been told: then its unit may go to another.
    // By then the cookie may be in use again: the grant's id keeps this
    // late yield from ending that later lease.
    (client.writes ?? Promise.resolve()).finally(() =>
      this.#yield(client.cookie, undefined, client.grantId)
    );
  }

  /**
   * After (re)connecting: re-admit the leases our holders still hold (with
   * the time they have left by our clock), then the waiting requests in
   * their original order.  A lease that ran out while the link was down is
   * ended here: the server has already forgotten it.
   */
  #restore(): void {
    const now = monotonic();
    for (const client of [...this.#clients.values()]) {
      if (client.state !== "granted") continue;
      const left = client.expires - now;
      if (left <= 0) {
        this.#clients.delete(client.cookie);
        this.#log.info("expired while the server was away", {
          cookie: client.cookie,
        });
        this.#expire(client, {
          schema: SCHEMA,
          cookie: client.cookie,
          expired: true,
        });
        continue;
      }
      this.#toServer(encode({
        ...client.request,
        lease: Math.ceil(left / 1000),
        restore: "lease",
        ...(client.grantId !== undefined && { id: client.grantId }),
      }));
    }
    for (const client of this.#clients.values()) {
      if (client.state === "pending") this.#forward(client);
    }
  }

  #toServer(text: string): void {
    this.#link.send(text);
  }

  #forward(client: Client): void {
    const again = client.sent;
    client.state = "sent";
    client.sent = true;
    this.#toServer(
      encode(again ? { ...client.request, restore: "queued" } : client.request),
    );
  }

  #yield(cookie: string, reason?: YieldReason, id?: string): void {
    const msg: YieldMessage = { schema: SCHEMA, cookie };
    if (reason !== undefined) msg.reason = reason;
    if (id !== undefined) msg.id = id;
    this.#toServer(encode(msg));
  }

  #fromServer(msg: LeaseMessage, text: string): void {
    const client = this.#clients.get(msg.cookie);
    if (!client) {
      if ("amount" in msg) {
        // The client left before the grant arrived: give it straight back.
        this.#yield(msg.cookie, undefined, msg.id);
      } else if (msg.cookie === "" && "error" in msg) {
        this.#log.warn("server reported an error", { error: msg.error });
      }
      return;
    }
    if (
      ("expired" in msg || "error" in msg) && msg.id !== undefined &&
      msg.id !== client.grantId
    ) {
      // About an ended lease of this cookie (the server's expiry or a
      // force-release, crossing our own end of it): not this client's.
      this.#log.debug("ignored: about an ended lease", {
        cookie: msg.cookie,
        id: msg.id,
      });
      return;
    }
    if ("amount" in msg) {
      // A restored lease is acknowledged again: the holder already knows.
      if (client.state === "granted") {
        if (msg.id !== undefined) client.grantId = msg.id;
        return;
      }
      client.state = "granted";
      if (msg.id !== undefined) client.grantId = msg.id;
      // The grant's own length: shorter than asked when the server re-sends
      // a grant this builder missed (it counts from when it granted).
      const seconds = msg.lease > 0 && msg.lease < client.request.lease
        ? msg.lease
        : client.request.lease;
      client.expires = monotonic() + seconds * 1000;
      // Ended here at its end, whether or not the server can say so.
      this.#leaseEnds.add(client.expires, client);
      if (this.#logInfo) {
        this.#log.info("granted", { cookie: msg.cookie, amount: msg.amount });
      }
      // The server's text, validated, as is: no second encoding.
      this.#write(client, text, false);
    } else if ("expired" in msg) {
      this.#log.info("expired", { cookie: msg.cookie });
      this.#expire(client, msg);
    } else if ("error" in msg && client.state === "granted") {
      // The server ended it (an operator's force-release), or refused our
      // restore of it (after a fault that outlived the graces it would take
      // the resource past its budget): the server holds nothing for it, so
      // the lease is lost, and the holder is told so as of an expiry (a
      // launcher's --kill-on-expiry applies).
      this.#log.warn("lease lost: the server ended it", {
        cookie: msg.cookie,
        error: msg.error,
      });
      this.#expire(client, {
        schema: SCHEMA,
        cookie: client.cookie,
        expired: true,
      });
    } else if ("error" in msg) {
      this.#clients.delete(client.cookie);
      this.#log.info("refused", { cookie: msg.cookie, error: msg.error });
      this.#reply(client, msg, true);
    } else {
      this.#reply(client, msg, false);
    }
  }

  // --- the link's state, for the clients that wait ---------------------

  /** The link's state as a client is told it, wall-clock `since`. */
  #linkState(status: LinkStatus): LinkState {
    return {
      up: status.up,
      server: this.#opts.server,
      since: toWallClock()(status.since),
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
    for (const client of this.#clients.values()) {
      if (client.state === "granted" || !client.request.link) continue;
      if (status.up && !client.toldDown) continue;
      link ??= this.#linkState(status);
      this.#tellLink(client, link);
    }
  }

  #tellLink(client: Client, link: LinkState): void {
    client.toldDown = !link.up;
    this.#write(
      client,
      encode({ schema: SCHEMA, cookie: client.cookie, link }),
      false,
    );
  }

  // --- the Unix socket ------------------------------------------------

  async #acceptLoop(): Promise<void> {
    // Out of file descriptors (EMFILE), accept fails at once, every time:
    // back off, and log once a second with a count, not once per failure.
    let backoffMs = 0;
    let failures = 0;
    let loggedAt = 0;
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.#stopping) return;
        failures++;
        const now = monotonic();
        if (now - loggedAt >= 1000) {
          this.#log.warn("accept failed", {
            error: (err as Error).message,
            repeated: failures,
          });
          loggedAt = now;
          failures = 0;
        }
        backoffMs = Math.min(1000, Math.max(10, backoffMs * 2));
        await new Promise((r) => setTimeout(r, backoffMs));
        if (this.#stopping) return;
        continue;
      }
      backoffMs = 0;
      this.#open.add(conn);
      this.#serveClient(conn);
    }
  }

  async #serveClient(conn: Deno.UnixConn): Promise<void> {
    // The shared splitter, until a read leaves part of an object in it:
    // nearly every request arrives whole in one read.
    let splitter: JsonObjectSplitter | undefined;
    const buf = this.#buffers.pop() ?? new Uint8Array(READ_BUFFER_BYTES);
    let mine: Client | undefined;
    this.#awaiting.set(conn, monotonic() + this.#requestTimeoutMs);
    try {
      for (;;) {
        let n: number | null;
        try {
          n = await conn.read(buf);
        } catch {
          break;
        }
        if (n === null) break;
        let texts: string[];
        try {
          if (splitter) texts = splitter.push(buf.subarray(0, n));
          else {
            texts = shared.push(buf.subarray(0, n));
            if (shared.partial) {
              splitter = shared;
              shared = new JsonObjectSplitter();
            }
          }
        } catch (err) {
          // A splitter is unusable after an error: the shared one too.
          if (!splitter) shared = new JsonObjectSplitter();
          if (!(err instanceof ProtocolError)) throw err;
          this.#refuseAndClose(conn, mine?.cookie ?? "", err.message);
          break;
        }
        for (const text of texts) {
          this.#awaiting.delete(conn);
          const done = this.#clientMessage(conn, text, mine);
          if (done === "close") return;
          mine = done;
        }
      }
    } finally {
      this.#awaiting.delete(conn);
      this.#open.delete(conn);
      if (this.#buffers.length < MAX_SPARE_BUFFERS) this.#buffers.push(buf);
      if (mine && this.#clients.get(mine.cookie) === mine) {
        this.#clients.delete(mine.cookie);
        if (mine.state !== "pending") {
          this.#yield(mine.cookie, mine.reason, mine.grantId);
        }
        if (this.#logInfo) {
          this.#log.info(mine.state === "granted" ? "released" : "withdrawn", {
            cookie: mine.cookie,
            ...(mine.reason && { reason: mine.reason }),
          });
        }
      }
      closeQuietly(conn);
    }
  }

  /** Refuses the connections whose request is overdue. */
  #sweep(): void {
    const now = monotonic();
    // In insertion order, which is deadline order: stop at the first due
    // later.
    for (const [conn, deadline] of this.#awaiting) {
      if (deadline > now) break;
      this.#awaiting.delete(conn);
      this.#refuseAndClose(conn, "", "No request within the time limit");
    }
  }

  /** Handles one message on a client connection. */
  #clientMessage(
    conn: Deno.UnixConn,
    text: string,
    mine: Client | undefined,
  ): Client | "close" {
    let msg;
    try {
      msg = parseClientMessage(text);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.#refuseAndClose(conn, err.cookie ?? mine?.cookie ?? "", err.message);
      return "close";
    }
    if (isCheck(msg)) {
      if (mine) {
        this.#refuseAndClose(
          conn,
          mine.cookie,
          "Cannot handle message: a check is alone on its connection",
        );
      } else {
        this.#answerAndClose(conn, {
          schema: SCHEMA,
          builder: this.#opts.name,
          link: this.#linkState(this.#link.status),
        });
      }
      return "close";
    }
    if (mine) {
      // The one thing a client may say after its request: give it back.
      if (!isRequest(msg) && msg.cookie === mine.cookie) {
        if (msg.reason) mine.reason = msg.reason;
        return "close";
      }
      this.#refuseAndClose(
        conn,
        mine.cookie,
        "Cannot handle message: only one request per connection",
      );
      return "close";
    }
    if (!isRequest(msg)) {
      this.#releaseOther(conn, msg.cookie);
      return "close";
    }
    if (this.#clients.has(msg.cookie)) {
      this.#refuseAndClose(
        conn,
        msg.cookie,
        `Cannot lease "${msg.resname}": cookie "${msg.cookie}" is already in use on this builder`,
      );
      return "close";
    }
    const client: Client = {
      conn,
      cookie: msg.cookie,
      request: msg,
      state: "pending",
      sent: false,
      expires: 0,
    };
    this.#clients.set(msg.cookie, client);
    // A new lease under this cookie: a later release is about that one.
    this.#expired.delete(msg.cookie);
    if (this.#log.enabled("debug")) this.#log.debug("request", { ...msg });
    if (this.#link.up) this.#forward(client);
    const status = this.#link.status;
    // Known down: said at once, not after the whole --wait.
    if (msg.link && !status.up && status.error !== undefined) {
      this.#tellLink(client, this.#linkState(status));
    }
    return client;
  }

  /**
   * A release by cookie from another connection (`sai-resource --release`).
   * Refused on an abstract socket: any local user can connect to it, and
   * would end other users' leases and take their units.  A path socket's
   * mode keeps it to the builder's own user (or `--socket-group`).
   */
  #releaseOther(conn: Deno.UnixConn, cookie: string): void {
    if (isAbstract(this.#opts.socketPath)) {
      this.#refuseAndClose(
        conn,
        cookie,
        `Cannot release "${cookie}" by cookie on the abstract socket "${this.#opts.socketPath}": every local user can connect to it; run the builder on a path socket (--socket PATH), or end the holder process (or use launcher or --foreground mode)`,
      );
      return;
    }
    const held = this.#clients.get(cookie);
    const expiredAt = this.#expired.get(cookie);
    if (!held && expiredAt !== undefined) {
      // Released after it ran out: say when, so the caller can tell how
      // long what it gated ran ungated.
      this.#expired.delete(cookie);
      this.#log.info("released after expiry", { cookie });
      this.#answerAndClose(conn, {
        schema: SCHEMA,
        cookie,
        released: true,
        expiredAt: toWallClock()(expiredAt),
      });
      return;
    }
    if (!held) {
      this.#refuseAndClose(
        conn,
        cookie,
        `Cannot release: no lease with cookie "${cookie}" on this builder`,
      );
      return;
    }
    this.#clients.delete(cookie);
    if (held.state !== "pending") this.#yield(cookie, undefined, held.grantId);
    this.#log.info("released by cookie", { cookie });
    closeQuietly(held.conn);
    this.#answerAndClose(conn, { schema: SCHEMA, cookie, released: true });
  }

  #answerAndClose(conn: Deno.UnixConn, msg: BuilderReply): void {
    writeAll(conn, encoder.encode(encode(msg)))
      .catch(() => {})
      .finally(() => closeQuietly(conn));
  }

  /**
   * The lease ran out: tell the client, and forget it, but keep its
   * connection open until the client closes it (the C client exits when
   * its connection drops, and upstream's cleanup expects it alive).  The
   * open connection counts toward nothing.
   */
  #expire(client: Client, msg: ServerMessage): void {
    this.#clients.delete(client.cookie);
    this.#expired.delete(client.cookie);
    this.#expired.set(client.cookie, monotonic());
    if (this.#expired.size > MAX_EXPIRED_REMEMBERED) {
      this.#expired.delete(this.#expired.keys().next().value!);
    }
    this.#reply(client, msg, false);
  }

  #refuseAndClose(conn: Deno.UnixConn, cookie: string, error: string): void {
    this.#log.warn("bad request from client", { error });
    writeAll(
      conn,
      encoder.encode(encode({ schema: SCHEMA, cookie, error }) + "\n"),
    )
      .catch(() => {})
      .finally(() => closeQuietly(conn));
  }

  /**
   * Writes to a client in order; optionally closes it afterwards.  Queue
   * progress goes only to a client that asked for it.
   */
  #reply(client: Client, msg: ServerMessage, close: boolean): void {
    if ("queued" in msg && !client.request.progress) return;
    this.#write(client, encode(msg), close);
  }

  #write(client: Client, text: string, close: boolean): void {
    const conn = client.conn;
    // Encoded into a pooled buffer, back in the pool once written: a new
    // array per grant (TextEncoder.encode) cost about 0.6 us.
    const pooled = text.length * 3 < WRITE_BUFFER_BYTES
      ? this.#writeBuffers.pop() ?? new Uint8Array(WRITE_BUFFER_BYTES)
      : undefined;
    let bytes: Uint8Array;
    if (pooled) {
      const { written } = encoder.encodeInto(text, pooled);
      pooled[written] = 0x0a;
      bytes = pooled.subarray(0, written + 1);
    } else bytes = encoder.encode(text + "\n");
    const previous = client.writes;
    // The common case, a grant to a fresh client, writes at once: no chain.
    let sent = previous
      ? previous.then(() => sendAll(conn, bytes))
      : sendAll(conn, bytes);
    if (pooled) {
      sent = sent.finally(() => {
        if (this.#writeBuffers.length < MAX_SPARE_BUFFERS) {
          this.#writeBuffers.push(pooled);
        }
      });
    }
    client.writes = close
      ? sent.then(() => closeQuietly(conn), () => closeQuietly(conn))
      : sent.catch(ignore);
  }
}

/** Writes all of `bytes`: one write, the usual case, then the rest if any. */
function sendAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  return conn.write(bytes).then((n) =>
    n < bytes.length ? writeAll(conn, bytes.subarray(n)) : undefined
  );
}

function ignore(): void {}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}
