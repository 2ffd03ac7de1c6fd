/**
 * A loopback TCP proxy for fault tests: it forwards to a target that can be
 * changed (a restarted server), and can cut its connections, blackhole them
 * (keep them open, forward nothing) to imitate a dead peer, or freeze the
 * whole link (a route that drops every packet for a while, then heals:
 * TCP delivers what was held back, so nothing is lost, only late).
 *
 * @module
 */

interface Pair {
  client: Deno.TcpConn;
  upstream: Deno.TcpConn;
  held: boolean;
}

/** A TCP proxy on 127.0.0.1 with a random port. */
export class FaultProxy {
  readonly port: number;
  target: number;
  #listener: Deno.TcpListener;
  #pairs = new Set<Pair>();
  #accepting: Promise<void>;
  /** Resolves when a freeze ends; undefined while the link flows. */
  #frozen: Promise<void> | undefined;
  #thaw: (() => void) | undefined;
  /** How many connections it has accepted. */
  accepted = 0;

  constructor(target: number) {
    this.target = target;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.port = (this.#listener.addr as Deno.NetAddr).port;
    this.#accepting = this.#accept();
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}`;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let client: Deno.TcpConn;
      try {
        client = await this.#listener.accept();
      } catch {
        return;
      }
      this.accepted++;
      // A frozen route does not even complete a new connection's setup.
      if (this.#frozen) await this.#frozen;
      let upstream: Deno.TcpConn;
      try {
        upstream = await Deno.connect({
          hostname: "127.0.0.1",
          port: this.target,
        });
      } catch {
        client.close();
        continue;
      }
      const pair: Pair = { client, upstream, held: false };
      this.#pairs.add(pair);
      this.#pipe(pair, client, upstream);
      this.#pipe(pair, upstream, client);
    }
  }

  async #pipe(pair: Pair, from: Deno.TcpConn, to: Deno.TcpConn): Promise<void> {
    const buf = new Uint8Array(16 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        // A blackholed link swallows everything, like a dead route.
        if (pair.held) continue;
        // A frozen one holds it back (and, not reading, the sender too).
        if (this.#frozen) await this.#frozen;
        let at = 0;
        while (at < n) at += await to.write(buf.subarray(at, n));
      }
    } catch {
      // Closed by cut() or the peer.
    }
    // A blackholed link does not pass on a close either; a frozen one
    // passes it on when it heals.
    if (this.#frozen) await this.#frozen;
    if (!pair.held) this.#close(pair);
  }

  #close(pair: Pair): void {
    if (!this.#pairs.delete(pair)) return;
    for (const c of [pair.client, pair.upstream]) {
      try {
        c.close();
      } catch {
        // Closed.
      }
    }
  }

  /** Closes every forwarded connection (a reset link). */
  cut(): void {
    for (const pair of [...this.#pairs]) this.#close(pair);
  }

  /** Keeps current connections open but forwards nothing on them. */
  blackhole(): void {
    for (const pair of this.#pairs) pair.held = true;
  }

  /**
   * Stops the link, both ways and for new connections too, until
   * {@linkcode thaw}: nothing is read, so nothing is lost.
   */
  freeze(): void {
    if (this.#frozen) return;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#frozen = promise;
    this.#thaw = resolve;
  }

  /** Lets a frozen link flow again, delivering what it held back. */
  thaw(): void {
    this.#frozen = undefined;
    this.#thaw?.();
    this.#thaw = undefined;
  }

  /** How many forwarded connections are open. */
  get open(): number {
    return this.#pairs.size;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.thaw();
    this.#listener.close();
    await this.#accepting;
    this.cut();
  }
}
