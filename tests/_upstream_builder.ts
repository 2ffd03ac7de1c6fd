/**
 * A stand-in for upstream Sai's builder and server together, written from
 * what was observed of them (issue #14), not from their code:
 *
 * - the builder forwards only the **first** message of each connection;
 *   whatever a client sends after it is read and dropped;
 * - the server's reply goes to the connection whose cookie matches: a grant
 *   (`amount` present) or a refusal with **no reason** (`{"schema","cookie"}`);
 * - it never sends `expired`, queue progress, or an answer to a release by
 *   cookie (a first message without `resname`: ignored, nothing released);
 * - a lease ends at the server only when its client's connection closes;
 *   a queued request is dropped the same way.
 *
 * It runs in the test's own process: the clients it serves are real
 * `sai-resource` processes.
 *
 * @module
 */

import { JsonObjectSplitter } from "../src/protocol/json_splitter.ts";

const SCHEMA = "com-warmcat-sai-resource";

interface Conn {
  conn: Deno.UnixConn;
  cookie?: string;
  resname?: string;
  amount?: number;
  lease?: number;
  state: "idle" | "queued" | "granted";
}

/** A running upstream-like builder on a Unix socket in a temp dir. */
export class UpstreamBuilder implements AsyncDisposable {
  readonly socket: string;
  readonly dir: string;
  #budgets: Map<string, number>;
  #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  #conns = new Set<Conn>();
  #queue: Conn[] = [];
  #serving = new Set<Promise<void>>();
  #accepting: Promise<void>;
  /** First messages that were releases by cookie (never answered). */
  releasesIgnored = 0;
  /** Messages after the first on a connection (dropped). */
  laterMessagesDropped = 0;

  private constructor(
    dir: string,
    budgets: Record<string, number>,
  ) {
    this.dir = dir;
    this.socket = `${dir}/upstream.sock`;
    this.#budgets = new Map(Object.entries(budgets));
    this.#listener = Deno.listen({ transport: "unix", path: this.socket });
    this.#accepting = this.#accept();
  }

  /** Starts one with these budgets (`{ r: 1 }`). */
  static async start(
    budgets: Record<string, number>,
  ): Promise<UpstreamBuilder> {
    const dir = await Deno.makeTempDir({ prefix: "sai-upstream-" });
    return new UpstreamBuilder(dir, budgets);
  }

  /** Amount of `resname` leased now. */
  allocated(resname: string): number {
    let sum = 0;
    for (const c of this.#conns) {
      if (c.state === "granted" && c.resname === resname) sum += c.amount!;
    }
    return sum;
  }

  /** Requests waiting. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Connections open now (holders, queued clients, unanswered releases). */
  get connections(): number {
    return this.#conns.size;
  }

  async #accept(): Promise<void> {
    for (;;) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch {
        return;
      }
      const p = this.#serve(conn);
      this.#serving.add(p);
      p.finally(() => this.#serving.delete(p));
    }
  }

  async #serve(conn: Deno.UnixConn): Promise<void> {
    const c: Conn = { conn, state: "idle" };
    this.#conns.add(c);
    const splitter = new JsonObjectSplitter();
    const buf = new Uint8Array(4096);
    let first = true;
    try {
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) break;
        for (const text of splitter.push(buf.subarray(0, n))) {
          if (!first) {
            this.laterMessagesDropped++;
            continue;
          }
          first = false;
          this.#first(c, JSON.parse(text));
        }
      }
    } catch {
      // Reset, or closed by close().
    } finally {
      this.#conns.delete(c);
      this.#queue = this.#queue.filter((q) => q !== c);
      try {
        conn.close();
      } catch { /* closed */ }
      this.#schedule();
    }
  }

  #first(c: Conn, msg: Record<string, unknown>): void {
    c.cookie = String(msg.cookie);
    if (msg.resname === undefined) {
      // A release by cookie: forwarded, never answered, nothing freed.
      this.releasesIgnored++;
      return;
    }
    c.resname = String(msg.resname);
    c.amount = Number(msg.amount);
    c.lease = Number(msg.lease);
    const budget = this.#budgets.get(c.resname);
    if (budget === undefined || c.amount > budget) {
      this.#send(c, { schema: SCHEMA, cookie: c.cookie });
      return;
    }
    c.state = "queued";
    this.#queue.push(c);
    this.#schedule();
  }

  /** Grants from the head of the queue while the budget allows (fifo). */
  #schedule(): void {
    while (this.#queue.length > 0) {
      const head = this.#queue[0]!;
      const budget = this.#budgets.get(head.resname!)!;
      if (this.allocated(head.resname!) + head.amount! > budget) return;
      this.#queue.shift();
      head.state = "granted";
      this.#send(head, {
        schema: SCHEMA,
        cookie: head.cookie,
        resname: head.resname,
        amount: head.amount,
        lease: head.lease,
      });
    }
  }

  #send(c: Conn, msg: Record<string, unknown>): void {
    c.conn.write(new TextEncoder().encode(JSON.stringify(msg))).catch(
      () => {},
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const c of this.#conns) {
      try {
        c.conn.close();
      } catch { /* closed */ }
    }
    await Promise.allSettled([...this.#serving]);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}
