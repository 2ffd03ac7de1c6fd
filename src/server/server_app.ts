/**
 * The server shell: it turns the listener's WebSockets, one timer and the
 * state file into events for the {@linkcode ServerCore}, which holds every
 * decision, and carries out the actions it returns, in order.  Plain HTTP
 * (status page, `/api/status`, `/metrics`, admin API) is served by
 * {@linkcode HttpRoutes}, which asks the core for status and admin actions.
 *
 * @module
 */

import type { Allocator } from "../allocator/allocator.ts";
import type { Policy } from "../allocator/policy.ts";
import type { Tick } from "../shared/core_io.ts";
import { LEVELS, Logger } from "../shared/log.ts";
import { monotonic, wallClock } from "../shared/clock.ts";
import { MAX_MESSAGE_BYTES } from "../protocol/protocol.ts";
import type { Actor, AdminTarget } from "./admin.ts";
import {
  isLoopback,
  sha256Hex,
  tokenDigests,
  type TokenEntry,
} from "./auth.ts";
import type { ServerAction } from "./core/actions.ts";
import type { KeptOverride } from "./core/operator.ts";
import {
  type AdminCall,
  DEFAULT_MAX_BUILDERS,
  ServerCore,
} from "./core/server_core.ts";
import { DEFAULT_MAX_HTTP_CONNECTIONS } from "./http_admission.ts";
import { HttpRoutes } from "./http_routes.ts";
import { listenServer } from "./listener.ts";
import { renderMetrics } from "./metrics.ts";
import { readState, StateWriter } from "./state_file.ts";
import type { StatusDocument } from "./status_document.ts";
import type { ServerWebSocket } from "./ws_server.ts";

export { DEFAULT_MAX_BUILDERS };

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
  await app.start(options.stateFile);
  return await app.listen(
    options.hostname ?? "127.0.0.1",
    options.port ?? 4460,
  );
}

/** Longest delay setTimeout takes (about 24.8 days); a longer one fires at once. */
const MAX_DELAY_MS = 2 ** 31 - 1;

class ServerApp {
  #core: ServerCore;
  #log: Logger;
  #clock: () => number;
  /** Read once per event; the core keeps no reference to it. */
  #tick = { mono: 0, wall: 0 };
  #sockets = new Map<string, ServerWebSocket>();
  #nextId = 1;
  /** The one timer, for the core's next wake-up. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | undefined;
  #writer: StateWriter | undefined;
  #routes: HttpRoutes;
  #admin: AdminTarget;
  #reload: SaiServer["reloadBudgets"];
  /** Admin changes waiting for the state file, by ticket. */
  #persisting: { ticket: number; resolve: (ok: boolean) => void }[] = [];
  /** Resolves once the last change through the admin API is on disk. */
  #persisted: Promise<boolean> = Promise.resolve(false);
  #closing = false;
  #hasTokens: boolean;
  #tls: { cert: string; key: string } | undefined;
  #maxHttpConnections: number;

