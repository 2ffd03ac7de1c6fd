/**
 * The server's listener: it reads the head of each connection's first
 * request itself.  A WebSocket upgrade is answered here and handed to a
 * {@linkcode ServerWebSocket}, which checks every frame's size at its
 * header; anything else is passed, one request per connection, to
 * `Deno.serve` on a private Unix socket, with the peer's address in a
 * header of our own (any copy the client sent is removed).
 *
 * @module
 */

import { acceptKey, ServerWebSocket } from "./ws_server.ts";

/** The header that carries the peer's address to the HTTP routes. */
export const PEER_HEADER = "x-sai-peer";

/** Longest request head read, in bytes. */
const MAX_HEAD = 16 * 1024;

/** How long a connection may take to send its request head, in ms. */
const HEAD_TIMEOUT_MS = 10_000;

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
  idleTimeoutMs: number;
}

/** A listening server. */
export interface Listening {
  addr: Deno.NetAddr;
  /** Resolves when it has stopped. */
  finished: Promise<void>;
  shutdown(): Promise<void>;
}

/** Listens; resolves once it is listening. */
export async function listenServer(
  options: ListenerOptions,
): Promise<Listening> {
  const dir = await Deno.makeTempDir({ prefix: "sai-server-" });
  const innerPath = `${dir}/http.sock`;
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
  const { promise: innerUp, resolve } = Promise.withResolvers<void>();
  const inner = Deno.serve({
    path: innerPath,
    onListen: () => resolve(),
  }, (req) => {
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      return new Response(
        "A WebSocket upgrade must be a connection's first request\n",
        { status: 400 },
      );
    }
    return options.http(req, req.headers.get(PEER_HEADER) ?? "");
  });
  await innerUp;
  const open = new Set<Deno.Conn>();
  let closing = false;
  const accepting = (async () => {
    let backoffMs = 0;
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (closing || err instanceof Deno.errors.BadResource) return;
        // Out of descriptors: back off rather than spin.
        backoffMs = Math.min(1000, Math.max(10, backoffMs * 2));
        await new Promise((r) => setTimeout(r, backoffMs));
        continue;
      }
      backoffMs = 0;
      // Deno leaves Nagle's algorithm on for accepted connections: a second
      // message to a builder would wait for its delayed ACK of the first (up
      // to 40 ms).  A TLS connection cannot be told (no setNoDelay() on
      // Deno.TlsConn); there the WebSocket writes the frames of one turn at
      // once, and our builder acknowledges what it reads at once.
      if (!options.tls) (conn as Deno.TcpConn).setNoDelay(true);
      open.add(conn);
      serveConnection(conn, innerPath, options, open)
        .catch(() => {})
        .finally(() => {
          open.delete(conn);
          closeQuietly(conn);
        });
    }
  })();
  const finished = Promise.all([accepting, inner.finished]).then(async () => {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  });
  return {
    addr: listener.addr as Deno.NetAddr,
    finished,
    shutdown: async () => {
      closing = true;
      listener.close();
      for (const c of open) closeQuietly(c);
      await inner.shutdown();
      await finished;
    },
  };
}

/** Reads the first request head; upgrades or passes the connection on. */
async function serveConnection(
  conn: Deno.Conn,
  innerPath: string,
  options: ListenerOptions,
  open: Set<Deno.Conn>,
): Promise<void> {
  const remote = conn.remoteAddr as Deno.NetAddr;
  const peer = `${remote.hostname}:${remote.port}`;
  const head = await readHead(conn);
  if (head === undefined) return;
  const { requestLine, lines, headers, rest } = head;
  if (headers.get("upgrade")?.toLowerCase() === "websocket") {
    const key = headers.get("sec-websocket-key");
    if (
      !requestLine.startsWith("GET ") || key === null ||
      headers.get("sec-websocket-version") !== "13"
    ) {
      await respond(conn, 400, "Not a valid WebSocket upgrade\n");
      return;
    }
    const refusal = options.checkUpgrade(headers, peer);
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
      maxMessageBytes: options.maxMessageBytes,
      idleTimeoutMs: options.idleTimeoutMs,
    });
    const { promise: closed, resolve } = Promise.withResolvers<void>();
    options.onSocket(socket, peer);
    const onclose = socket.onclose;
    socket.onclose = (ev) => {
      onclose?.(ev);
      resolve();
    };
    await closed;
    return;
  }
  // One request per connection, so that the peer header covers it.
  const kept = lines.filter((l) =>
    !/^(connection|keep-alive|x-sai-peer)\s*:/i.test(l)
  );
  const rewritten = [
    requestLine,
    ...kept,
    `${PEER_HEADER}: ${peer}`,
    "connection: close",
    "",
    "",
  ].join("\r\n");
  let upstream: Deno.UnixConn;
  try {
    upstream = await Deno.connect({ transport: "unix", path: innerPath });
  } catch {
    await respond(conn, 503, "Shutting down\n");
    return;
  }
  // Closed at shutdown too: the HTTP server waits for it otherwise.
  open.add(upstream);
  try {
    await writeAll(upstream, encoder.encode(rewritten));
    await writeAll(upstream, rest);
    const up = pipe(conn, upstream);
    await pipe(upstream, conn);
    closeQuietly(upstream);
    await up;
  } finally {
    open.delete(upstream);
    closeQuietly(upstream);
  }
}

interface Head {
  requestLine: string;
  lines: string[];
  headers: Headers;
  rest: Uint8Array;
}

async function readHead(conn: Deno.Conn): Promise<Head | undefined> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(8192);
  const timer = setTimeout(() => closeQuietly(conn), HEAD_TIMEOUT_MS);
  try {
    for (;;) {
      const n = await conn.read(chunk);
      if (n === null) return undefined;
      const next = new Uint8Array(buf.length + n);
      next.set(buf);
      next.set(chunk.subarray(0, n), buf.length);
      buf = next;
      const end = indexOfCrlfCrlf(buf);
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
        return { requestLine, lines, headers, rest: buf.slice(end + 4) };
      }
      if (buf.length > MAX_HEAD) {
        await respond(conn, 431, "Request head too large\n");
        return undefined;
      }
    }
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
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
): Promise<void> {
  const body = encoder.encode(text);
  await writeAll(
    conn,
    encoder.encode(
      `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n` +
        "content-type: text/plain; charset=utf-8\r\n" +
        `content-length: ${body.length}\r\nconnection: close\r\n\r\n`,
    ),
  ).catch(() => {});
  await writeAll(conn, body).catch(() => {});
}

async function pipe(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) return;
      await writeAll(to, buf.subarray(0, n));
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

function indexOfCrlfCrlf(buf: Uint8Array): number {
  for (let i = 0; i + 3 < buf.length; i++) {
    if (
      buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 &&
      buf[i + 3] === 10
    ) return i;
  }
  return -1;
}
