/**
 * Which of the server's connections are let in, sans I/O: the listener
 * reports each connection accepted, its head read, bytes moved and its
 * close, with the monotonic time; this says what to close and whether a
 * request is proxied or refused.
 *
 * Two pools, each of `maxHttp` connections, bound what HTTP costs in file
 * descriptors: connections still waiting for their head (one descriptor
 * each) and requests being proxied to the HTTP routes (three each: the
 * client, our end of the private socket and the HTTP server's end).  A
 * WebSocket upgrade leaves the pools as soon as its head is read: builders
 * never wait for page readers, and what HTTP may not take is theirs.
 *
 * @module
 */

/** Default of `--max-http-connections`: safe under a descriptor limit of 1024. */
export const DEFAULT_MAX_HTTP_CONNECTIONS = 128;

/** Default of `--max-event-streams`. */
export const DEFAULT_MAX_EVENT_STREAMS = 64;

/** Largest `--max-http-connections` accepted. */
export const MAX_HTTP_CONNECTIONS = 100_000;

/** Limits for {@linkcode HttpAdmission}, durations in ms. */
export interface AdmissionLimits {
  /** Most connections waiting for their head, and most requests proxied. */
  maxHttp: number;
  /** How long a connection may take to send its request head. */
  headTimeoutMs: number;
  /**
   * A connection that has sent nothing for this long may be closed to make
   * room for a newcomer; one that has sent part of a head may be at once.
   * A younger silent one may not: its head may be on its way, or unread
   * only because the server is busy.
   */
  evictAfterMs: number;
  /** How long a proxied request may go without a byte moving either way. */
  idleTimeoutMs: number;
}

/** What becomes of a connection whose head is read. */
export type Verdict =
  /** A WebSocket upgrade: a builder, outside the HTTP pools. */
  | "upgrade"
  /** A request to proxy to the HTTP routes. */
  | "proxy"
  /** Every proxied place is taken: answer 503 and close. */
  | "busy"
  /** Closed meanwhile (evicted, or out of time): nothing to do. */
  | "closed";

/** The connections let in, keyed by whatever the listener names them by. */
export class HttpAdmission<K> {
  #limits: AdmissionLimits;
  /** Waiting for their head, by accept time, oldest first. */
  #heads = new Map<K, number>();
  /** Those of them that sent part of a head, in the order they did. */
  #partial = new Set<K>();
  /** Proxied, by when a byte last moved. */
  #proxied = new Map<K, number>();

  constructor(limits: AdmissionLimits) {
    this.#limits = limits;
  }

  /** Connections waiting for their head. */
  get waiting(): number {
    return this.#heads.size;
  }

  /**
   * Whether the next connection accepted would close one that has sent
   * nothing: the head pool is full and none in it sent part of a head.
   */
  get evictsSilent(): boolean {
    return this.#heads.size >= this.#limits.maxHttp && this.#partial.size === 0;
  }

  /** Requests being proxied. */
  get proxied(): number {
    return this.#proxied.size;
  }

  /**
   * How long to wait at `now` before accepting another connection: 0 while
   * the head pool has room, or one in it may be closed to make room.
   * Until then newcomers wait in the kernel's backlog, not in ours.
   */
  acceptDelay(now: number): number {
    if (this.#heads.size < this.#limits.maxHttp || this.#partial.size > 0) {
      return 0;
    }
    const oldest = this.#heads.values().next().value ?? now;
    return Math.max(0, oldest + this.#limits.evictAfterMs - now);
  }

  /**
   * A connection was accepted at `now`.  Returns the one to close to make
   * room for it when the head pool is full: the first to send part of a
   * head, else the oldest if it has sent nothing for `evictAfterMs`.  So
   * peers that never finish a head cannot keep out one that sends its head
   * at once.
   */
  accepted(key: K, now: number): K | undefined {
    let evicted: K | undefined;
    if (this.#heads.size >= this.#limits.maxHttp) {
      const [oldest, at] = this.#heads.entries().next().value!;
      evicted = this.#partial.values().next().value ??
        (now - at >= this.#limits.evictAfterMs ? oldest : undefined);
      if (evicted !== undefined) this.closed(evicted);
    }
    this.#heads.set(key, now);
    return evicted;
  }

  /** Part of a connection's head arrived, not all of it. */
  partial(key: K): void {
    if (this.#heads.has(key)) this.#partial.add(key);
  }

  /**
   * A connection's head is read at `now`.  Only a proxied request stays in
   * a pool: a refused one is written a 503 of a few hundred bytes, which a
   * fresh connection's send buffer takes at once, and is closed.
   */
  head(key: K, upgrade: boolean, now: number): Verdict {
    if (!this.#heads.has(key)) return "closed";
    this.#partial.delete(key);
    this.#heads.delete(key);
    if (upgrade) return "upgrade";
    if (this.#proxied.size >= this.#limits.maxHttp) return "busy";
    this.#proxied.set(key, now);
    return "proxy";
  }

  /** Bytes moved on a proxied connection at `now`. */
  moved(key: K, now: number): void {
    if (this.#proxied.has(key)) this.#proxied.set(key, now);
  }

  /** The connection is closed: its place is free. */
  closed(key: K): void {
    this.#heads.delete(key);
    this.#partial.delete(key);
    this.#proxied.delete(key);
  }

  /**
   * The connections to close at `now`, taken out of the pools: heads not
   * complete within the head timeout, proxied requests idle too long.
   */
  due(now: number): K[] {
    const out: K[] = [];
    for (const [key, at] of this.#heads) {
      // Oldest first: the rest are younger.
      if (now - at < this.#limits.headTimeoutMs) break;
      out.push(key);
    }
    for (const [key, at] of this.#proxied) {
      if (now - at >= this.#limits.idleTimeoutMs) out.push(key);
    }
    for (const key of out) this.closed(key);
    return out;
  }
}
