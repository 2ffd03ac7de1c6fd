/**
 * The server's listener: it reads the head of each connection's first
 * request itself.  A WebSocket upgrade is answered here and handed to a
 * {@linkcode ServerWebSocket}, which checks every frame's size at its
 * header; anything else is passed, one request per connection, to
 * `Deno.serve` on a private Unix socket ({@linkcode InnerHttp}), with the
 * peer's address in a header of our own (any copy the client sent is
 * removed), and the connection is closed once its response is complete.
 *
 * No HTTP load may end or starve the server: {@linkcode HttpAdmission}
 * bounds the connections waiting for a head and the requests proxied at
 * once (the excess gets 503), and times out heads and stalled requests;
 * accept errors (EMFILE) are backed off from and logged once a second.
 *
 * @module
 */

import type { Fields, Logger } from "../shared/log.ts";
import { HttpAdmission } from "./http_admission.ts";
import { InnerHttp } from "./inner_http.ts";
import { acceptKey, ServerWebSocket } from "./ws_server.ts";

/** The header that carries the peer's address to the HTTP routes. */
export const PEER_HEADER = "x-sai-peer";

/** Longest request head read, in bytes. */
const MAX_HEAD = 16 * 1024;

/**
 * How long a connection may take to send its request head, in ms: as long
 * as a builder has for its hello.  A peer that sends its head at once (a
 * builder, a reader) never comes near it.
 */
const HEAD_TIMEOUT_MS = 5_000;

/**
 * A proxied request with no byte moving either way for this long is closed
 * (a reader that stopped reading): twice the event streams' keep-alive.
 */
const HTTP_IDLE_TIMEOUT_MS = 30_000;

/**
 * A connection that has sent nothing for this long may be closed to make
 * room for a newcomer (ms); one that sent part of a head may be at once.
 * Long enough for a client's head to follow its connection across a
 * network, and short enough that a burst of silent connections ahead of a
 * reader in the backlog delays it by little (128 every 250 ms).
 */
const EVICT_AFTER_MS = 250;

/** How often the head and idle timeouts are checked, in ms. */
const SWEEP_MS = 500;

/** What a refused request is told to wait before it tries again. */
const RETRY_AFTER_SECONDS = 1;

const encoder = new TextEncoder();

/** Options for {@linkcode listenServer}. */
export interface ListenerOptions {
  hostname: string;
  port: number;
  tls?: { cert: string; key: string } | undefined;
  /** An upgrade to refuse (status and text), or undefined to accept it. */
  checkUpgrade: (
    headers: Headers,
    peer: string,
  ) => { status: number; text: string } | undefined;
  /** An accepted WebSocket. */
  onSocket: (socket: ServerWebSocket, peer: string) => void;
  /** Every other request. */
  http: (req: Request, peer: string) => Response | Promise<Response>;
  maxMessageBytes: number;
  /**
   * Most requests proxied at once, and most connections waiting for their
   * request head (`--max-http-connections`).
   */
  maxHttpConnections: number;
  logger: Logger;
}

/** A listening server. */
export interface Listening {
  addr: Deno.NetAddr;
  /** Resolves when it has stopped: only ever after a shutdown. */
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

/** Listens; resolves once it is listening. */
export async function listenServer(
  options: ListenerOptions,
): Promise<Listening> {
  const dir = await Deno.makeTempDir({ prefix: "sai-server-" });
  let listener: Deno.Listener;
  try {
    listener = options.tls
      ? Deno.listenTls({
        hostname: options.hostname,
        port: options.port,
        cert: options.tls.cert,
        key: options.tls.key,
      })
      : Deno.listen({ hostname: options.hostname, port: options.port });
  } catch (err) {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
  let inner: InnerHttp;
  try {
    inner = await InnerHttp.start({
      dir,
      log: options.logger,
      handler: (req) => {
        if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
          return new Response(
            "A WebSocket upgrade must be a connection's first request\n",
            { status: 400 },
          );
        }
        return options.http(req, req.headers.get(PEER_HEADER) ?? "");
      },
    });
  } catch (err) {
    listener.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    throw err;
  }
  const server = new Listener(listener, inner, options);
  const finished = server.finished.then(async () => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  });
  return {
    addr: listener.addr as Deno.NetAddr,
    finished,
    shutdown: async () => {
      await server.shutdown();
      await finished;
    },
  };
}

