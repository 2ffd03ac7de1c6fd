/**
 * The server side of a builder's WebSocket (RFC 6455, text frames), over a
 * connection whose upgrade the listener already accepted.  Deno's own
 * WebSocket reads a whole frame before anyone can check it (30 frames of
 * 60 MB took the server to 948 MiB); this one reads each frame's header
 * first and refuses a frame or message longer than the protocol's limit
 * before reading its payload.
 *
 * It offers the part of the `WebSocket` interface the server uses, and
 * pings when asked: whether a silent peer is dropped is the core's call.
 *
 * @module
 */

import {
  FrameBatch,
  frameSize,
  newFrameHeader,
  readFrameHeader,
  roomFor,
} from "../shared/ws_frames.ts";

const encoder = new TextEncoder();
const EMPTY = new Uint8Array(0);
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Text is encoded here before it is framed (JavaScript runs one at a time). */
let scratch = new Uint8Array(4096);

/** Bytes queued for a peer that does not read, before it is dropped. */
const MAX_UNSENT = 1 << 20;

/** Options for {@linkcode ServerWebSocket}. */
export interface ServerWebSocketOptions {
  /** Largest message (and frame) payload accepted, in bytes. */
  maxMessageBytes: number;
}

/** The answer to a WebSocket key, for the 101 response. */
export async function acceptKey(key: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-1",
    encoder.encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
  );
  return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

/** One accepted WebSocket connection, server side. */
export class ServerWebSocket {
  readyState: number = WebSocket.OPEN;
  /** Called with each message (a plain object: no MessageEvent per message). */
  onmessage: ((ev: { data: string | Uint8Array }) => void) | null = null;
  onclose: ((ev: CloseEvent) => void) | null = null;
  onerror: ((ev: Event) => void) | null = null;
  /**
   * Called for a frame that shows the peer alive without being a message:
   * a pong, a ping, a fragment of a message still to come.
   */
  onheard: (() => void) | null = null;
  #conn: Deno.Conn;
  #opts: ServerWebSocketOptions;
  #writes: Promise<void> = Promise.resolve();
  #batch = new FrameBatch();
  #unsent = 0;
  #closeTimer: ReturnType<typeof setTimeout> | undefined;
  #closeCode = 1006;
  #closeReason = "";
  #closed = false;

  constructor(
    conn: Deno.Conn,
    initial: Uint8Array,
    options: ServerWebSocketOptions,
  ) {
    this.#conn = conn;
    this.#opts = options;
    this.#run(initial);
  }

  send(data: string): void {
    if (this.readyState !== WebSocket.OPEN) return;
    // UTF-8 takes at most 3 bytes per UTF-16 code unit.
    if (scratch.length < data.length * 3) {
      scratch = new Uint8Array(Math.max(data.length * 3, scratch.length * 2));
    }
    const { written } = encoder.encodeInto(data, scratch);
    this.#frame(0x1, scratch.subarray(0, written));
  }

  /** Starts the closing handshake; the TCP connection ends within 1 s. */
  close(code = 1000, reason = ""): void {
    if (this.readyState !== WebSocket.OPEN) return;
    this.readyState = WebSocket.CLOSING;
    this.#closeCode = code;
    this.#closeReason = reason;
    this.#frame(0x8, closeBody(code, reason));
    this.#closeTimer = setTimeout(() => this.#drop(), 1000);
  }

  /** Sends a ping frame; the pong comes to {@linkcode onheard}. */
  ping(): void {
    if (this.readyState === WebSocket.OPEN) this.#frame(0x9, EMPTY);
  }

  /** Drops the connection at once, without a closing handshake. */
  abort(): void {
    this.#drop();
  }

