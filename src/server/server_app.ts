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
  type RefusalReason,
} from "../allocator/allocator.ts";
import { isLoopback, sha256Hex, tokenDigests } from "./auth.ts";
import { type TokenDigest, verifyToken } from "./core/tokens.ts";
import { type Fields, Logger } from "../shared/log.ts";
import type { AdminTarget } from "./admin.ts";
import { type KeptOverride, OperatorActions } from "./core/operator.ts";
import { OutcomeDelivery } from "./core/delivery.ts";
import { BuilderGrace } from "./core/builder_grace.ts";
import { QueueProgress } from "./core/progress.ts";
import type { Session } from "./sessions.ts";
import { RestartGuard } from "./core/restart_guard.ts";
import { readState, StateWriter } from "./state_file.ts";
import { ANONYMOUS } from "./core/state.ts";
import { HttpRoutes } from "./http_routes.ts";
import { renderMetrics, WaitHistogram } from "./metrics.ts";
import { LeaseProcesses } from "./core/lease_processes.ts";
import {
  type ServerStats,
  type StatusDocument,
  zeroStats,
} from "./status_document.ts";
import type { Policy } from "../allocator/policy.ts";
import { listenServer } from "./listener.ts";
import { monotonic, toWallClock } from "../shared/clock.ts";
import { DEFAULT_MAX_HTTP_CONNECTIONS } from "./http_admission.ts";
import type { ServerWebSocket } from "./ws_server.ts";
import type { TokenEntry } from "./auth.ts";
import {
  encode,
  type HelloMessage,
  isHello,
  isPing,
  isRequest,
  isRestored,
  MAX_MESSAGE_BYTES,
  NAME_IN_USE,
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
  /** The clock, monotonic milliseconds (default `performance.now`). */
  now?: () => number;
  /** Bearer token for the admin API; without it the API is disabled. */
  adminToken?: string;
  /**
   * Seconds a lost builder's leases stay counted (at most until their own
   * end), from when the server last heard from it (default 4 × heartbeat).
   * Builders fence themselves after half of it: the other half covers a
   * launcher's SIGTERM-to-SIGKILL grace (10 s by default) and a heartbeat.
   */
  builderGrace?: number;
  /**
   * Seconds after a start that follows a crash during which only restores
   * are admitted (default: the builder grace); 0 turns it off.
   */
  reclaimGrace?: number;
  /** Stable storage: whether leases may be outstanding (see state_file.ts). */
  stateFile?: string | undefined;
  /**
   * Most HTTP requests proxied at once, and most connections waiting for
   * their request head (default 128); the excess gets 503.
   */
  maxHttpConnections?: number;
  /** Most `/api/events` streams open at once (default 64). */
  maxEventStreams?: number;
  /**
   * Most builder connections past their hello (default 256): a new
   * session's hello beyond it is refused with 1013 (try again later); a
   * builder resuming its session always gets back in.
   */
  maxBuilders?: number;
}

/**
 * An expired lease stays counted this long past its end: a builder ends
 * its holder at the end by its own clock, started when the grant reached
 * it, a moment after the server's.
 */
const EXPIRY_MARGIN_MS = 1000;

/**
 * Most characters of messages a connection may have waiting behind its
 * hello (bytes for binary frames): room for a builder's whole restore,
 * sent right after its hello.  More is closed with 1013 (try again later).
 */
const MAX_QUEUED_CHARS = 16 * 1024 * 1024;

/**
 * Most connections that have not said hello yet: a newcomer past it closes
 * the oldest (code 1013), so upgrades that never say hello hold at most
 * this many descriptors and cannot keep out a builder, which says hello at
 * once.
 */
const MAX_PENDING_HELLOS = 64;

/** Default of `--max-builders`. */
export const DEFAULT_MAX_BUILDERS = 256;

/** A running server. */
export interface SaiServer {
  /** `ws://HOST:PORT`, what `sai-builder --server` takes. */
  readonly url: string;
  readonly hostname: string;
  readonly port: number;
  readonly allocator: Allocator;
  status(): StatusDocument;
  /** Operator actions, as the admin API uses them. */
  readonly admin: AdminTarget;
  /**
   * A new config (SIGHUP), applied by the admin rules; budgets set through
   * the admin API win.  Returns the resources left draining and those that
   * keep an override.
   */
  reloadBudgets(
    budgets: Map<string, number>,
  ): { draining: string[]; kept: KeptOverride[] };
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
  /** Stops listening and drops every builder. */
  shutdown(): Promise<void>;
}