/**
 * Logs an event that can happen thousands of times a second at most once
 * a second, with how many times it happened since the last line.
 */
class Throttled {
  #log: (fields: Fields) => void;
  #count = 0;
  #at = -Infinity;

  constructor(log: (fields: Fields) => void) {
    this.#log = log;
  }

  note(fields: Fields = {}): void {
    this.#count++;
    const now = performance.now();
    if (now - this.#at < 1000) return;
    this.#log({ ...fields, repeated: this.#count });
    this.#count = 0;
    this.#at = now;
  }
}

/** The accept loop and what becomes of each connection. */
class Listener {
  readonly finished: Promise<void>;
  #listener: Deno.Listener;
  #inner: InnerHttp;
  #opts: ListenerOptions;
  #admission: HttpAdmission<Deno.Conn>;
  /** Every connection, ours to the HTTP server too: closed at shutdown. */
  #open = new Set<Deno.Conn>();
  #closing = false;
  /** Wakes the accept loop while it waits for room in the head pool. */
  #wakeAccept: (() => void) | undefined;
  #sweep: ReturnType<typeof setInterval>;
  #acceptFailed: Throttled;
  #busy: Throttled;
  #evicted: Throttled;
  #unreachable: Throttled;

  constructor(
    listener: Deno.Listener,
    inner: InnerHttp,
    options: ListenerOptions,
  ) {
    this.#listener = listener;
    this.#inner = inner;
    this.#opts = options;
    this.#admission = new HttpAdmission({
      maxHttp: options.maxHttpConnections,
      headTimeoutMs: HEAD_TIMEOUT_MS,
      evictAfterMs: EVICT_AFTER_MS,
      idleTimeoutMs: HTTP_IDLE_TIMEOUT_MS,
    });
    const log = options.logger;
    this.#acceptFailed = new Throttled((f) => log.warn("accept failed", f));
    this.#busy = new Throttled((f) =>
      log.warn("HTTP connections at the limit: answered 503", f)
    );
    this.#evicted = new Throttled((f) =>
      log.warn("closed a connection still without a request head", f)
    );
    this.#unreachable = new Throttled((f) =>
      log.error("HTTP server unreachable: answered 503", f)
    );
    this.#sweep = setInterval(() => {
      for (const conn of this.#admission.due(performance.now())) {
        closeQuietly(conn);
      }
      this.#wakeAccept?.();
    }, SWEEP_MS);
    this.finished = Promise.all([this.#acceptLoop(), inner.finished]).then(
      () => {},
    );
  }

  async shutdown(): Promise<void> {
    this.#closing = true;
    clearInterval(this.#sweep);
    this.#wakeAccept?.();
    this.#listener.close();
    for (const c of this.#open) closeQuietly(c);
    await this.#inner.shutdown();
    await this.finished;
  }

  async #acceptLoop(): Promise<void> {
    // Out of descriptors (EMFILE), accept fails at once, every time: back
    // off, and log once a second with a count, not once per failure.
    let backoffMs = 0;
    for (;;) {
      const delay = this.#admission.acceptDelay(performance.now());
      if (delay > 0) {
        await this.#room(delay);
        if (this.#closing) return;
        continue;
      }
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.#closing || err instanceof Deno.errors.BadResource) return;
        this.#acceptFailed.note({ error: (err as Error).message });
        backoffMs = Math.min(1000, Math.max(10, backoffMs * 2));
        await new Promise((r) => setTimeout(r, backoffMs));
        if (this.#closing) return;
        continue;
      }
      backoffMs = 0;
      // Deno leaves Nagle's algorithm on for accepted connections: a second
      // message to a builder would wait for its delayed ACK of the first (up
      // to 40 ms).  A TLS connection cannot be told (no setNoDelay() on
      // Deno.TlsConn); there the WebSocket writes the frames of one turn at
      // once, and our builder acknowledges what it reads at once.
      if (!this.#opts.tls) (conn as Deno.TcpConn).setNoDelay(true);
      this.#open.add(conn);
      if (this.#admission.evictsSilent) {
        // One turn of the event loop first: heads already received but
        // not yet read (the server was busy) take their connections out of
        // the pool rather than see them closed.
        await new Promise((r) => setTimeout(r, 0));
      }
      const evicted = this.#admission.accepted(conn, performance.now());
      if (evicted !== undefined) {
        this.#evicted.note({ waiting: this.#opts.maxHttpConnections });
        closeQuietly(evicted);
      }
      this.#serve(conn)
        .catch(() => {})
        .finally(() => {
          this.#admission.closed(conn);
          this.#wakeAccept?.();
          this.#open.delete(conn);
          closeQuietly(conn);
        });
    }
  }

  /** Waits up to `ms` for room in the head pool. */
  async #room(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(wake, ms);
      function wake() {
        clearTimeout(timer);
        resolve();
      }
      this.#wakeAccept = wake;
    });
    this.#wakeAccept = undefined;
  }

  /** Reads the first request head; upgrades, proxies or refuses. */
  async #serve(conn: Deno.Conn): Promise<void> {
    const remote = conn.remoteAddr as Deno.NetAddr;
    const peer = `${remote.hostname}:${remote.port}`;
    const head = await readHead(conn, () => {
      // A slow peer now: the accept loop may close it for a newcomer.
      this.#admission.partial(conn);
      this.#wakeAccept?.();
    });
    if (head === undefined) return;
    const upgrade = head.headers.get("upgrade")?.toLowerCase() === "websocket";
    const verdict = this.#admission.head(conn, upgrade, performance.now());
    // Out of the head pool: room for another.
    this.#wakeAccept?.();
    switch (verdict) {
      case "closed":
        return;
      case "upgrade":
        return await this.#upgrade(conn, head, peer);
      case "busy":
        this.#busy.note({ limit: this.#opts.maxHttpConnections });
        return await respondBusy(conn, "Too many HTTP connections");
      case "proxy":
        return await this.#proxy(conn, head, peer);
    }
  }

  async #upgrade(conn: Deno.Conn, head: Head, peer: string): Promise<void> {
    const { requestLine, headers, rest } = head;
    const key = headers.get("sec-websocket-key");
    if (
      !requestLine.startsWith("GET ") || key === null ||
      headers.get("sec-websocket-version") !== "13"
    ) {
      await respond(conn, 400, "Not a valid WebSocket upgrade\n");
      return;
    }
    const refusal = this.#opts.checkUpgrade(headers, peer);
    if (refusal) {
      await respond(conn, refusal.status, refusal.text);
      return;
    }
    await writeAll(
      conn,
      encoder.encode(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" +
          `Connection: Upgrade\r\nSec-WebSocket-Accept: ${await acceptKey(
            key,
          )}\r\n\r\n`,
      ),
    );
    const socket = new ServerWebSocket(conn, rest, {
      maxMessageBytes: this.#opts.maxMessageBytes,
    });
    const { promise: closed, resolve } = Promise.withResolvers<void>();
    this.#opts.onSocket(socket, peer);
    const onclose = socket.onclose;
    socket.onclose = (ev) => {
      onclose?.(ev);
      resolve();
    };
    await closed;
  }

  /** Passes one request to the HTTP server and its response back. */
  async #proxy(conn: Deno.Conn, head: Head, peer: string): Promise<void> {
    // One request per connection, so that the peer header covers it.
    const kept = head.lines.filter((l) =>
      !/^(connection|keep-alive|x-sai-peer)\s*:/i.test(l)
    );
    const rewritten = [
      head.requestLine,
      ...kept,
      `${PEER_HEADER}: ${peer}`,
      "connection: close",
      "",
      "",
    ].join("\r\n");
    let upstream: Deno.UnixConn;
    try {
      upstream = await Deno.connect({
        transport: "unix",
        path: this.#inner.path,
      });
    } catch (err) {
      if (this.#closing) {
        await respond(conn, 503, "Shutting down\n");
        return;
      }
      // Out of descriptors, or the HTTP server is being started afresh.
      this.#unreachable.note({ error: (err as Error).message });
      await respondBusy(conn, "The HTTP server is unavailable");
      return;
    }
    // Closed at shutdown too: the HTTP server waits for it otherwise.
    this.#open.add(upstream);
    const moved = () => this.#admission.moved(conn, performance.now());
    try {
      await writeAll(upstream, encoder.encode(rewritten));
      await writeAll(upstream, head.rest);
      // The end of the peer's side goes on to the HTTP server, which ends
      // the response then, as on a direct connection: an event stream
      // whose reader left gives its place back at once.  Not awaited: the
      // caller closes the connection once the response is complete, which
      // ends it.
      pipe(conn, upstream, moved)
        .then(() => upstream.closeWrite())
        .catch(() => {});
      await pipe(upstream, conn, moved);
    } finally {
      this.#open.delete(upstream);
      closeQuietly(upstream);
    }
  }
}

