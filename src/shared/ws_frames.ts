/**
 * WebSocket framing (RFC 6455) shared by the builder's client and the
 * server's side of the link: reading a frame's header where it lies, and
 * the frames one side sends within one turn, built into one buffer and
 * written out together (one system call and one segment for what would
 * otherwise be many, and no frame waiting behind an unacknowledged one).
 *
 * @module
 */

/** A frame's header, as {@linkcode readFrameHeader} reads it. */
export interface FrameHeader {
  fin: boolean;
  opcode: number;
  masked: boolean;
  /** Payload bytes (at most `Number.MAX_SAFE_INTEGER`: check it first). */
  length: number;
  /** Header bytes, the mask's four included. */
  size: number;
}

/** A header to pass to {@linkcode readFrameHeader}, again and again. */
export function newFrameHeader(): FrameHeader {
  return { fin: false, opcode: 0, masked: false, length: 0, size: 0 };
}

/**
 * Room for a frame of `need` bytes starting at `buf[start]` when it runs
 * past the end of `buf`: the unparsed bytes `[start, end)` move to the
 * front, into a bigger buffer if need be.  Returns the buffer to read on
 * (`buf` or the bigger one), whose unparsed bytes now start at 0.
 */
export function roomFor(
  buf: Uint8Array<ArrayBuffer>,
  start: number,
  end: number,
  need: number,
): Uint8Array<ArrayBuffer> {
  if (need <= buf.length) {
    buf.copyWithin(0, start, end);
    return buf;
  }
  const grown = new Uint8Array(Math.max(need, buf.length * 2));
  grown.set(buf.subarray(start, end));
  return grown;
}

/**
 * Reads the header of the frame at `buf[start]` into `into` (reused, so
 * that a frame costs no allocation); false while `buf[start..end)` does
 * not hold all of it yet.
 */
export function readFrameHeader(
  buf: Uint8Array,
  start: number,
  end: number,
  into: FrameHeader,
): boolean {
  const avail = end - start;
  if (avail < 2) return false;
  const b0 = buf[start]!, b1 = buf[start + 1]!;
  let length = b1 & 0x7f;
  let size = 2;
  if (length === 126) {
    if (avail < 4) return false;
    length = (buf[start + 2]! << 8) | buf[start + 3]!;
    size = 4;
  } else if (length === 127) {
    if (avail < 10) return false;
    const big = new DataView(buf.buffer, buf.byteOffset + start + 2, 8)
      .getBigUint64(0);
    length = big > BigInt(Number.MAX_SAFE_INTEGER)
      ? Number.MAX_SAFE_INTEGER
      : Number(big);
    size = 10;
  }
  into.fin = (b0 & 0x80) !== 0;
  into.opcode = b0 & 0x0f;
  into.masked = (b1 & 0x80) !== 0;
  into.length = length;
  into.size = into.masked ? size + 4 : size;
  return true;
}

/** The bytes a final frame of `n` payload bytes takes on the wire. */
export function frameSize(n: number, masked: boolean): number {
  return (n < 126 ? 2 : n < 65536 ? 4 : 10) + (masked ? 4 : 0) + n;
}

/** Frames (RFC 6455) of one turn, in one growing buffer. */
export class FrameBatch {
  #out = new Uint8Array(4096);
  #length = 0;
  #spare = new Uint8Array(4096);

  /** Whether no frame waits to be written. */
  get empty(): boolean {
    return this.#length === 0;
  }

  /**
   * Appends a final frame; `payload` is copied now, as given (a client
   * masks it first and passes the mask's four bytes as `mask`).  Returns
   * whether it is the turn's first frame: the caller then schedules a
   * write of {@linkcode FrameBatch.take}.
   */
  append(opcode: number, payload: Uint8Array, mask?: Uint8Array): boolean {
    const n = payload.length;
    const size = frameSize(n, mask !== undefined);
    const head = size - n;
    if (this.#length + size > this.#out.length) {
      let cap = this.#out.length;
      while (cap < this.#length + size) cap *= 2;
      const grown = new Uint8Array(cap);
      grown.set(this.#out.subarray(0, this.#length));
      this.#out = grown;
    }
    const out = this.#out;
    const at = this.#length;
    const maskBit = mask ? 0x80 : 0;
    out[at] = 0x80 | opcode;
    if (n < 126) out[at + 1] = maskBit | n;
    else if (n < 65536) {
      out[at + 1] = maskBit | 126;
      out[at + 2] = n >> 8;
      out[at + 3] = n & 0xff;
    } else {
      out[at + 1] = maskBit | 127;
      new DataView(out.buffer, at + 2, 8).setBigUint64(0, BigInt(n));
    }
    if (mask) out.set(mask, at + head - 4);
    out.set(payload, at + head);
    this.#length += size;
    return at === 0;
  }

  /**
   * The frames so far, to be written now; later frames go to the spare
   * buffer.  Call it again only once that write has completed: the buffer
   * returned becomes the spare.
   */
  take(): Uint8Array {
    const full = this.#out;
    const all = full.subarray(0, this.#length);
    this.#out = this.#spare;
    this.#spare = full;
    this.#length = 0;
    return all;
  }
}
