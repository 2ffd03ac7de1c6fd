/**
 * The server shell: a WebSocket listener for builders that turns their
 * messages into calls on the {@linkcode Allocator} and delivers what comes
 * back.  It also serves `/api/status`.
 *
 * @module
 */

import {
  Allocator,
  type Outcome,
  type RefusalReason,
  type ResourceStatus,
} from "./allocator.ts";
import { Logger } from "./log.ts";
import type { Policy } from "./policy.ts";
import {
  encode,
  isHello,
  isRequest,
  parseBuilderMessage,
  ProtocolError,
  SCHEMA,
  type ServerMessage,
} from "./protocol.ts";

/** Options for {@linkcode startServer}. */
export interface ServerOptions {
  budgets: Map<string, number>;
  /** Default 127.0.0.1. */
  hostname?: string;
  /** Default 4460; 0 picks a free port. */
  port?: number;
  /** Longest lease accepted, in seconds (default 86400). */
  maxLease?: number;
  policy?: Policy;
  logger?: Logger;
  /** How long a builder has to say hello, in ms (default 5000). */
  helloTimeoutMs?: number;
  /** How often queue positions are pushed at most, in ms (default 250). */
  progressIntervalMs?: number;
  /** Seconds without a pong before a builder counts as dead (default 10). */
  heartbeat?: number;
  /** The clock (default `Date.now`). */
  now?: () => number;
}

/** Counters since start, for `/api/status` and metrics. */
export interface ServerStats {
  grants: number;
  refusals: Partial<Record<RefusalReason, number>>;
  expiries: number;
  releases: number;
  withdrawals: number;
}

/** The `/api/status` document. */
export interface StatusDocument {
  version: 1;
  time: number;
  policy: string;
  builders: { id: string; name: string; connectedAt: number }[];
  resources: ResourceStatus[];
  stats: ServerStats;
}

interface Session {
  id: string;
  name: string | undefined;
  socket: WebSocket;
  connectedAt: number;
}

/** A running server. */
export interface SaiServer {
  /** `ws://HOST:PORT`, what `sai-builder --server` takes. */
  readonly url: string;
  readonly hostname: string;
  readonly port: number;
  readonly allocator: Allocator;
  status(): StatusDocument;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
  /** Stops listening and drops every builder. */
  shutdown(): Promise<void>;
}

/** Starts a server; resolves once it is listening. */
export async function startServer(options: ServerOptions): Promise<SaiServer> {
  const app = new ServerApp(options);
  return await app.listen(
    options.hostname ?? "127.0.0.1",
    options.port ?? 4460,
  );
}