interface Head {
  requestLine: string;
  lines: string[];
  headers: Headers;
  rest: Uint8Array;
}

/**
 * The first request head; undefined if the connection ended first.
 * `partial` is called when a read brings part of it.
 */
async function readHead(
  conn: Deno.Conn,
  partial: () => void,
): Promise<Head | undefined> {
  // Read in place, each byte searched once: a peer sending its head a
  // byte at a time costs no more than one sending it at once.
  let buf = new Uint8Array(8192);
  let length = 0;
  try {
    for (;;) {
      if (length === buf.length) {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
      const n = await conn.read(buf.subarray(length));
      if (n === null) return undefined;
      const from = Math.max(0, length - 3);
      length += n;
      const end = indexOfCrlfCrlf(buf.subarray(0, length), from);
      if (end >= 0) {
        const text = new TextDecoder().decode(buf.subarray(0, end));
        const [requestLine = "", ...lines] = text.split("\r\n");
        const headers = new Headers();
        for (const line of lines) {
          const colon = line.indexOf(":");
          if (colon <= 0) continue;
          try {
            headers.append(
              line.slice(0, colon).trim(),
              line.slice(colon + 1).trim(),
            );
          } catch {
            // Not a valid header: the HTTP server will refuse it.
          }
        }
        return {
          requestLine,
          lines,
          headers,
          rest: buf.slice(end + 4, length),
        };
      }
      if (length > MAX_HEAD) {
        await respond(conn, 431, "Request head too large\n");
        return undefined;
      }
      partial();
    }
  } catch {
    // Reset, or closed by us: out of time, or evicted.
    return undefined;
  }
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  403: "Forbidden",
  431: "Request Header Fields Too Large",
  503: "Service Unavailable",
};

async function respond(
  conn: Deno.Conn,
  status: number,
  text: string,
  headers: Record<string, string> = {},
): Promise<void> {
  const body = encoder.encode(text);
  const extra = Object.entries({
    "content-type": "text/plain; charset=utf-8",
    ...headers,
  }).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  await writeAll(
    conn,
    encoder.encode(
      `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n${extra}` +
        `content-length: ${body.length}\r\nconnection: close\r\n\r\n`,
    ),
  ).catch(() => {});
  await writeAll(conn, body).catch(() => {});
}

/** 503 with `Retry-After`, its body JSON as the HTTP routes' errors are. */
async function respondBusy(conn: Deno.Conn, why: string): Promise<void> {
  await respond(
    conn,
    503,
    JSON.stringify({ error: `${why}: retry later` }) + "\n",
    {
      "content-type": "application/json",
      "retry-after": String(RETRY_AFTER_SECONDS),
    },
  );
}

/** Copies until the end or an error; `moved` is called after each write. */
async function pipe(
  from: Deno.Conn,
  to: Deno.Conn,
  moved: () => void,
): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) return;
      await writeAll(to, buf.subarray(0, n));
      moved();
    }
  } catch {
    // Closed by either side.
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Closed already.
  }
}

/** Where the first CR LF CR LF at or after `from` starts, or -1. */
function indexOfCrlfCrlf(buf: Uint8Array, from: number): number {
  for (let i = from; i + 3 < buf.length; i++) {
    if (
      buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 &&
      buf[i + 3] === 10
    ) return i;
  }
  return -1;
}
