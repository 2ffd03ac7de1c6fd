/**
 * The server shell: a WebSocket listener for builders that turns their
 * messages into calls on the {@linkcode Allocator} and delivers what comes
 * back.  Plain HTTP (status page, `/api/status`, `/metrics`, admin API) is
 * served by {@linkcode HttpRoutes}; operator actions are at the end.
 *
 * @module
 */

import {
  Allocator,
  type Outcome,
  type QueuedStatus,
  type RefusalReason,
} from "../allocator/allocator.ts";
import { isLoopback, type TokenEntry, verifyToken } from "./auth.ts";
import { type Fields, Logger } from "../shared/log.ts";
import type {
  Actor,
  AdminTarget,
  BudgetChange,
  ForceReleaseResult,
  RemoveResult,
} from "./admin.ts";
import { HttpRoutes } from "./http_routes.ts";
import { renderMetrics, WaitHistogram } from "./metrics.ts";
import { LeaseProcesses } from "./lease_processes.ts";
import type { ServerStats, StatusDocument } from "./status_document.ts";
import type { Policy } from "../allocator/policy.ts";
import {
  encode,
  type HelloMessage,
  isHello,
  isPing,
  isRequest,
  isRestored,
  parseBuilderMessage,
  ProtocolError,
  SCHEMA,
  type ServerMessage,
} from "../protocol/protocol.ts";

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
  /**
   * Tokens builders must present in their hello.  Without them the server
   * refuses to listen anywhere but on loopback.
   */
  builderTokens?: TokenEntry[];
  /** Most requests one builder may have queued (default 10,000). */
  maxQueuedPerBuilder?: number;
  /** PEM certificate chain and key: serve wss:// and https://. */
  tls?: { cert: string; key: string };
  /** The clock (default `Date.now`). */
  now?: () => number;
  /** Bearer token for the admin API; without it the API is disabled. */
  adminToken?: string;
}