/** Starts a server; resolves once it is listening. */
export async function startServer(options: ServerOptions): Promise<SaiServer> {
  const app = new ServerApp(options);
  await app.loadState(options);
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
  /** Builders whose link is lost, their leases still counted. */
  #grace: BuilderGrace;
  #builderGraceMs: number;
  /** Seconds a builder may go without a round trip before it fences. */
  #fence: number;
  /** The state file and the reclaim grace. */
  #guard!: RestartGuard<Session>;
  #writer: StateWriter | undefined;
  /** The first write, which must succeed before the server listens. */
  #firstWrite: Promise<void> | undefined;
  /** Hellos waiting for the state file to record their session. */
  #recording = new Map<Session, (recorded: boolean) => void>();
  /** Admin changes waiting for the state file to hold them. */
  #persisting: { ticket: number; resolve: (ok: boolean) => void }[] = [];
  /** Public ids by session, kept while the session lives. */
  #publicIds = new Map<string, string>();
  /**
   * Connections whose hello passed the name check and waits for the state
   * file: their names are taken already.
   */
  #claims = new Map<Session, { name: string; owner: string }>();
  #nextId = 1;
  #nextPublicId = 1;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | undefined;
  #helloTimeoutMs: number;
  #heartbeat: number;
  #progress: QueueProgress;
  #stats: ServerStats = zeroStats();
  #processes = new LeaseProcesses((owner, cookie) =>
    this.#allocator.lookup(owner, cookie) !== undefined
  );
  #closing = false;
  #tokens: TokenDigest[] | undefined;
  #tls: { cert: string; key: string } | undefined;
  #waits = new WaitHistogram();
  #routes: HttpRoutes;
  #operator: OperatorActions;
  #admin: AdminTarget;
  /** Resolves once the last change through the admin API is on disk. */
  #persisted: Promise<boolean> = Promise.resolve(false);
  #delivery: OutcomeDelivery;
  #maxHttpConnections: number;
  #maxBuilders: number;
  /** Connections yet to say hello, oldest first. */
  #pending = new Set<Session>();
  /** Hellos of new sessions being checked, counted against the cap. */
  #helloing = 0;

  constructor(options: ServerOptions) {
    this.#maxBuilders = options.maxBuilders ?? DEFAULT_MAX_BUILDERS;
    this.#maxHttpConnections = options.maxHttpConnections ??
      DEFAULT_MAX_HTTP_CONNECTIONS;
    this.#tokens = options.builderTokens &&
      tokenDigests(options.builderTokens);
    this.#tls = options.tls;
    this.#log = options.logger ?? new Logger("info");
    this.#now = options.now ?? monotonic;
    this.#helloTimeoutMs = options.helloTimeoutMs ?? 5000;
    this.#heartbeat = options.heartbeat ?? 10;
    const grace = options.builderGrace ?? 4 * this.#heartbeat;
    this.#builderGraceMs = grace * 1000;
    this.#fence = Math.round(grace / 2 * 1000) / 1000;
    this.#allocator = new Allocator(options.budgets, {
      now: this.#now,
      // Lease ids unique across restarts: a builder restores its leases'
      // ids into the next run.
      idPrefix: `${crypto.randomUUID().slice(0, 6)}.`,
      expiryMarginMs: EXPIRY_MARGIN_MS,
      ...(options.maxLease !== undefined && { maxLease: options.maxLease }),
      ...(options.policy !== undefined && { policy: options.policy }),
      ...(options.maxQueuedPerBuilder !== undefined &&
        { maxQueuedPerOwner: options.maxQueuedPerBuilder }),
    });
    this.#progress = new QueueProgress({
      allocator: this.#allocator,
      send: (owner, msg) => this.#send(this.#sessions.get(owner), msg),
      intervalMs: options.progressIntervalMs ?? 250,
    });
    this.#grace = new BuilderGrace({
      allocator: this.#allocator,
      stats: this.#stats,
      log: this.#log,
      progress: this.#progress,
      // From when the server last heard the builder, which pings at least
      // every half heartbeat (the welcome says so): a builder frozen for
      // less than the builder grace wakes, and fences, before its leases
      // are dropped here, with half a heartbeat to spare.
      graceMs: this.#builderGraceMs + this.#heartbeat * 1000,
      apply: (outcomes) => this.#apply(outcomes),
      forget: (owner) => this.#publicIds.delete(owner),
    });
    this.#delivery = new OutcomeDelivery({
      stats: this.#stats,
      waits: this.#waits,
      log: this.#log,
      progress: this.#progress,
      send: (owner, msg) => this.#send(this.#sessions.get(owner), msg),
      pid: (owner) => this.#pid(owner),
      now: this.#now,
      wall: (at) => toWallClock(this.#now())(at),
    });
    this.#operator = new OperatorActions({
      allocator: this.#allocator,
      log: this.#log,
      stats: this.#stats,
      sessions: () => this.#sessions.values(),
      send: (owner, msg) => this.#send(this.#sessions.get(owner), msg),
      apply: (outcomes) => this.#apply(outcomes),
      progress: this.#progress,
      config: options.budgets,
      persist: () => {
        this.#persisted = this.#persist();
      },
    });
    const operator = this.#operator;
    this.#admin = {
      budgets: () => operator.budgets(),
      setBudget: (name, budget, by) => operator.setBudget(name, budget, by),
      removeResource: (name, by) => operator.removeResource(name, by),
      clearOverride: (name, by) => operator.clearOverride(name, by),
      forceRelease: (builder, cookie, by) =>
        operator.forceRelease(builder, cookie, by),
      persisted: () => this.#persisted,
    };
    this.#routes = new HttpRoutes({
      status: () => this.status(),
      metrics: () => renderMetrics(this.status(), this.#waits),
      admin: this.#admin,
      adminToken: options.adminToken,
      logger: this.#log,
      ...(options.maxEventStreams !== undefined &&
        { maxStreams: options.maxEventStreams }),
    });
  }

  /** Reads the state file; starts the reclaim grace after a crash. */
  async loadState(options: ServerOptions): Promise<void> {
    const path = options.stateFile;
    this.#writer = path === undefined ? undefined : new StateWriter(path);
    this.#guard = new RestartGuard<Session>({
      path,
      reclaimMs: (options.reclaimGrace ?? this.#builderGraceMs / 1000) * 1000,
      fence: this.#fence,
      log: this.#log,
      current: () =>
        [
          ...this.#sessions.values(),
          ...[...this.#grace.entries()].map(([, d]) => d),
        ].map((s) => s.digest ?? ANONYMOUS),
      overrides: () => this.#operator.overrides(),
      restoreOverrides: (overrides) => this.#operator.restore(overrides),
      begin: () => this.#allocator.beginReclaim(),
      end: () => {
        this.#progress.touchAll();
        this.#apply(this.#allocator.endReclaim());
      },
      write: (seq, state) => {
        const done = this.#writer!.write(state);
        this.#firstWrite ??= done;
        done.then(
          () => this.#guard.written(seq, true, undefined, this.#now()),
          (err) =>
            this.#guard.written(
              seq,
              false,
              (err as Error).message,
              this.#now(),
            ),
        ).finally(() => this.#arm());
      },
      recorded: (conn) => {
        this.#recording.get(conn)?.(true);
        this.#recording.delete(conn);
      },
      persisted: (upTo, ok) => {
        this.#persisting = this.#persisting.filter((p) => {
          if (p.ticket > upTo) return true;
          p.resolve(ok);
          return false;
        });
      },
    });
    if (path === undefined) return;
    try {
      const stored = await readState(path);
      this.#guard.start(stored, this.#now());
      await this.#firstWrite;
    } catch (err) {
      throw new Error(
        `Cannot use the state file "${path}": ${
          (err as Error).message
        }; pass --state-file PATH, a file only sai-server writes`,
      );
    }
    this.#arm();
  }

  #persist(): Promise<boolean> {
    const ticket = this.#guard.persist();
    if (ticket === false) return Promise.resolve(false);
    const { promise, resolve } = Promise.withResolvers<boolean>();
    this.#persisting.push({ ticket, resolve });
    this.#arm();
    return promise;
  }

  async listen(hostname: string, port: number): Promise<SaiServer> {
    if (!this.#tokens && !isLoopback(hostname)) {
      throw new TypeError(
        `Cannot listen on "${hostname}" without builder authentication: pass --builder-tokens, or listen on loopback`,
      );
    }
    const server = await listenServer({
      hostname,
      port,
      tls: this.#tls,
      checkUpgrade: (headers) => this.#checkUpgrade(headers),
      onSocket: (socket, peer) => this.#accept(socket, peer),
      http: (req, peer) => this.#routes.handle(req, peer),
      maxMessageBytes: MAX_MESSAGE_BYTES,
      idleTimeoutMs: this.#heartbeat * 1000,
      maxHttpConnections: this.#maxHttpConnections,
      logger: this.#log,
    });
    const addr = server.addr;
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
      admin: this.#admin,
      reloadBudgets: (budgets) =>
        this.#operator.reload(budgets, { addr: "SIGHUP" }),
      finished: server.finished,
      shutdown: async () => {
        this.#closing = true;
        this.#routes.close();
        clearTimeout(this.#timer);
        this.#progress.close();
        for (const resolve of this.#recording.values()) resolve(false);
        this.#recording.clear();
        this.#guard.shutdown(
          this.#allocator.status().some((r) => r.allocated > 0),
        );
        await this.#writer?.idle();
        for (const s of this.#sessions.values()) {
          s.socket.close(1001, "server shutting down");
        }
        await server.shutdown();
      },
    };
  }

  status(): StatusDocument {
    const names = new Map<string, string>(
      [...this.#sessions.values()].map((s) => [s.owner!, s.name ?? ""]),
    );
    for (const [owner, d] of this.#grace.entries()) names.set(owner, d.name);
    const named = <T extends { owner: string; cookie: string }>(x: T) => {
      const process = this.#processes.get(x.owner, x.cookie);
      return {
        ...x,
        owner: this.#pid(x.owner),
        builder: names.get(x.owner) ?? "",
        ...(process && { process }),
      };
    };
    // Times are kept on the monotonic clock and shown as wall-clock time.
    const now = this.#now();
    const wall = toWallClock(now);
    const reclaimUntil = this.#guard.reclaimUntil;
    return {
      version: 1,
      time: wall(now),
      reclaimUntil: typeof reclaimUntil === "number"
        ? wall(reclaimUntil)
        : null,
      policy: this.#allocator.policy.name,
      builders: [...this.#sessions.values()].map((s) => ({
        id: s.publicId,
        name: s.name ?? "",
        connectedAt: wall(s.connectedAt),
      })),
      resources: this.#allocator.status().map((r) => ({
        ...r,
        budgetSource: this.#operator.source(r.name),
        configBudget: this.#operator.configBudget(r.name),
        leases: r.leases.map((l) =>
          named({
            ...l,
            grantedAt: wall(l.grantedAt),
            expires: wall(l.expires),
          })
        ),
        queue: r.queue.map((q) =>
          named({
            ...q,
            enqueuedAt: wall(q.enqueuedAt),
            estimatedStart: q.estimatedStart === null
              ? null
              : wall(q.estimatedStart),
          })
        ),
      })),
      stats: structuredClone(this.#stats),
    };
  }

  #checkUpgrade(
    headers: Headers,
  ): { status: number; text: string } | undefined {
    // Browsers always send an Origin, builders never do: a page from any
    // other local origin must not get a builder's link.
    if (!headers.has("origin")) return undefined;
    this.#log.warn("builder refused", {
      reason: "WebSocket upgrade with an Origin header",
      origin: headers.get("origin")!.slice(0, 100),
    });
    return {
      status: 403,
      text: "WebSocket upgrades from browsers are refused\n",
    };
  }

  #accept(socket: ServerWebSocket, peer: string): void {
    const conn: Session = {
      id: `c${this.#nextId++}`,
      owner: undefined,
      publicId: "",
      name: undefined,
      socket,
      peer,
      connectedAt: this.#now(),
      lastHeard: this.#now(),
    };
    const helloTimer = setTimeout(() => {
      this.#reject(conn, "no hello in time");
    }, this.#helloTimeoutMs);
    this.#pending.add(conn);
    if (this.#pending.size > MAX_PENDING_HELLOS) {
      const [oldest] = this.#pending;
      this.#pending.delete(oldest!);
      this.#reject(oldest!, "too many connections waiting to say hello", {
        limit: MAX_PENDING_HELLOS,
      }, 1013);
    }
    // Messages are handled one at a time, in order, even though checking a
    // hello's token and recording its session are asynchronous: at once
    // while nothing is pending (every message after the hello, in
    // practice), else queued behind, up to a bound: a hello may wait for
    // as long as the state file cannot be written.
    let queue: Promise<void> | undefined;
    let queuedChars = 0;
    const handle = (data: string | Uint8Array): Promise<void> | void => {
      if (socket.readyState !== WebSocket.OPEN) return;
      if (typeof data !== "string") {
        this.#reject(conn, "binary frames are not accepted");
        return;
      }
      return this.#receive(conn, data, helloTimer);
    };
    socket.onmessage = (ev) => {
      conn.lastHeard = this.#now();
      const data = ev.data;
      let pending;
      if (queue === undefined) pending = handle(data);
      else {
        const size = data.length;
        queuedChars += size;
        if (queuedChars > MAX_QUEUED_CHARS) {
          this.#log.warn("builder refused", {
            connection: conn.id,
            reason: "too much sent before its hello was answered",
          });
          socket.close(1013, "too much sent before the welcome; try again");
          return;
        }
        pending = queue.then(() => {
          queuedChars -= size;
          return handle(data);
        });
      }
      if (pending === undefined) return;
      const mine: Promise<void> = pending.finally(() => {
        if (queue === mine) queue = undefined;
      });
      queue = mine;
    };
    socket.onclose = () => {
      clearTimeout(helloTimer);
      this.#pending.delete(conn);
      this.#guard.restored(conn, undefined);
      this.#guard.abandon(conn);
      this.#recording.get(conn)?.(false);
      this.#recording.delete(conn);
      const owner = conn.owner;
      // A connection replaced by a newer one of the same builder owns nothing.
      if (owner === undefined || this.#sessions.get(owner) !== conn) return;
      this.#sessions.delete(owner);
      this.#log.info("builder disconnected", {
        builder: conn.publicId,
        name: conn.name,
      });
      if (this.#closing) return;
      this.#grace.detach(conn, owner, this.#now());
      this.#arm();
    };
    socket.onerror = () => {};
  }

  async #hello(
    conn: Session,
    hello: HelloMessage["hello"],
    helloTimer: ReturnType<typeof setTimeout>,
  ): Promise<void> {
    if (conn.name !== undefined || !this.#pending.delete(conn)) {
      this.#reject(conn, "hello sent twice");
      return;
    }
    clearTimeout(helloTimer);
    // A builder resuming its session always gets back in; a new one only
    // while there is room (the cap keeps descriptors for everyone else).
    const resuming = hello.session !== undefined &&
      (this.#sessions.has(hello.session) ||
        this.#grace.get(hello.session) !== undefined);
    if (
      !resuming && this.#sessions.size + this.#helloing >= this.#maxBuilders
    ) {
      this.#reject(
        conn,
        `too many builders: the server takes --max-builders ${this.#maxBuilders}`,
        { name: hello.name },
        1013,
      );
      return;
    }
    if (!resuming) this.#helloing++;
    try {
      await this.#admit(conn, hello);
    } finally {
      if (!resuming) this.#helloing--;
    }
  }

  /** The rest of a hello: authentication, the state file, the welcome. */
  async #admit(conn: Session, hello: HelloMessage["hello"]): Promise<void> {
    if (
      this.#tokens &&
      !verifyToken(this.#tokens, hello.name, hello.token, sha256Hex)
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
    if (hello.session !== undefined && hello.session.length < 16) {
      this.#reject(conn, "a session must be 16 to 64 characters", {
        name: hello.name,
      });
      return;
    }
    // Without a session a builder gets an owner nobody can name: nothing
    // it holds can be resumed, or taken over.
    const owner = hello.session ?? `anonymous:${crypto.randomUUID()}`;
    const previous = this.#sessions.get(owner);
    const detached = this.#grace.get(owner);
    if (
      (previous && previous.name !== hello.name) ||
      (detached && detached.name !== hello.name)
    ) {
      this.#reject(conn, "this session belongs to another builder", {
        name: hello.name,
      });
      return;
    }
    const other = this.#nameHolder(conn, { name: hello.name, owner });
    if (other && !previous && !detached) {
      // Two machines under one name (a cloned host name, the default):
      // the newcomer is refused, and exits naming the other.
      this.#reject(conn, `${NAME_IN_USE}${other.peer}`, {
        name: hello.name,
        peer: conn.peer,
      });
      return;
    }
    if (other) {
      // Resuming its own session: its holders keep their leases.  The
      // other took the name while this one was away.
      this.#log.warn("two live builders share a name", {
        name: hello.name,
        peer: conn.peer,
        other: other.peer,
        hint: "give one of them another --name",
      });
    }
    this.#claims.set(conn, { name: hello.name, owner });
    let digest: string;
    let recorded: boolean | undefined;
    try {
      digest = hello.session === undefined
        ? ANONYMOUS
        : sha256Hex(hello.session);
      // On disk before the welcome: a restart must wait for this builder.
      // While the state file cannot be written the hello waits (the write
      // is retried), and a builder that leaves meanwhile is never welcomed.
      if (!this.#guard.recordSession(conn, digest)) {
        const { promise, resolve } = Promise.withResolvers<boolean>();
        this.#recording.set(conn, resolve);
        this.#arm();
        recorded = await promise;
      }
    } finally {
      this.#claims.delete(conn);
    }
    if (recorded === false) return;
    if (conn.socket.readyState !== WebSocket.OPEN) return;
    conn.digest = digest;
    conn.name = hello.name;
    conn.owner = owner;
    let publicId = this.#publicIds.get(owner);
    if (publicId === undefined) {
      publicId = `b${this.#nextPublicId++}`;
      this.#publicIds.set(owner, publicId);
    }
    conn.publicId = publicId;
    this.#sessions.set(owner, conn);
    this.#grace.resume(owner);
    if (previous || detached) {
      // The same builder process is back (perhaps before its old
      // connection was seen to drop): keep its leases and queue places,
      // close the old, and drop at its `restored` marker whatever it does
      // not re-send (a yield lost with the old link, a lease it fenced).
      conn.unconfirmed = new Set(this.#allocator.cookiesOf(owner));
      previous?.socket.close(1000, "replaced by a new connection");
    }
    this.#guard.restoring(conn, digest);
    this.#log.info(
      previous || detached ? "builder reconnected" : "builder connected",
      { builder: publicId, name: conn.name, peer: conn.peer },
    );
    this.#send(conn, {
      schema: SCHEMA,
      welcome: { id: publicId, fence: this.#fence, heartbeat: this.#heartbeat },
    });
    this.#routes.changed();
  }

  /** Returns a promise only for a hello (its token is checked async). */
  #receive(
    conn: Session,
    text: string,
    helloTimer: ReturnType<typeof setTimeout>,
  ): Promise<void> | undefined {
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
      return this.#hello(conn, msg.hello, helloTimer);
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
      this.#guard.restored(conn, conn.digest);
      return;
    }
    // Only a re-sent restore confirms a cookie: a new request refused as a
    // duplicate must not keep a lease whose holder is gone.
    if (isRequest(msg) && msg.restore) conn.unconfirmed?.delete(msg.cookie);
    if (isRequest(msg)) {
      if (this.#log.enabled("debug")) {
        this.#log.debug("request", { builder: this.#pid(owner), ...msg });
      }
      if (msg.restore === "lease") {
        const why = this.#guard.restoreRefusal(conn.digest ?? ANONYMOUS);
        if (why !== undefined) {
          this.#count("restore-not-recorded");
          this.#log.warn("restore refused", {
            builder: this.#pid(owner),
            cookie: msg.cookie,
            reason: why,
          });
          this.#send(conn, {
            schema: SCHEMA,
            cookie: msg.cookie,
            error: `Cannot restore "${
              (msg.resources ?? [msg]).map((r) => r.resname).join(",")
            }": ${why}; the lease is lost`,
          });
          return;
        }
      }
      for (const r of msg.resources ?? [msg]) this.#progress.touch(r.resname);
      this.#processes.note(owner, msg.cookie, msg.process);
      this.#apply(
        msg.restore
          ? this.#allocator.restore(owner, msg, msg.restore)
          : this.#allocator.request(owner, msg),
      );
      if (msg.progress) {
        const queued = this.#allocator.lookup(owner, msg.cookie);
        if (queued?.state === "queued") {
          this.#progress.watch(
            owner,
            msg.cookie,
            queued.resnames,
            this.#now(),
          );
          this.#arm();
        }
      }
      return;
    }
    if (this.#progress.watching) {
      const held = this.#allocator.lookup(owner, msg.cookie);
      for (const name of held?.resnames ?? []) this.#progress.touch(name);
    }
    const { found, expires, outcomes } = this.#allocator.release(
      owner,
      msg.cookie,
      msg.id,
    );
    if (found === "stale") {
      // About a lease that has ended (a yield sent late): the cookie's
      // live lease or request is another, and is not touched.
      this.#log.info("ignored: a yield for an ended lease", {
        builder: this.#pid(owner),
        cookie: msg.cookie,
        id: msg.id,
      });
      return;
    }
    // A yield at or after the lease's end is the builder ending it by its
    // own clock, inside the expiry margin: an expiry, not a release.
    const ran = found === "lease" && expires <= this.#now();
    if (found === "lease" && !ran) this.#stats.releases++;
    if (found === "lease" && !ran && msg.reason === "owner gone") {
      this.#stats.ownerGone++;
    }
    if (ran) this.#stats.expiries++;
    if (found === "queued") this.#stats.withdrawals++;
    if (found) {
      if (this.#log.enabled("info")) {
        this.#log.info(
          ran ? "expired" : found === "lease" ? "released" : "withdrawn",
          {
            builder: this.#pid(owner),
            cookie: msg.cookie,
            ...(msg.reason && { reason: msg.reason }),
          },
        );
      }
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
      for (const name of held?.resnames ?? []) this.#progress.touch(name);
      const { found, outcomes } = this.#allocator.release(owner, cookie);
      if (found === "lease") this.#stats.drops++;
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

  /**
   * A live connection of another session that holds `name`: welcomed, or
   * with its hello past this check.  A builder whose link is lost holds
   * none: a restarted builder (a new session) takes its name back at once.
   */
  #nameHolder(
    conn: Session,
    wanted: { name: string; owner: string },
  ): Session | undefined {
    const { name, owner } = wanted;
    // A scan: hellos are rare (a thousand builders reconnecting at once
    // cost a million comparisons, a few ms).
    for (const s of this.#sessions.values()) {
      if (s !== conn && s.name === name && s.owner !== owner) return s;
    }
    for (const [s, claim] of this.#claims) {
      if (s !== conn && claim.name === name && claim.owner !== owner) {
        return s;
      }
    }
    return undefined;
  }

  /** The public id of a builder session, for status and logs. */
  #pid(owner: string): string {
    return this.#publicIds.get(owner) ?? "";
  }

  #reject(
    conn: Session,
    reason: string,
    fields: Fields = {},
    code = 1008,
  ): void {
    this.#log.warn("builder refused", {
      connection: conn.id,
      ...(conn.name !== undefined && { name: conn.name }),
      ...fields,
      reason,
    });
    // A close reason is limited to 123 bytes.
    conn.socket.close(code, reason.slice(0, 120));
  }

  #count(reason: RefusalReason): void {
    this.#stats.refusals[reason] = (this.#stats.refusals[reason] ?? 0) + 1;
  }

  #send(session: Session | undefined, msg: ServerMessage): void {
    if (session?.socket.readyState !== WebSocket.OPEN) return;
    session.socket.send(encode(msg));
  }

  /** Delivers outcomes, then re-arms the timer. */
  #apply(outcomes: Outcome[]): void {
    this.#delivery.deliver(outcomes);
    this.#progress.arm(this.#now());
    this.#arm();
    this.#routes.changed();
  }

  #forget(owner: string, cookie: string): void {
    this.#progress.forget(owner, cookie);
  }

  /** When the next deadline is due (monotonic ms), if any. */
  #next(): number | undefined {
    let at = this.#allocator.nextExpiry();
    for (
      const t of [this.#progress.due, this.#grace.next, this.#guard?.next]
    ) {
      if (t !== undefined && (at === undefined || t < at)) at = t;
    }
    return at;
  }

  /** Arms the one timer for the next deadline: lease ends, graces, pushes, retries. */
  #arm(): void {
    const at = this.#next();
    // A timer armed for an earlier time stays: it finds nothing due, and
    // re-arms for what is next then.  The earliest lease is the one most
    // often released, so re-arming at every change cost a clearTimeout and
    // a setTimeout per lease under load.
    if (at === undefined || this.#closing) return;
    if (this.#timerAt !== undefined && this.#timerAt <= at) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    const delay = Math.min(Math.max(0, at - this.#now()), 2 ** 31 - 1);
    this.#timer = setTimeout(() => {
      this.#timerAt = undefined;
      const now = this.#now();
      this.#apply(this.#allocator.expire());
      this.#progress.wake(now);
      this.#grace.wake(now);
      this.#guard.wake(now);
      this.#arm();
    }, delay);
  }
}