  constructor(options: ServerOptions) {
    this.#log = options.logger ?? new Logger("info");
    this.#clock = options.now ?? monotonic;
    this.#hasTokens = options.builderTokens !== undefined;
    this.#tls = options.tls;
    this.#maxHttpConnections = options.maxHttpConnections ??
      DEFAULT_MAX_HTTP_CONNECTIONS;
    const log = this.#log;
    this.#core = new ServerCore({
      budgets: options.budgets,
      hash: sha256Hex,
      // The core builds the fields of the lines the logger writes only.
      logLevel: LEVELS.findLast((l) => log.enabled(l)) ?? "error",
      // Lease ids unique across restarts: a builder restores its leases'
      // ids into the next run.
      idPrefix: `${crypto.randomUUID().slice(0, 6)}.`,
      stateFile: options.stateFile,
      builderTokens: options.builderTokens &&
        tokenDigests(options.builderTokens),
      ...(options.policy !== undefined && { policy: options.policy }),
      ...(options.maxLease !== undefined && { maxLease: options.maxLease }),
      ...(options.heartbeat !== undefined && { heartbeat: options.heartbeat }),
      ...(options.builderGrace !== undefined &&
        { builderGrace: options.builderGrace }),
      ...(options.reclaimGrace !== undefined &&
        { reclaimGrace: options.reclaimGrace }),
      ...(options.maxQueuedPerBuilder !== undefined &&
        { maxQueuedPerBuilder: options.maxQueuedPerBuilder }),
      ...(options.maxBuilders !== undefined &&
        { maxBuilders: options.maxBuilders }),
      ...(options.helloTimeoutMs !== undefined &&
        { helloTimeoutMs: options.helloTimeoutMs }),
      ...(options.progressIntervalMs !== undefined &&
        { progressIntervalMs: options.progressIntervalMs }),
    });
    const admin = <R>(call: (tick: Tick) => AdminCall<R>): R => {
      const { result, actions, persist } = call(this.#now());
      if (persist === false) this.#persisted = Promise.resolve(false);
      else if (persist !== undefined) {
        const { promise, resolve } = Promise.withResolvers<boolean>();
        this.#persisting.push({ ticket: persist, resolve });
        this.#persisted = promise;
      }
      this.#run(actions);
      return result;
    };
    const core = this.#core;
    this.#admin = {
      budgets: () => core.budgets(),
      setBudget: (name, budget, by: Actor) =>
        admin((t) => core.setBudget(name, budget, by, t)),
      removeResource: (name, by) =>
        admin((t) => core.removeResource(name, by, t)),
      clearOverride: (name, by) =>
        admin((t) => core.clearOverride(name, by, t)),
      forceRelease: (builder, cookie, by) =>
        admin((t) => core.forceRelease(builder, cookie, by, t)),
      persisted: () => this.#persisted,
    };
    this.#reload = (budgets) => admin((t) => core.reload(budgets, t));
    this.#routes = new HttpRoutes({
      status: () => core.status(this.#now()),
      metrics: () => renderMetrics(core.status(this.#now()), core.waits),
      admin: this.#admin,
      adminToken: options.adminToken,
      logger: this.#log,
      ...(options.maxEventStreams !== undefined &&
        { maxStreams: options.maxEventStreams }),
    });
  }

  /**
   * Reads the state file (bounded, regular files only) and starts the
   * core; the state file's first write must succeed before the server
   * listens.
   */
  async start(path: string | undefined): Promise<void> {
    if (path === undefined) {
      this.#run(this.#core.start({ kind: "none" }, this.#now()));
      return;
    }
    this.#writer = new StateWriter(path);
    let actions: ServerAction[];
    const written: number[] = [];
    try {
      const stored = await readState(path);
      actions = this.#core.start(stored, this.#now());
      // The state file marked dirty before anything is granted: its
      // failure is a start-up error, and nothing else is done.
      for (const a of actions) {
        if (a.type !== "write") continue;
        await this.#writer.write(a.state);
        written.push(a.seq);
      }
    } catch (err) {
      this.#stop();
      throw new Error(
        `Cannot use the state file "${path}": ${
          (err as Error).message
        }; pass --state-file PATH, a file only sai-server writes`,
      );
    }
    this.#run(actions.filter((a) => a.type !== "write"));
    for (const seq of written) {
      this.#run(this.#core.written(seq, true, undefined, this.#now()));
    }
  }

  async listen(hostname: string, port: number): Promise<SaiServer> {
    if (!this.#hasTokens && !isLoopback(hostname)) {
      this.#stop();
      throw new TypeError(
        `Cannot listen on "${hostname}" without builder authentication: pass --builder-tokens, or listen on loopback`,
      );
    }
    let server;
    try {
      server = await listenServer({
        hostname,
        port,
        tls: this.#tls,
        checkUpgrade: (headers) => this.#checkUpgrade(headers),
        onSocket: (socket, peer) => this.#accept(socket, peer),
        http: (req, peer) => this.#routes.handle(req, peer),
        maxMessageBytes: MAX_MESSAGE_BYTES,
        maxHttpConnections: this.#maxHttpConnections,
        logger: this.#log,
      });
    } catch (err) {
      this.#stop();
      throw err;
    }
    const addr = server.addr;
    const host = addr.hostname.includes(":")
      ? `[${addr.hostname}]`
      : addr.hostname;
    const url = `${this.#tls ? "wss" : "ws"}://${host}:${addr.port}`;
    const core = this.#core;
    return {
      url,
      hostname: addr.hostname,
      port: addr.port,
      allocator: core.allocator,
      status: () => core.status(this.#now()),
      admin: this.#admin,
      reloadBudgets: (budgets) => this.#reload(budgets),
      finished: server.finished,
      shutdown: async () => {
        if (!this.#closing) {
          this.#routes.close();
          this.#run(core.shutdown(this.#now()));
          this.#stop();
        }
        await this.#writer?.idle();
        await server.shutdown();
      },
    };
  }

  /** No timer any more; the core is told nothing more. */
  #stop(): void {
    this.#closing = true;
    clearTimeout(this.#timer);
    this.#timer = this.#timerAt = undefined;
  }

  #now(): Tick {
    const tick = this.#tick;
    tick.mono = this.#clock();
    tick.wall = wallClock();
    return tick;
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

  /** One builder connection: each callback is one event of the core. */
  #accept(socket: ServerWebSocket, peer: string): void {
    const id = `c${this.#nextId++}`;
    const core = this.#core;
    this.#sockets.set(id, socket);
    socket.onmessage = (ev) => {
      const data = ev.data;
      this.#run(
        typeof data === "string"
          ? core.message(id, data, this.#now())
          : core.binary(id, data.length, this.#now()),
      );
    };
    socket.onheard = () => this.#run(core.heard(id, this.#now()));
    socket.onclose = () => {
      this.#sockets.delete(id);
      this.#run(core.closed(id, this.#now()));
    };
    socket.onerror = () => {};
    this.#run(core.open(id, peer, this.#now()));
  }

  /** Carries out the core's actions, in order. */
  #run(actions: ServerAction[]): void {
    for (const a of actions) {
      switch (a.type) {
        case "send":
          this.#sockets.get(a.conn as string)?.send(a.text);
          break;
        case "log":
          this.#log.log(a.level, a.msg, a.fields);
          break;
        case "changed":
          this.#routes.changed();
          break;
        case "wake":
          this.#arm(a.at);
          break;
        case "close": {
          const socket = this.#sockets.get(a.conn as string);
          if (a.code === 1006) socket?.abort();
          else socket?.close(a.code, a.reason);
          break;
        }
        case "ping":
          this.#sockets.get(a.conn as string)?.ping();
          break;
        case "write":
          this.#write(a.seq, a.state);
          break;
        case "persisted":
          this.#persisting = this.#persisting.filter((p) => {
            if (p.ticket > a.upTo) return true;
            p.resolve(a.ok);
            return false;
          });
          break;
      }
    }
  }

  #write(seq: number, state: Parameters<StateWriter["write"]>[0]): void {
    const core = this.#core;
    this.#writer!.write(state).then(
      () => this.#run(core.written(seq, true, undefined, this.#now())),
      (err) =>
        this.#run(
          core.written(seq, false, (err as Error).message, this.#now()),
        ),
    );
  }

  /** The one timer: at the core's next wake-up, unless one is armed earlier. */
  #arm(at: number): void {
    if (this.#closing) return;
    if (this.#timerAt !== undefined && this.#timerAt <= at) return;
    clearTimeout(this.#timer);
    this.#timerAt = at;
    const delay = Math.min(Math.max(0, at - this.#clock()), MAX_DELAY_MS);
    this.#timer = setTimeout(() => {
      this.#timerAt = undefined;
      this.#run(this.#core.wake(this.#now()));
    }, delay);
  }
}
