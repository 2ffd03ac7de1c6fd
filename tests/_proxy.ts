/**
 * A loopback TCP proxy for fault tests: it forwards to a target that can be
 * changed (a restarted server), and can cut its connections or blackhole
 * them (keep them open, forward nothing) to imitate a dead peer.
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
        let at = 0;
        while (at < n) at += await to.write(buf.subarray(at, n));
      }
    } catch {
      // Closed by cut() or the peer.
    }
    // A blackholed link does not pass on a close either.
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

  /** How many forwarded connections are open. */
  get open(): number {
    return this.#pairs.size;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    this.cut();
  }
}
