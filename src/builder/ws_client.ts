/**
 * A WebSocket client (RFC 6455, text frames) over `Deno.connect` with
 * `TCP_NODELAY` set.  Deno's built-in `WebSocket` leaves Nagle's algorithm
 * on, so a small frame sent while the previous one is unacknowledged waits
 * for the server's delayed ACK: about 40 ms on Linux.  The builder sends a
 * request and then, with no answer in between, a release; that stall was the
 * whole of the wake latency.  `wss:` URLs fall back to the built-in client.
 *
 * It offers the subset of the `WebSocket` interface the builder uses.
 *
 * @module
 */

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_MESSAGE = 1 << 20;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The part of `WebSocket` the builder uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: Event) => void) | null;
  onmessage: ((ev: MessageEvent) => void) | null;
  onerror: ((ev: Event) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/**
 * Opens a WebSocket: ours with `TCP_NODELAY` for `ws:`, else the built-in
 * (with `options`, e.g. an HTTP client that trusts a private CA).
 */
export function openWebSocket(
  url: string,
  options?: { client: Deno.HttpClient },
): WebSocketLike {
  const u = new URL(url);
  if (u.protocol === "ws:") return new NoDelayWebSocket(u);
  return new WebSocket(url, options);
}

async function sha1Base64(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(text));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

class NoDelayWebSocket implements WebSocketLike {
  readyState: number = WebSocket.CONNECTING;
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: MessageEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  #conn: Deno.TcpConn | undefined;
  #writes: Promise<void> = Promise.resolve();
  #pending: Uint8Array[] = [];
  #closeCode = 1006;
  #closeReason = "";
  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(url: URL) {
    this.#run(url);
  }

  send(data: string): void {
    if (this.readyState !== WebSocket.OPEN) {
      throw new DOMException("Cannot send: the socket is not open");
    }
    this.#frame(0x1, encoder.encode(data));
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState >= WebSocket.CLOSING) return;
    if (this.readyState === WebSocket.CONNECTING) {
      this.readyState = WebSocket.CLOSING;
      return;
    }
    this.readyState = WebSocket.CLOSING;
    const r = encoder.encode(reason);
    const body = new Uint8Array(2 + r.length);
    body[0] = code >> 8;
    body[1] = code & 0xff;
    body.set(r, 2);
    this.#frame(0x8, body);
    // The server answers with its close frame; do not wait for ever.
    this.#closeTimer = setTimeout(() => this.#drop(), 1000);
  }

  #frame(opcode: number, payload: Uint8Array): void {
    const conn = this.#conn;
    if (!conn) return;
    const n = payload.length;
    const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
    const buf = new Uint8Array(head + 4 + n);
    buf[0] = 0x80 | opcode;
    if (n < 126) buf[1] = 0x80 | n;
    else if (n < 65536) {
      buf[1] = 0x80 | 126;
      buf[2] = n >> 8;
      buf[3] = n & 0xff;
    } else {
      buf[1] = 0x80 | 127;
      new DataView(buf.buffer).setBigUint64(2, BigInt(n));
    }
    const mask = crypto.getRandomValues(new Uint8Array(4));
    buf.set(mask, head);
    for (let i = 0; i < n; i++) buf[head + 4 + i] = payload[i]! ^ mask[i & 3]!;
    // Frames sent in the same tick go out in one write: under load that is
    // one syscall for many grants' worth of releases.
    this.#pending.push(buf);
    if (this.#pending.length > 1) return;
    this.#writes = this.#writes.then(async () => {
      const frames = this.#pending;
      this.#pending = [];
      const all = frames.length === 1 ? frames[0]! : frames.reduce(concat);
      let at = 0;
      while (at < all.length) at += await conn.write(all.subarray(at));
    }).catch(() => this.#drop());
  }

  #drop(): void {
    try {
      this.#conn?.close();
    } catch { /* closed */ }
  }

  async #run(url: URL): Promise<void> {
    let failed = false;
    let message = "";
    try {
      const conn = await Deno.connect({
        hostname: url.hostname.replace(/^\[|\]$/g, ""),
        port: Number(url.port || 80),
      });
      conn.setNoDelay(true);
      this.#conn = conn;
      if (this.readyState === WebSocket.CLOSING) throw new Error("closed");
      const rest = await this.#handshake(conn, url);
      this.readyState = WebSocket.OPEN;
      this.onopen?.(new Event("open"));
      await this.#readFrames(conn, rest);
    } catch (err) {
      failed = this.readyState !== WebSocket.CLOSING;
      message = (err as Error).message;
    }
    clearTimeout(this.#closeTimer);
    this.#drop();
    this.readyState = WebSocket.CLOSED;
    if (failed) this.onerror?.(new ErrorEvent("error", { message }));
    this.onclose?.(
      new CloseEvent("close", {
        code: this.#closeCode,
        reason: this.#closeReason,
        wasClean: this.#closeCode !== 1006,
      }),
    );
  }

  async #handshake(conn: Deno.TcpConn, url: URL): Promise<Uint8Array> {
    const key = btoa(
      String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
    );
    const req = `GET ${url.pathname}${url.search} HTTP/1.1\r\n` +
      `Host: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
    const bytes = encoder.encode(req);
    let at = 0;
    while (at < bytes.length) at += await conn.write(bytes.subarray(at));
    let buf = new Uint8Array(0);
    const chunk = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(chunk);
      if (n === null) throw new Error("closed during the handshake");
      buf = concat(buf, chunk.subarray(0, n));
      const end = indexOfCrlfCrlf(buf);
      if (end < 0) {
        if (buf.length > 16384) throw new Error("handshake too long");
        continue;
      }
      const head = decoder.decode(buf.subarray(0, end));
      const [status, ...lines] = head.split("\r\n");
      if (!/^HTTP\/1\.1 101 /.test(status ?? "")) {
        throw new Error(`handshake refused: ${status}`);
      }
      const accept = lines.find((l) => /^sec-websocket-accept:/i.test(l))
        ?.split(":")[1]?.trim();
      if (accept !== await sha1Base64(key + GUID)) {
        throw new Error("handshake: bad Sec-WebSocket-Accept");
      }
      return buf.slice(end + 4);
    }
  }

  async #readFrames(conn: Deno.TcpConn, initial: Uint8Array): Promise<void> {
    let buf: Uint8Array = initial;
    let message: Uint8Array[] = [];
    let messageLength = 0;
    const chunk = new Uint8Array(65536);
    for (;;) {
      // Parse every complete frame in the buffer.
      for (;;) {
        if (buf.length < 2) break;
        const fin = (buf[0]! & 0x80) !== 0;
        const opcode = buf[0]! & 0x0f;
        const masked = (buf[1]! & 0x80) !== 0;
        let len = buf[1]! & 0x7f;
        let off = 2;
        if (len === 126) {
          if (buf.length < 4) break;
          len = (buf[2]! << 8) | buf[3]!;
          off = 4;
        } else if (len === 127) {
          if (buf.length < 10) break;
          const big = new DataView(buf.buffer, buf.byteOffset + 2, 8)
            .getBigUint64(0);
          if (big > BigInt(MAX_MESSAGE)) throw new Error("frame too large");
          len = Number(big);
          off = 10;
        }
        const maskAt = off;
        if (masked) off += 4;
        if (buf.length < off + len) break;
        const payload = buf.slice(off, off + len);
        if (masked) {
          for (let i = 0; i < len; i++) payload[i]! ^= buf[maskAt + (i & 3)]!;
        }
        buf = buf.subarray(off + len);
        if (opcode === 0x8) {
          this.#closeCode = payload.length >= 2
            ? (payload[0]! << 8) | payload[1]!
            : 1005;
          this.#closeReason = decoder.decode(payload.subarray(2));
          if (this.readyState === WebSocket.OPEN) {
            this.readyState = WebSocket.CLOSING;
            this.#frame(0x8, payload.subarray(0, 2));
          }
          await this.#writes;
          return;
        }
        if (opcode === 0x9) {
          this.#frame(0xa, payload);
          continue;
        }
        if (opcode === 0xa) continue;
        message.push(payload);
        messageLength += payload.length;
        if (messageLength > MAX_MESSAGE) throw new Error("message too large");
        if (!fin) continue;
        const whole = message.length === 1
          ? message[0]!
          : message.reduce(concat);
        message = [];
        messageLength = 0;
        // Binary frames arrive as text here too; the server sends none.
        this.onmessage?.(
          new MessageEvent("message", { data: decoder.decode(whole) }),
        );
      }
      const n = await conn.read(chunk);
      if (n === null) return;
      buf = concat(buf, chunk.subarray(0, n));
    }
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array<ArrayBuffer> {
  if (a.length === 0) return b.slice();
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
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