  /** Refuses the peer: a close frame with the reason, then the end. */
  #fail(code: number, reason: string): void {
    if (this.readyState === WebSocket.OPEN) {
      this.readyState = WebSocket.CLOSING;
      this.#closeCode = code;
      this.#closeReason = reason;
      this.#frame(0x8, closeBody(code, reason));
    }
    // Nothing more is read: end once the close frame is out.
    this.#writes.finally(() => this.#drop());
  }

  /** Appends a frame (payload copied now) to this turn's write. */
  #frame(opcode: number, payload: Uint8Array): void {
    this.#unsent += frameSize(payload.length, false);
    if (this.#unsent > MAX_UNSENT) {
      // A peer that does not read: drop it rather than buffer for ever.
      this.#drop();
      return;
    }
    // Frames of one turn go out in one write: one segment, one wake-up of
    // the builder, and no frame waiting behind an unacknowledged one.
    if (!this.#batch.append(opcode, payload)) return;
    const conn = this.#conn;
    this.#writes = this.#writes.then(async () => {
      const all = this.#batch.take();
      let done = 0;
      while (done < all.length) done += await conn.write(all.subarray(done));
      this.#unsent -= all.length;
    }).catch(() => this.#drop());
  }

  #drop(): void {
    try {
      this.#conn.close();
    } catch {
      // Closed already.
    }
  }

  async #run(initial: Uint8Array): Promise<void> {
    try {
      await this.#readFrames(initial);
    } catch {
      // Reset by the peer, or dropped by us.
    }
    // Let a close frame we queued go out first, but not for ever.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      this.#writes,
      new Promise<void>((r) => timer = setTimeout(r, 1000)),
    ]);
    clearTimeout(timer);
    this.#drop();
    clearTimeout(this.#closeTimer);
    if (this.#closed) return;
    this.#closed = true;
    this.readyState = WebSocket.CLOSED;
    this.onclose?.(
      new CloseEvent("close", {
        code: this.#closeCode,
        reason: this.#closeReason,
        wasClean: this.#closeCode !== 1006,
      }),
    );
  }

  async #readFrames(initial: Uint8Array): Promise<void> {
    const max = this.#opts.maxMessageBytes;
    // Bytes [start, end) of buf are unparsed; reads append at end.  A
    // frame is unmasked and decoded where it lies: no copy per frame.
    let buf = new Uint8Array(Math.max(16 * 1024, initial.length));
    buf.set(initial);
    let start = 0;
    let end = initial.length;
    let message: Uint8Array[] = [];
    let messageLength = 0;
    let messageOpcode = 0;
    const header = newFrameHeader();
    for (;;) {
      for (;;) {
        if (!readFrameHeader(buf, start, end, header)) break;
        const { fin, opcode, masked, length: len, size } = header;
        // Decided at the header, before a byte of the payload is read.
        const control = opcode >= 0x8;
        if ((control && (len > 125 || !fin)) || len > max) {
          this.#fail(1009, `frame larger than ${max} bytes`);
          return;
        }
        if (!masked) {
          this.#fail(1002, "client frames must be masked");
          return;
        }
        if (!control && messageLength + len > max) {
          this.#fail(1009, `message larger than ${max} bytes`);
          return;
        }
        if (end - start < size + len) {
          // Make room for the rest of this frame (at most max + 14 bytes).
          if (start + size + len > buf.length) {
            buf = roomFor(buf, start, end, size + len);
            end -= start;
            start = 0;
          }
          break;
        }
        const at = start + size;
        const maskAt = at - 4;
        for (let i = 0; i < len; i++) buf[at + i]! ^= buf[maskAt + (i & 3)]!;
        const payload = buf.subarray(at, at + len);
        start = at + len;
        if (opcode === 0x8) {
          if (this.readyState === WebSocket.OPEN) {
            this.#closeCode = payload.length >= 2
              ? (payload[0]! << 8) | payload[1]!
              : 1005;
            this.#closeReason = safeDecode(payload.subarray(2));
            this.readyState = WebSocket.CLOSING;
            this.#frame(0x8, payload.slice(0, 2));
          }
          await this.#writes;
          return;
        }
        if (opcode === 0x9) {
          this.#frame(0xa, payload.slice());
          this.onheard?.();
          continue;
        }
        if (opcode === 0xa) {
          this.onheard?.();
          continue;
        }
        if (opcode !== 0x0) messageOpcode = opcode;
        let whole: Uint8Array;
        if (fin && message.length === 0) {
          // The common case: one frame, read where it lies.
          whole = payload;
        } else {
          message.push(payload.slice());
          messageLength += len;
          if (!fin) {
            this.onheard?.();
            continue;
          }
          whole = concat(message);
          message = [];
          messageLength = 0;
        }
        if (this.readyState !== WebSocket.OPEN) continue;
        let data: string | Uint8Array = whole;
        if (messageOpcode === 0x1) {
          try {
            data = decoder.decode(whole);
          } catch {
            this.#fail(1007, "text frame is not valid UTF-8");
            return;
          }
        } else data = whole.slice();
        this.onmessage?.({ data });
      }
      if (start === end) start = end = 0;
      else if (end === buf.length) {
        buf.copyWithin(0, start, end);
        end -= start;
        start = 0;
      }
      const n = await this.#conn.read(buf.subarray(end));
      if (n === null) return;
      end += n;
    }
  }
}

function closeBody(code: number, reason: string): Uint8Array {
  const r = encoder.encode(reason).subarray(0, 123);
  const body = new Uint8Array(2 + r.length);
  body[0] = code >> 8;
  body[1] = code & 0xff;
  body.set(r, 2);
  return body;
}

function safeDecode(bytes: Uint8Array): string {
  try {
    return decoder.decode(bytes);
  } catch {
    return "";
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  let size = 0;
  for (const p of parts) size += p.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
