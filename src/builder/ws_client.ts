/**
 * A WebSocket client (RFC 6455, text frames) for `ws:` and `wss:` over
 * `Deno.connect` with `TCP_NODELAY` set, and `Deno.startTls` on top of that
 * for `wss:`.  Deno's built-in `WebSocket` leaves Nagle's algorithm on, so a
 * small frame sent while the previous one is unacknowledged waits for the
 * server's delayed ACK: about 40 ms on Linux.  The builder sends a request
 * and then, with no answer in between, a release; that stall was the whole
 * of the wake latency.  `Deno.TlsConn` has no `setNoDelay()`, but the option
 * belongs to the socket, so it is set on the TCP connection before the TLS
 * handshake.
 *
 * Written for the builder's one long-lived link, on its hot path: frames
 * sent within one turn go out in one write from one buffer, masking works
 * on 32-bit words with a pooled random mask, and incoming text is decoded
 * straight from the read buffer.
 *
 * It offers the subset of the `WebSocket` interface the builder uses.
 *
 * @module
 */

import {
  FrameBatch,
  newFrameHeader,
  readFrameHeader,
  roomFor,
} from "../shared/ws_frames.ts";

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_MESSAGE = 1 << 20;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The part of `WebSocket` the builder uses. */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: Event) => void) | null;
  /** Called with each text message (a plain object, not a MessageEvent). */
  onmessage: ((ev: { data: string }) => void) | null;
  onerror: ((ev: Event) => void) | null;
  onclose: ((ev: CloseEvent) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** Options for {@linkcode openWebSocket}. */
export interface WebSocketOptions {
  /** PEM CA certificates to trust for `wss:`, besides the system's. */
  caCerts?: string[];
}

/** Opens a WebSocket to a `ws:` or `wss:` URL, with `TCP_NODELAY`. */
export function openWebSocket(
  url: string,
  options: WebSocketOptions = {},
): WebSocketLike {
  const u = new URL(url);
  if (u.protocol !== "ws:" && u.protocol !== "wss:") {
    throw new TypeError(
      `Cannot open a WebSocket to "${url}": the scheme must be ws: or wss:`,
    );
  }
  return new NoDelayWebSocket(u, options);
}

async function sha1Base64(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(text));
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/**
 * Masks come from a pool of random bytes refilled 4 KiB at a time (as the
 * `ws` package does): one `getRandomValues` call per 1,024 frames.
 */
const maskPool = new Uint32Array(1024);
let maskNext = maskPool.length;

function nextMask(): number {
  if (maskNext === maskPool.length) {
    crypto.getRandomValues(maskPool);
    maskNext = 0;
  }
  return maskPool[maskNext++]!;
}

/**
 * A payload is encoded and masked here, 4-aligned, then copied into the
 * outgoing buffer; grown on demand, shared by every socket (JavaScript runs
 * one frame at a time).
 */
let scratch = new Uint8Array(4096);
let scratchWords = new Uint32Array(scratch.buffer);
const maskBytes = new Uint8Array(4);
const maskWord = new Uint32Array(maskBytes.buffer);

function maskInScratch(n: number, mask: number): void {
  const words = (n + 3) >>> 2;
  for (let i = 0; i < words; i++) scratchWords[i]! ^= mask;
}

function ensureScratch(n: number): void {
  if (scratch.length >= n) return;
  let size = scratch.length;
  while (size < n) size *= 2;
  scratch = new Uint8Array(size);
  scratchWords = new Uint32Array(scratch.buffer);
}

class NoDelayWebSocket implements WebSocketLike {
  readyState: number = WebSocket.CONNECTING;
  onopen: ((ev: Event) => void) | null = null;
  onmessage: ((ev: { data: string }) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  #conn: Deno.Conn | undefined;
  #writes: Promise<void> = Promise.resolve();
  #batch = new FrameBatch();
  #closeCode = 1006;
  #closeReason = "";
  #closeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(url: URL, options: WebSocketOptions) {
    this.#run(url, options);
  }

  send(data: string): void {
    if (this.readyState !== WebSocket.OPEN) {
      throw new DOMException("Cannot send: the socket is not open");
    }
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    ensureScratch(data.length * 3 + 4);
    const { written } = encoder.encodeInto(data, scratch);
    this.#frame(0x1, written);
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState >= WebSocket.CLOSING) return;
    if (this.readyState === WebSocket.CONNECTING) {
      this.readyState = WebSocket.CLOSING;
      // Abandons a handshake under way (a server that never answers it).
      this.#drop();
      return;
    }
    this.readyState = WebSocket.CLOSING;
    this.#control(0x8, closeBody(code, reason));
    // The server answers with its close frame; do not wait for ever.
    this.#closeTimer = setTimeout(() => this.#drop(), 1000);
  }

  #control(opcode: number, payload: Uint8Array): void {
    ensureScratch(payload.length + 4);
    scratch.set(payload);
    this.#frame(opcode, payload.length);
  }

  /** Appends a frame whose payload is the first `n` bytes of `scratch`. */
  #frame(opcode: number, n: number): void {
    const conn = this.#conn;
    if (!conn) return;
    const mask = nextMask();
    maskWord[0] = mask;
    maskInScratch(n, mask);
    // Frames sent in the same turn go out in one write: under load that is
    // one syscall for many grants' worth of releases.
    if (this.#batch.append(opcode, scratch.subarray(0, n), maskBytes)) {
      this.#writes = this.#writes.then(() => this.#flush(conn));
    }
  }

  async #flush(conn: Deno.Conn): Promise<void> {
    const all = this.#batch.take();
    try {
      let at = 0;
      while (at < all.length) at += await conn.write(all.subarray(at));
    } catch {
      this.#drop();
    }
  }

  #drop(): void {
    try {
      this.#conn?.close();
    } catch { /* closed */ }
  }

  async #run(url: URL, options: WebSocketOptions): Promise<void> {
    let failed = false;
    let message = "";
    try {
      const tls = url.protocol === "wss:";
      const hostname = url.hostname.replace(/^\[|\]$/g, "");
      const tcp = await Deno.connect({
        hostname,
        port: Number(url.port || (tls ? 443 : 80)),
      });
      // Before TLS: the option is the socket's, and TlsConn cannot set it.
      tcp.setNoDelay(true);
      let conn: Deno.Conn = tcp;
      if (tls) {
        try {
          conn = await Deno.startTls(tcp, {
            hostname,
            ...(options.caCerts && { caCerts: options.caCerts }),
          });
        } catch (err) {
          tcp.close();
          throw err;
        }
      }
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

  async #handshake(conn: Deno.Conn, url: URL): Promise<Uint8Array> {
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

  async #readFrames(conn: Deno.Conn, initial: Uint8Array): Promise<void> {
    // Bytes [start, end) of buf are unparsed; reads append at end.
    let buf = new Uint8Array(Math.max(65536, initial.length));
    buf.set(initial);
    let start = 0;
    let end = initial.length;
    let message: Uint8Array[] = [];
    let messageLength = 0;
    const header = newFrameHeader();
    for (;;) {
      let delivered = false;
      // Parse every complete frame in the buffer.
      for (;;) {
        if (!readFrameHeader(buf, start, end, header)) break;
        const { fin, opcode, masked, length: len, size } = header;
        if (len > MAX_MESSAGE) throw new Error("frame too large");
        if (end - start < size + len) {
          // Make room for the rest of this frame.
          if (start + size + len > buf.length) {
            buf = roomFor(buf, start, end, size + len);
            end -= start;
            start = 0;
          }
          break;
        }
        const payload = buf.subarray(start + size, start + size + len);
        if (masked) {
          const maskAt = start + size - 4;
          for (let i = 0; i < len; i++) payload[i]! ^= buf[maskAt + (i & 3)]!;
        }
        start += size + len;
        if (opcode === 0x8) {
          this.#closeCode = payload.length >= 2
            ? (payload[0]! << 8) | payload[1]!
            : 1005;
          this.#closeReason = decoder.decode(payload.subarray(2));
          if (this.readyState === WebSocket.OPEN) {
            this.readyState = WebSocket.CLOSING;
            this.#control(0x8, payload.subarray(0, 2));
          }
          await this.#writes;
          return;
        }
        if (opcode === 0x9) {
          this.#control(0xa, payload);
          continue;
        }
        if (opcode === 0xa) continue;
        if (fin && message.length === 0) {
          // The common case: one frame, decoded where it lies.
          // Binary frames arrive as text here too; the server sends none.
          delivered = true;
          this.onmessage?.({ data: decoder.decode(payload) });
          continue;
        }
        message.push(payload.slice());
        messageLength += payload.length;
        if (messageLength > MAX_MESSAGE) throw new Error("message too large");
        if (!fin) continue;
        const whole = joinAll(message, messageLength);
        message = [];
        messageLength = 0;
        delivered = true;
        this.onmessage?.({ data: decoder.decode(whole) });
      }
      // A server with Nagle's algorithm on (Deno.serve over TLS, and Deno's
      // own listeners, set no TCP_NODELAY on what they accept) holds its
      // second message of a burst until we ACK the first, which Linux
      // delays up to 40 ms when we have nothing to send.  An empty
      // unsolicited pong (RFC 6455, 5.5.3) carries the ACK at once; when we
      // answered in this turn anyway, our frames carry it.
      if (
        delivered && this.#batch.empty &&
        this.readyState === WebSocket.OPEN
      ) this.#frame(0xa, 0);
      if (start === end) start = end = 0;
      else if (end === buf.length) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      const n = await conn.read(buf.subarray(end));
      if (n === null) return;
      end += n;
    }
  }
}

function closeBody(code: number, reason: string): Uint8Array {
  const r = encoder.encode(reason);
  const body = new Uint8Array(2 + r.length);
  body[0] = code >> 8;
  body[1] = code & 0xff;
  body.set(r, 2);
  return body;
}

/** Joins chunks with one allocation. */
function joinAll(chunks: Uint8Array[], length: number): Uint8Array {
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
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