/** One builder connection. */
interface Session {
  /** This connection. */
  id: string;
  /**
   * The builder (its session across reconnects), once it said hello.  A
   * secret between the builder and the server: never shown or logged.
   */
  owner: string | undefined;
  /** The builder's public id, shown in status and logs. */
  publicId: string;
  name: string | undefined;
  /**
   * After a reconnect of a known session: the cookies the server still had
   * for it, until the builder re-sends them; the rest are dropped at its
   * `restored` marker.
   */
  unconfirmed?: Set<string> | undefined;
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
  /** Operator actions, as the admin API and SIGHUP use them. */
  readonly admin: AdminTarget;
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
  /** Public ids by session, kept while the session lives. */
  #publicIds = new Map<string, string>();
  #nextId = 1;
  #nextPublicId = 1;
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
    forcedReleases: 0,
    ownerGone: 0,
  };
  #processes = new LeaseProcesses((owner, cookie) =>
    this.#allocator.lookup(owner, cookie) !== undefined
  );
  #closing = false;
  #tokens: TokenEntry[] | undefined;
  #tls: { cert: string; key: string } | undefined;
  #waits = new WaitHistogram();
  #routes: HttpRoutes;

  constructor(options: ServerOptions) {
    this.#tokens = options.builderTokens;
    this.#tls = options.tls;
    this.#log = options.logger ?? new Logger("info");
    this.#now = options.now ?? Date.now;
    this.#helloTimeoutMs = options.helloTimeoutMs ?? 5000;
    this.#heartbeat = options.heartbeat ?? 10;
    this.#progressIntervalMs = options.progressIntervalMs ?? 250;
    this.#allocator = new Allocator(options.budgets, {
      now: this.#now,
      ...(options.maxLease !== undefined && { maxLease: options.maxLease }),
      ...(options.policy !== undefined && { policy: options.policy }),
      ...(options.maxQueuedPerBuilder !== undefined &&
        { maxQueuedPerOwner: options.maxQueuedPerBuilder }),
    });
    this.#routes = new HttpRoutes({
      status: () => this.status(),
      metrics: () => renderMetrics(this.status(), this.#waits),
      admin: this,
      adminToken: options.adminToken,
      logger: this.#log,
    });
  }

  async listen(hostname: string, port: number): Promise<SaiServer> {
    if (!this.#tokens && !isLoopback(hostname)) {
      throw new TypeError(
        `Cannot listen on "${hostname}" without builder authentication: pass --builder-tokens, or listen on loopback`,
      );
    }
    const { promise: listening, resolve } = Promise.withResolvers<
      Deno.NetAddr
    >();
    const server = Deno.serve({
      hostname,
      port,
      ...this.#tls,
      onListen: (addr) => resolve(addr as Deno.NetAddr),
    }, (req, info) => this.#handle(req, info));
    const addr = await listening;
    const host = addr.hostname.includes(":")
      ? `[${addr.hostname}]`
      : addr.hostname;
    const url = `${this.#tls ? "wss" : "ws"}://${host}:${addr.port}`;
    return {
      url,
      hostname: addr.hostname,
      port: addr.port,
      allocator: this.#allocator,
      status: () => this.status(),
      admin: this,
      finished: server.finished,
      shutdown: async () => {
        this.#closing = true;
        this.#routes.close();
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
    const names = new Map(
      [...this.#sessions.values()].map((s) => [s.owner!, s.name ?? ""]),
    );
    const named = <T extends { owner: string; cookie: string }>(x: T) => {
      const process = this.#processes.get(x.owner, x.cookie);
      return {
        ...x,
        owner: this.#pid(x.owner),
        builder: names.get(x.owner) ?? "",
        ...(process && { process }),
      };
    };
    return {
      version: 1,
      time: this.#now(),
      policy: this.#allocator.policy.name,
      builders: [...this.#sessions.values()].map((s) => ({
        id: s.publicId,
        name: s.name ?? "",
        connectedAt: s.connectedAt,
      })),
      resources: this.#allocator.status().map((r) => ({
        ...r,
        leases: r.leases.map(named),
        queue: r.queue.map(named),
      })),
      stats: structuredClone(this.#stats),
    };
  }

  #handle(
    req: Request,
    info: Deno.ServeHandlerInfo,
  ): Response | Promise<Response> {
    if (req.headers.get("upgrade")?.toLowerCase() === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req, {
        idleTimeout: this.#heartbeat,
      });
      this.#accept(socket);
      return response;
    }
    const addr = info.remoteAddr as Deno.NetAddr;
    return this.#routes.handle(req, `${addr.hostname}:${addr.port}`);
  }

  #accept(socket: WebSocket): void {
    const conn: Session = {
      id: `c${this.#nextId++}`,
      owner: undefined,
      publicId: "",
      name: undefined,
      socket,
      connectedAt: this.#now(),
    };
    const helloTimer = setTimeout(() => {
      this.#reject(conn, "no hello in time");
    }, this.#helloTimeoutMs);
    // Messages are handled one at a time, in order, even though checking a
    // hello's token is asynchronous.
    let queue = Promise.resolve();
    socket.onmessage = (ev) => {
      const data = ev.data;
      queue = queue.then(async () => {
        if (socket.readyState !== WebSocket.OPEN) return;
        if (typeof data !== "string") {
          this.#reject(conn, "binary frames are not accepted");
          return;
        }
        await this.#receive(conn, data, helloTimer);
      });
    };
    socket.onclose = () => {
      clearTimeout(helloTimer);
      const owner = conn.owner;
      // A connection replaced by a newer one of the same builder owns nothing.
      if (owner === undefined || this.#sessions.get(owner) !== conn) return;
      this.#sessions.delete(owner);
      this.#log.info("builder disconnected", {
        builder: conn.publicId,
        name: conn.name,
      });
      this.#publicIds.delete(owner);
      if (this.#closing) return;
      for (const key of this.#lastProgress.keys()) {
        if (key.startsWith(`${owner}\0`)) this.#lastProgress.delete(key);
      }
      for (const name of this.#allocator.budgets().keys()) {
        this.#dirty.add(name);
      }
      this.#apply(this.#allocator.dropOwner(owner));
    };
    socket.onerror = () => {};
  }

  async #hello(
    conn: Session,
    hello: HelloMessage["hello"],
    helloTimer: ReturnType<typeof setTimeout>,
  ): Promise<void> {
    if (conn.name !== undefined) {
      this.#reject(conn, "hello sent twice");
      return;
    }
    clearTimeout(helloTimer);
    if (
      this.#tokens &&
      !(await verifyToken(this.#tokens, hello.name, hello.token))
    ) {
      this.#reject(
        conn,
        hello.token === undefined
          ? "authentication failed: no token"
          : "authentication failed: wrong token for this builder name",
        { name: hello.name },
      );
      return;
    }
    const owner = hello.session ?? conn.id;
    const previous = this.#sessions.get(owner);
    if (previous && previous.name !== hello.name) {
      this.#reject(conn, "this session belongs to another builder", {
        name: hello.name,
      });
      return;
    }
    conn.name = hello.name;
    conn.owner = owner;
    let publicId = this.#publicIds.get(owner);
    if (publicId === undefined) {
      publicId = `b${this.#nextPublicId++}`;
      this.#publicIds.set(owner, publicId);
    }
    conn.publicId = publicId;
    this.#sessions.set(owner, conn);
    if (previous) {
      // The same builder process reconnected before its old connection
      // was seen to drop: keep its leases and queue places, close the old,
      // and drop at its `restored` marker whatever it does not re-send (a
      // yield lost with the old link).
      conn.unconfirmed = new Set(this.#allocator.cookiesOf(owner));
      previous.socket.close(1000, "replaced by a new connection");
    }
    this.#log.info(previous ? "builder reconnected" : "builder connected", {
      builder: publicId,
      name: conn.name,
    });
    this.#send(conn, { schema: SCHEMA, welcome: { id: publicId } });
    this.#routes.changed();
  }

  async #receive(
    conn: Session,
    text: string,
    helloTimer: ReturnType<typeof setTimeout>,
  ): Promise<void> {
    let msg;
    try {
      msg = parseBuilderMessage(text);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      if (conn.owner === undefined) {
        this.#reject(conn, err.message);
        return;
      }
      this.#log.warn("bad message from builder", {
        builder: conn.owner,
        error: err.message,
      });
      this.#send(conn, {
        schema: SCHEMA,
        cookie: err.cookie ?? "",
        error: err.message,
      });
      if (err.cookie !== undefined) this.#count("invalid");
      return;
    }
    if (isHello(msg)) {
      await this.#hello(conn, msg.hello, helloTimer);
      return;
    }
    const owner = conn.owner;
    if (owner === undefined) {
      this.#reject(conn, "the first message must be a hello");
      return;
    }
    if (isPing(msg)) {
      this.#send(conn, { schema: SCHEMA, pong: msg.ping });
      return;
    }
    if (isRestored(msg)) {
      this.#dropUnconfirmed(conn, owner);
      return;
    }
    conn.unconfirmed?.delete(msg.cookie);
    if (isRequest(msg)) {
      this.#log.debug("request", { builder: this.#pid(owner), ...msg });
      for (const r of msg.resources ?? [msg]) this.#dirty.add(r.resname);
      this.#processes.note(owner, msg.cookie, msg.process);
      this.#apply(
        msg.restore
          ? this.#allocator.restore(owner, msg, msg.restore)
          : this.#allocator.request(owner, msg),
      );
      return;
    }
    const held = this.#allocator.lookup(owner, msg.cookie);
    for (const name of held?.resnames ?? []) this.#dirty.add(name);
    const { found, outcomes } = this.#allocator.release(owner, msg.cookie);
    if (found === "lease") this.#stats.releases++;
    if (found === "lease" && msg.reason === "owner gone") {
      this.#stats.ownerGone++;
    }
    if (found === "queued") this.#stats.withdrawals++;
    if (found) {
      this.#log.info(found === "lease" ? "released" : "withdrawn", {
        builder: this.#pid(owner),
        cookie: msg.cookie,
        ...(msg.reason && { reason: msg.reason }),
      });
      this.#processes.forget(owner, msg.cookie);
      this.#forget(owner, msg.cookie);
    }
    this.#apply(outcomes);
  }

  /** Drops what a reconnected builder did not re-send. */
  #dropUnconfirmed(conn: Session, owner: string): void {
    const stale = conn.unconfirmed;
    conn.unconfirmed = undefined;
    for (const cookie of stale ?? []) {
      const held = this.#allocator.lookup(owner, cookie);
      for (const name of held?.resnames ?? []) this.#dirty.add(name);
      const { found, outcomes } = this.#allocator.release(owner, cookie);
      if (found === "lease") this.#stats.releases++;
      if (found === "queued") this.#stats.withdrawals++;
      this.#log.info("dropped after reconnect: not restored", {
        builder: conn.publicId,
        cookie,
        was: found,
      });
      this.#forget(owner, cookie);
      this.#apply(outcomes);
    }
  }

  /** The public id of a builder session, for status and logs. */
  #pid(owner: string): string {
    return this.#publicIds.get(owner) ?? "";
  }

  #reject(conn: Session, reason: string, fields: Fields = {}): void {
    this.#log.warn("builder refused", {
      connection: conn.id,
      ...(conn.name !== undefined && { name: conn.name }),
      ...fields,
      reason,
    });
    // A close reason is limited to 123 bytes.
    conn.socket.close(1008, reason.slice(0, 120));
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
          this.#forget(o.owner, o.cookie);
          // A restored lease is an old holding re-admitted, not a grant.
          if (o.restored) {
            this.#log.info("restored", {
              builder: this.#pid(o.owner),
              cookie: o.cookie,
              resname: o.resname,
              amount: o.amount,
              lease: o.lease,
            });
          } else {
            this.#stats.grants++;
            this.#waits.observe(o.waited / 1000);
            this.#log.info("granted", {
              builder: this.#pid(o.owner),
              cookie: o.cookie,
              resname: o.resname,
              amount: o.amount,
              lease: o.lease,
              waited_ms: o.waited,
            });
          }
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
          // Queued requests can be refused too (a budget lowered under them).
          this.#forget(o.owner, o.cookie);
          this.#log.info("refused", {
            builder: this.#pid(o.owner),
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
            builder: this.#pid(o.owner),
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
    this.#routes.changed();
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
    // One snapshot per resource, taken only for those that changed (and
    // the other resources of multi-resource requests queued in them).
    const snaps = new Map<string, Map<string, QueuedStatus>>();
    const snap = (name: string) => {
      let queue = snaps.get(name);
      if (queue) return queue;
      queue = new Map();
      // A snapshot copies every lease: not for a queue that is empty.
      const res = this.#allocator.queued(name) === 0
        ? undefined
        : this.#allocator.statusOf(name);
      for (const q of res?.queue ?? []) {
        queue.set(`${q.owner}\0${q.cookie}`, q);
      }
      snaps.set(name, queue);
      return queue;
    };
    const done = new Set<string>();
    for (const name of dirty) {
      for (const [key, q] of snap(name)) {
        if (done.has(key)) continue;
        done.add(key);
        // A request waiting in several queues is as far back as its
        // furthest place, and starts when its last resource frees.
        let position = q.position;
        let start = q.estimatedStart;
        const names = this.#allocator.lookup(q.owner, q.cookie)?.resnames;
        for (const other of names ?? []) {
          const o = snap(other).get(key);
          if (!o || o === q) continue;
          position = Math.max(position, o.position);
          start = start === null || o.estimatedStart === null
            ? null
            : Math.max(start, o.estimatedStart);
        }
        const eta = start === null
          ? -1
          : Math.max(0, Math.ceil((start - now) / 1000));
        const sig = `${position}:${
          start === null ? "-" : Math.ceil(start / 1000)
        }`;
        if (this.#lastProgress.get(key) === sig) continue;
        this.#lastProgress.set(key, sig);
        this.#send(this.#sessions.get(q.owner), {
          schema: SCHEMA,
          cookie: q.cookie,
          queued: { position, eta },
        });
      }
    }
  }

  // --- Operator actions (issue #5): the admin API and SIGHUP -------------

  #audit(action: string, by: Actor, fields: Record<string, unknown>): void {
    this.#log.info("admin", {
      action,
      by: by.addr,
      ...by.operator !== undefined && { operator: by.operator },
      ...fields,
    });
  }

  setBudget(name: string, budget: number, by: Actor): BudgetChange {
    const { previous, outcomes } = this.#allocator.setBudget(name, budget);
    this.#audit(previous === undefined ? "add-resource" : "set-budget", by, {
      resname: name,
      budget,
      previous: previous ?? null,
    });
    this.#dirty.add(name);
    this.#apply(outcomes);
    return {
      resource: name,
      budget,
      previous: previous ?? null,
      granted: outcomes.filter((o) => o.type === "grant").length,
      refused: outcomes.filter((o) => o.type === "refuse").length,
    };
  }

  removeResource(name: string, by: Actor): RemoveResult {
    const leases = this.#allocator.status().find((r) => r.name === name)
      ?.leases.length ?? 0;
    const { result, outcomes } = this.#allocator.removeResource(name);
    this.#audit("remove-resource", by, { resname: name, result });
    this.#apply(outcomes);
    if (result === "busy") return { result, leases };
    if (result === "unknown") return { result };
    return { result, refused: outcomes.length };
  }

  budgets(): Map<string, number> {
    return this.#allocator.budgets();
  }

  forceRelease(builder: string, cookie: string, by: Actor): ForceReleaseResult {
    const sessions = [...this.#sessions.values()];
    const byId = sessions.find((s) => s.publicId === builder);
    const matches = byId ? [byId] : sessions.filter((s) => s.name === builder);
    if (matches.length !== 1) {
      this.#audit("force-release", by, {
        builder,
        cookie,
        result: matches.length === 0 ? "unknown-builder" : "ambiguous-builder",
      });
      return matches.length === 0
        ? { result: "unknown-builder" }
        : { result: "ambiguous-builder", ids: matches.map((s) => s.publicId) };
    }
    const session = matches[0]!;
    const { lease, outcomes } = this.#allocator.forceRelease(
      session.owner!,
      cookie,
    );
    this.#audit("force-release", by, {
      builder: session.publicId,
      name: session.name,
      cookie,
      result: lease ? "released" : "no-lease",
    });
    if (!lease) return { result: "no-lease" };
    this.#stats.releases++;
    this.#stats.forcedReleases++;
    this.#forget(session.owner!, cookie);
    this.#dirty.add(lease.resname);
    // A refusal after the grant: the builder drops the client, so the
    // holder's connection closes and it exits.
    this.#send(session, {
      schema: SCHEMA,
      cookie,
      error: "Lease revoked by an operator",
    });
    this.#apply(outcomes);
    return {
      result: "released",
      builder: session.name ?? session.publicId,
      resource: lease.resname,
      amount: lease.amount,
    };
  }
}