class ServerApp {
  #log: Logger;
  #now: () => number;
  #allocator: Allocator;
  #sessions = new Map<string, Session>();
  #nextId = 1;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | undefined;
  #helloTimeoutMs: number;
  #heartbeat: number;
  #progressIntervalMs: number;
  #progressTimer: ReturnType<typeof setTimeout> | undefined;
  #dirty = new Set<string>();
  #lastProgress = new Map<string, string>();
  #stats: ServerStats = {
    grants: 0,
    refusals: {},
    expiries: 0,
    releases: 0,
    withdrawals: 0,
  };
  #closing = false;

  constructor(options: ServerOptions) {
    this.#log = options.logger ?? new Logger("info");
    this.#now = options.now ?? Date.now;
    this.#helloTimeoutMs = options.helloTimeoutMs ?? 5000;
    this.#heartbeat = options.heartbeat ?? 10;
    this.#progressIntervalMs = options.progressIntervalMs ?? 250;
    this.#allocator = new Allocator(options.budgets, {
      now: this.#now,
      ...(options.maxLease !== undefined && { maxLease: options.maxLease }),
      ...(options.policy !== undefined && { policy: options.policy }),
    });
  }

  async listen(hostname: string, port: number): Promise<SaiServer> {
    const { promise: listening, resolve } = Promise.withResolvers<
      Deno.NetAddr
    >();
    const server = Deno.serve({
      hostname,
      port,
      onListen: (addr) => resolve(addr as Deno.NetAddr),
    }, (req) => this.#handle(req));
    const addr = await listening;
    const host = addr.hostname.includes(":")
      ? `[${addr.hostname}]`
      : addr.hostname;
    const url = `ws://${host}:${addr.port}`;
    return {
      url,
      hostname: addr.hostname,
      port: addr.port,
      allocator: this.#allocator,
      status: () => this.status(),
      finished: server.finished,
      shutdown: async () => {
        this.#closing = true;
        clearTimeout(this.#timer);
        clearTimeout(this.#progressTimer);
        for (const s of this.#sessions.values()) {
          s.socket.close(1001, "server shutting down");
        }
        await server.shutdown();
      },
    };
  }

  status(): StatusDocument {
    return {
      version: 1,
      time: this.#now(),
      policy: this.#allocator.policy.name,
      builders: [...this.#sessions.values()].map((s) => ({
        id: s.id,
        name: s.name ?? "",
        connectedAt: s.connectedAt,
      })),
      resources: this.#allocator.status(),
      stats: structuredClone(this.#stats),
    };
  }

  #handle(req: Request): Response {
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req, {
        idleTimeout: this.#heartbeat,
      });
      this.#accept(socket);
      return response;
    }
    const url = new URL(req.url);
    if (req.method === "GET" && url.pathname === "/api/status") {
      return Response.json(this.status(), {
        headers: { "cache-control": "no-store" },
      });
    }
    if (req.method === "GET" && url.pathname === "/") {
      return new Response(
        "Sai resource server: builders connect here over WebSocket; see /api/status\n",
        { headers: { "content-type": "text/plain; charset=utf-8" } },
      );
    }
    return new Response("Not found\n", { status: 404 });
  }

  #accept(socket: WebSocket): void {
    const session: Session = {
      id: `b${this.#nextId++}`,
      name: undefined,
      socket,
      connectedAt: this.#now(),
    };
    const helloTimer = setTimeout(() => {
      this.#log.warn("builder refused", {
        builder: session.id,
        reason: "no hello in time",
      });
      socket.close(1008, "no hello in time");
    }, this.#helloTimeoutMs);
    socket.onmessage = (ev) => {
      if (typeof ev.data !== "string") {
        this.#reject(session, "binary frames are not accepted");
        return;
      }
      this.#receive(session, ev.data, helloTimer);
    };
    socket.onclose = () => {
      clearTimeout(helloTimer);
      if (!this.#sessions.delete(session.id)) return;
      this.#log.info("builder disconnected", {
        builder: session.id,
        name: session.name,
      });
      if (this.#closing) return;
      for (const key of this.#lastProgress.keys()) {
        if (key.startsWith(`${session.id}\0`)) this.#lastProgress.delete(key);
      }
      for (const name of this.#allocator.budgets().keys()) {
        this.#dirty.add(name);
      }
      this.#apply(this.#allocator.dropOwner(session.id));
    };
    socket.onerror = () => {};
  }

  #receive(
    session: Session,
    text: string,
    helloTimer: ReturnType<typeof setTimeout>,
  ): void {
    let msg;
    try {
      msg = parseBuilderMessage(text);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.#log.warn("bad message from builder", {
        builder: session.id,
        error: err.message,
      });
      this.#send(session, {
        schema: SCHEMA,
        cookie: err.cookie ?? "",
        error: err.message,
      });
      if (err.cookie !== undefined) this.#count("invalid");
      return;
    }
    if (isHello(msg)) {
      if (session.name !== undefined) {
        this.#reject(session, "hello sent twice");
        return;
      }
      clearTimeout(helloTimer);
      session.name = msg.hello.name;
      this.#sessions.set(session.id, session);
      this.#log.info("builder connected", {
        builder: session.id,
        name: session.name,
      });
      return;
    }
    if (session.name === undefined) {
      this.#reject(session, "the first message must be a hello");
      return;
    }
    if (isRequest(msg)) {
      this.#log.debug("request", { builder: session.id, ...msg });
      for (const r of msg.resources ?? [msg]) this.#dirty.add(r.resname);
      this.#apply(this.#allocator.request(session.id, msg));
      return;
    }
    const held = this.#allocator.lookup(session.id, msg.cookie);
    for (const name of held?.resnames ?? []) this.#dirty.add(name);
    const { found, outcomes } = this.#allocator.release(session.id, msg.cookie);
    if (found === "lease") this.#stats.releases++;
    if (found === "queued") this.#stats.withdrawals++;
    if (found) {
      this.#log.info(found === "lease" ? "released" : "withdrawn", {
        builder: session.id,
        cookie: msg.cookie,
      });
      this.#forget(session.id, msg.cookie);
    }
    this.#apply(outcomes);
  }

  #reject(session: Session, reason: string): void {
    this.#log.warn("builder refused", { builder: session.id, reason });
    session.socket.close(1008, reason);
  }

  #count(reason: RefusalReason): void {
    this.#stats.refusals[reason] = (this.#stats.refusals[reason] ?? 0) + 1;
  }

  #send(session: Session | undefined, msg: ServerMessage): void {
    if (session?.socket.readyState !== WebSocket.OPEN) return;
    session.socket.send(encode(msg));
  }

  /** Delivers outcomes, then re-arms the expiry timer. */
  #apply(outcomes: Outcome[]): void {
    for (const o of outcomes) {
      const session = this.#sessions.get(o.owner);
      if (o.type !== "refuse") {
        for (const r of o.resources ?? [o]) this.#dirty.add(r.resname);
      }
      switch (o.type) {
        case "grant":
          this.#stats.grants++;
          this.#forget(o.owner, o.cookie);
          this.#log.info("granted", {
            builder: o.owner,
            cookie: o.cookie,
            resname: o.resname,
            amount: o.amount,
            lease: o.lease,
            waited_ms: o.waited,
          });
          this.#send(session, {
            schema: SCHEMA,
            cookie: o.cookie,
            amount: o.amount,
            resname: o.resname,
            lease: o.lease,
            expires: o.expires,
            ...(o.resources && { resources: o.resources }),
          });
          break;
        case "refuse":
          this.#count(o.reason);
          this.#log.info("refused", {
            builder: o.owner,
            cookie: o.cookie,
            reason: o.reason,
            error: o.message,
          });
          this.#send(session, {
            schema: SCHEMA,
            cookie: o.cookie,
            error: o.message,
          });
          break;
        case "expire":
          this.#stats.expiries++;
          this.#log.info("expired", {
            builder: o.owner,
            cookie: o.cookie,
            resname: o.resname,
            amount: o.amount,
          });
          this.#send(session, {
            schema: SCHEMA,
            cookie: o.cookie,
            expired: true,
          });
          break;
      }
    }
    this.#armExpiry();
    if (this.#dirty.size > 0) this.#armProgress();
  }

  #forget(owner: string, cookie: string): void {
    this.#lastProgress.delete(`${owner}\0${cookie}`);
  }

  #armExpiry(): void {
    const at = this.#allocator.nextExpiry();
    if (at === this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    if (at === undefined || this.#closing) return;
    const delay = Math.min(Math.max(0, at - this.#now()), 2 ** 31 - 1);
    this.#timer = setTimeout(() => {
      this.#timerAt = undefined;
      this.#apply(this.#allocator.expire());
    }, delay);
  }

  /** Pushes queue positions that changed, at most once per interval. */
  #armProgress(): void {
    if (this.#progressTimer !== undefined || this.#closing) return;
    this.#progressTimer = setTimeout(() => {
      this.#progressTimer = undefined;
      this.#pushProgress();
    }, this.#progressIntervalMs);
  }

  #pushProgress(): void {
    const now = this.#now();
    const dirty = this.#dirty;
    this.#dirty = new Set();
    // Only the resources that changed: status() would walk every queue.
    for (const name of dirty) {
      // A snapshot copies every lease: not for a queue that is empty.
      if (this.#allocator.queued(name) === 0) continue;
      const res = this.#allocator.statusOf(name);
      if (!res) continue;
      for (const q of res.queue) {
        const key = `${q.owner}\0${q.cookie}`;
        const start = q.estimatedStart;
        const eta = start === null
          ? -1
          : Math.max(0, Math.ceil((start - now) / 1000));
        const sig = `${q.position}:${
          start === null ? "-" : Math.ceil(start / 1000)
        }`;
        if (this.#lastProgress.get(key) === sig) continue;
        this.#lastProgress.set(key, sig);
        this.#send(this.#sessions.get(q.owner), {
          schema: SCHEMA,
          cookie: q.cookie,
          queued: { position: q.position, eta },
        });
      }
    }
  }
}
