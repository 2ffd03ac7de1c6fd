/**
 * Splits a byte stream into top-level JSON object texts.
 *
 * The C `sai-resource` writes one object with no newline and then waits, so
 * a line reader would wait forever.  Objects may arrive split across reads,
 * several in one read, with or without whitespace (newlines) between them.
 *
 * @module
 */

import { MAX_MESSAGE_BYTES, ProtocolError } from "./protocol.ts";

const OPEN = 0x7b; // {
const CLOSE = 0x7d; // }
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \

/** Stateless without `stream`, so every splitter can share it. */
const utf8 = new TextDecoder("utf-8", { fatal: true });

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

/**
 * Accumulates bytes and yields each complete top-level `{…}` as text.  UTF-8
 * never puts an ASCII byte inside a multi-byte character, so braces and
 * quotes can be found byte by byte.
 */
export class JsonObjectSplitter {
  #pending: Uint8Array[] = [];
  #pendingBytes = 0;
  #depth = 0;
  #inString = false;
  #escaped = false;
  #maxBytes: number;

  constructor(options?: { maxBytes?: number }) {
    this.#maxBytes = options?.maxBytes ?? MAX_MESSAGE_BYTES;
  }

  /** Whether part of an object has been read but not yet completed. */
  get partial(): boolean {
    return this.#pendingBytes > 0;
  }

  /**
   * Feeds a chunk; returns the objects it completed.  Throws
   * {@linkcode ProtocolError} on bytes outside an object or an object over
   * the size limit; the stream is unusable after that.
   */
  push(chunk: Uint8Array): string[] {
    const out: string[] = [];
    let start = this.#depth > 0 ? 0 : -1;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i]!;
      if (this.#depth === 0) {
        if (isSpace(byte)) continue;
        if (byte !== OPEN) {
          throw new ProtocolError(
            "Cannot parse message: expected a JSON object",
          );
        }
        start = i;
        this.#depth = 1;
        continue;
      }
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (byte === BACKSLASH) this.#escaped = true;
        else if (byte === QUOTE) this.#inString = false;
        continue;
      }
      if (byte === QUOTE) this.#inString = true;
      else if (byte === OPEN) this.#depth++;
      else if (byte === CLOSE && --this.#depth === 0) {
        if (this.#pendingBytes === 0) {
          // The common case: the whole object is in this chunk.
          out.push(this.#decode(chunk.subarray(start, i + 1)));
        } else {
          this.#take(chunk.subarray(start, i + 1));
          out.push(this.#flush());
        }
        start = -1;
      }
    }
    if (this.#depth > 0 && start >= 0) this.#take(chunk.subarray(start));
    return out;
  }

  #take(part: Uint8Array): void {
    this.#pendingBytes += part.length;
    if (this.#pendingBytes > this.#maxBytes) {
      throw new ProtocolError(
        `Cannot parse message: longer than ${this.#maxBytes} bytes`,
      );
    }
    // Copy: the caller reuses its read buffer.
    this.#pending.push(part.slice());
  }

  #flush(): string {
    const whole = new Uint8Array(this.#pendingBytes);
    let at = 0;
    for (const part of this.#pending) {
      whole.set(part, at);
      at += part.length;
    }
    this.#pending = [];
    this.#pendingBytes = 0;
    return this.#decode(whole);
  }

  #decode(bytes: Uint8Array): string {
    if (bytes.length > this.#maxBytes) {
      throw new ProtocolError(
        `Cannot parse message: longer than ${this.#maxBytes} bytes`,
      );
    }
    try {
      return utf8.decode(bytes);
    } catch {
      throw new ProtocolError("Cannot parse message: not valid UTF-8");
    }
  }
}
