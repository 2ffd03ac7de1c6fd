/**
 * The builder shell: a Unix socket that `sai-resource` clients (ours or the
 * C one) connect to, one WebSocket to the server, one timer, and the
 * logger.  Every decision is {@linkcode BuilderCore}'s (`core/`): the shell
 * turns each accepted connection, whole message, close, write done, link
 * event and timer into one call on it, and carries out the actions it
 * returns, in order.
 *
 * @module
 */

import { JsonObjectSplitter } from "../protocol/json_splitter.ts";
import { LEVELS, Logger } from "../shared/log.ts";
import { ProtocolError } from "../protocol/protocol.ts";
import { writeAll } from "../client/lease_client.ts";
import { isAbstract } from "../shared/socket_path.ts";
import { BuilderCore } from "./core/builder_core.ts";
import {
  type BuilderAction,
  type ClientId,
  nameInUseMessage,
} from "./core/actions.ts";
import { listenUnix, UnsafeSocketDirError } from "./socket_listen.ts";
import { openWebSocket, type WebSocketLike } from "./ws_client.ts";
import { monotonic, tick } from "../shared/clock.ts";
import { MAX_TIMER_MS } from "../shared/timers.ts";

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
  /** How long a connection attempt may take to open, in ms (default 10000). */
  connectTimeoutMs?: number;
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

/**
 * The server refused this builder for good: another live builder holds
 * its name.  `other` is that builder's address, as the server sees it.
 */
export class NameInUseError extends Error {
  override name = "NameInUseError";
  other: string;
  constructor(name: string, server: string, other: string) {
    super(nameInUseMessage({ name, server, other }));
    this.other = other;
  }
}

/** A client connection, as the shell holds it. */
interface Client {
  conn: Deno.UnixConn;
  /** The last write to it, once there was one: later ones follow it. */
  writes: Promise<void> | undefined;
  /** The core closed it: it is closed once its writes are done. */
  closing: boolean;
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

class BuilderApp {
  #opts: BuilderOptions;
  #log: Logger;
  #core: BuilderCore;
  #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  #clients = new Map<ClientId, Client>();
  #nextId = 0;
  #ws: WebSocketLike | undefined;
  #stopping = false;
  #accepting: Promise<void> | undefined;
  #connected = Promise.withResolvers<void>();
  #refused = Promise.withResolvers<NameInUseError>();
  /** The one timer: the core's wake-up. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Read buffers of closed connections, for the next ones. */
  #buffers: Uint8Array<ArrayBuffer>[] = [];
  /** Buffers grants are encoded into, between writes. */
  #writeBuffers: Uint8Array<ArrayBuffer>[] = [];

  constructor(
    opts: BuilderOptions,
    listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>,
  ) {
    this.#opts = opts;
    this.#log = opts.logger ?? new Logger("info");
    this.#listener = listener;
    const log = this.#log;
    this.#core = new BuilderCore({
      server: opts.server,
      name: opts.name,
      session: crypto.randomUUID(),
      token: opts.token,
      socket: opts.socketPath,
      abstractSocket: isAbstract(opts.socketPath),
      heartbeatMs: (opts.heartbeat ?? 10) * 1000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 10_000,
      maxBackoffMs: opts.maxBackoffMs ?? 5000,
      ...(opts.connectTimeoutMs !== undefined &&
        { connectTimeoutMs: opts.connectTimeoutMs }),
      logLevel: LEVELS.findLast((level) => log.enabled(level)) ?? "error",
      random: Math.random,
    });
  }

  get connected(): Promise<void> {
    return this.#connected.promise;
  }

  get refused(): Promise<NameInUseError> {
    return this.#refused.promise;
  }

  start(): void {
    this.#run(this.#core.start(tick()));
    this.#accepting = this.#acceptLoop();
  }

  async shutdown(): Promise<void> {
    this.#run(this.#core.shutdown(tick()));
    this.#stopping = true;
    clearTimeout(this.#timer);
    this.#listener.close();
    await this.#accepting;
    for (const client of this.#clients.values()) closeQuietly(client.conn);
    if (isAbstract(this.#opts.socketPath)) return;
    try {
      await Deno.remove(this.#opts.socketPath);
    } catch {
      // Already gone.
    }
  }

  // --- carrying out the core's actions --------------------------------

  #run(actions: readonly BuilderAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case "clientSend":
          this.#write(a.id, a.text, a.seq);
          break;
        case "linkSend": {
          const ws = this.#ws;
          if (ws !== undefined && ws.readyState === WebSocket.OPEN) {
            ws.send(a.text);
          }
          break;
        }
        case "clientClose":
          this.#close(a.id);
          break;
        case "wake":
          this.#arm(a.at);
          break;
        case "log":
          this.#log.log(a.level, a.msg, a.fields);
          break;
        case "connect":
          this.#connect();
          break;
        case "linkClose": {
          const ws = this.#ws;
          this.#ws = undefined;
          try {
            ws?.close(a.code, a.reason);
          } catch {
            // Closing already.
          }
          break;
        }
        case "connected":
          this.#connected.resolve();
          break;
        case "refused":
          this.#refused.resolve(
            new NameInUseError(this.#opts.name, this.#opts.server, a.other),
          );
          break;
      }
    }
  }

  /** Arms the one timer for the core's next wake-up. */
  #arm(at: number): void {
    if (this.#stopping) return;
    clearTimeout(this.#timer);
    // A deadline past what setTimeout takes is met in steps: the core
    // asks again when woken early.
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, at - monotonic()));
    this.#timer = setTimeout(this.#wake, delay);
  }

  #wake = (): void => {
    this.#timer = undefined;
    this.#run(this.#core.wake(tick()));
  };

  // --- the server link ------------------------------------------------

  #connect(): void {
    let ws: WebSocketLike;
    try {
      ws = openWebSocket(
        this.#opts.server,
        this.#opts.ca === undefined ? {} : { caCerts: [this.#opts.ca] },
      );
    } catch (err) {
      // Reported once this event's actions are carried out: the core is
      // never called from inside one of its own events.
      const error = (err as Error).message;
      queueMicrotask(() => this.#run(this.#core.linkFailed(tick(), error)));
      return;
    }
    this.#ws = ws;
    ws.onopen = () => {
      if (this.#ws === ws) this.#run(this.#core.linkOpened(tick()));
    };
    ws.onmessage = (ev) => {
      if (this.#ws === ws) this.#run(this.#core.linkMessage(tick(), ev.data));
    };
    let error = "";
    ws.onerror = (ev) => {
      error = (ev as ErrorEvent).message ?? "";
    };
    ws.onclose = (ev) => {
      if (this.#ws !== ws) return;
      this.#ws = undefined;
      this.#run(
        this.#core.linkClosed(tick(), {
          code: ev.code,
          reason: ev.reason,
          error,
        }),
      );
    };
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
      const id = ++this.#nextId;
      const client: Client = { conn, writes: undefined, closing: false };
      this.#clients.set(id, client);
      this.#serveClient(id, client);
    }
  }

  async #serveClient(id: ClientId, client: Client): Promise<void> {
    const conn = client.conn;
    // The shared splitter, until a read leaves part of an object in it:
    // nearly every request arrives whole in one read.
    let splitter: JsonObjectSplitter | undefined;
    const buf = this.#buffers.pop() ?? new Uint8Array(READ_BUFFER_BYTES);
    this.#run(this.#core.clientOpened(tick(), id));
    try {
      reading: while (!client.closing) {
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
          this.#run(this.#core.clientBadInput(tick(), id, err.message));
          break;
        }
        for (const text of texts) {
          this.#run(this.#core.clientMessage(tick(), id, text));
          if (client.closing) break reading;
        }
      }
    } finally {
      if (this.#buffers.length < MAX_SPARE_BUFFERS) this.#buffers.push(buf);
      // Closed by the core, it is closed after its writes; closed by the
      // client (or broken), at once.
      if (!client.closing) {
        this.#clients.delete(id);
        this.#run(this.#core.clientClosed(tick(), id));
        closeQuietly(conn);
      }
    }
  }

  /** Closes a client connection once what was written to it is. */
  #close(id: ClientId): void {
    const client = this.#clients.get(id);
    if (client === undefined || client.closing) return;
    client.closing = true;
    const close = () => {
      this.#clients.delete(id);
      closeQuietly(client.conn);
    };
    if (client.writes === undefined) close();
    else client.writes.then(close);
  }

  /**
   * Writes `text` and a newline to a client, after what was written to it
   * before; with `seq`, tells the core when that is done (or failed).
   */
  #write(id: ClientId, text: string, seq: number | undefined): void {
    const client = this.#clients.get(id);
    if (client === undefined) {
      // Gone already: its write has failed.  Said once this event's
      // actions are carried out: the core is never called from inside one
      // of its own events.
      if (seq !== undefined) {
        queueMicrotask(() => this.#run(this.#core.clientWritten(tick(), seq)));
      }
      return;
    }
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
    if (seq !== undefined) {
      const done = () => this.#run(this.#core.clientWritten(tick(), seq));
      sent = sent.then(done, done);
    }
    client.writes = sent.catch(ignore);
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
