/**
 * The server's protocol logic as a state machine, without I/O: builder
 * connections and their hellos, welcomes and liveness, leases and their
 * deadlines through the {@linkcode Allocator}, the builder grace, restores
 * and the reclaim grace, the state file's rules, queue progress, delivery,
 * operator actions and the counters of the audit.
 *
 * Each event comes with a {@linkcode Tick} (both clocks, read once by the
 * caller) and returns the actions it caused, to be carried out in order:
 * {@linkcode ServerAction}.  The core reads no clock, arms no timer and
 * opens nothing: it asks to be woken ({@linkcode WakeAction}) at its next
 * deadline and keeps every duration on the monotonic clock; wall-clock
 * times it shows are made from the tick at the moment they are shown.  The
 * shell (`../server_app.ts`) turns sockets, timers and files into events;
 * a simulator can drive it on a virtual clock and network.
 *
 * @module
 */

import {
  Allocator,
  type Outcome,
  type RefusalReason,
} from "../../allocator/allocator.ts";
import type { Policy } from "../../allocator/policy.ts";
import type { Mutant, Tick, WakeAction } from "../../shared/core_io.ts";
import type { Fields, Level } from "../../shared/log.ts";
import { MinHeap } from "../../shared/min_heap.ts";
import {
  encode,
  isHello,
  isPing,
  isRequest,
  isRestored,
  NAME_IN_USE,
  parseBuilderMessage,
  ProtocolError,
  SCHEMA,
  type ServerMessage,
} from "../../protocol/protocol.ts";
import type { StatusDocument } from "../status_document.ts";
import type { ChangedAction, ConnId, ServerAction } from "./actions.ts";
import type {
  Actor,
  BudgetChange,
  ClearResult,
  ForceReleaseResult,
  RemoveResult,
} from "./admin_rules.ts";
import { BuilderGrace } from "./builder_grace.ts";
import { OutcomeDelivery } from "./delivery.ts";
import { LeaseProcesses } from "./lease_processes.ts";
import { ActionLog } from "./log.ts";
import { type KeptOverride, OperatorActions } from "./operator.ts";
import { QueueProgress } from "./progress.ts";
import { RestartGuard } from "./restart_guard.ts";
import type { Conn, Hello } from "./sessions.ts";
import { ANONYMOUS, type StoredState } from "./state.ts";
import { type ServerStats, WaitHistogram, zeroStats } from "./stats.ts";
import { type Hash, type TokenDigest, verifyToken } from "./tokens.ts";

/** Options for {@linkcode ServerCore}. */
export interface ServerCoreOptions {
  /** Budgets from `--resources` or `--config`, before any override. */
  budgets: Map<string, number>;
  /** Scheduling policy (default: the allocator's, fifo). */
  policy?: Policy;
  /** Longest lease accepted, in seconds (default 86400). */
  maxLease?: number;
  /**
   * Seconds a builder link may stay silent before it is dropped (default
   * 10); it is pinged after half of it.  The welcome announces it.
   */
  heartbeat?: number;
  /**
   * Seconds a lost builder's leases stay counted (at most until their own
   * end), from when the server last heard from it, plus a heartbeat
   * (default 4 × heartbeat).  Builders fence after half of it.
   */
  builderGrace?: number;
  /**
   * Seconds after a start that follows a crash during which only restores
   * are admitted (default: the builder grace); 0 turns it off.
   */
  reclaimGrace?: number;
  /** Most requests one builder may have queued (default 10,000). */
  maxQueuedPerBuilder?: number;
  /**
   * Most builder connections past their hello (default 256); a builder
   * resuming its session always gets back in.
   */
  maxBuilders?: number;
  /** Digests of the tokens builders must present; none: no check. */
  builderTokens?: readonly TokenDigest[] | undefined;
  /** SHA-256 as hex, for session digests and tokens (the shell's). */
  hash: Hash;
  /** The most verbose level logged (default "info"): fields of others are never built. */
  logLevel?: Level;
  /** How long a connection has to say hello, in ms (default 5000). */
  helloTimeoutMs?: number;
  /** How often queue positions are pushed at most, in ms (default 250). */
  progressIntervalMs?: number;
  /**
   * Starts every lease id (default ""): give each run its own, since a
   * builder restores its leases' ids into the next run.
   */
  idPrefix?: string;
  /**
   * The state file's path, for logs.  Without it there is no stable
   * storage: every start is a first start and nothing is written.
   */
  stateFile?: string | undefined;
  /** A deliberate bug for the simulator (core_io.ts); never in production. */
  mutant?: Mutant | undefined;
}

/** What an admin call returns: its result, and the actions it caused. */
export interface AdminCall<R> {
  result: R;
  actions: ServerAction[];
  /**
   * The change is to be kept in the state file: a ticket that a
   * `persisted` action settles; false: it cannot be (no state file);
   * undefined: nothing to keep.
   */
  persist: number | false | undefined;
}

/** Default of `--max-builders`. */
export const DEFAULT_MAX_BUILDERS = 256;

/**
 * An expired lease stays counted this long past its end: a builder ends
 * its holder at the end by its own clock, started when the grant reached
 * it, a moment after the server's.
 */
export const EXPIRY_MARGIN_MS = 1000;

/**
 * Most characters of messages a connection may have waiting behind its
 * hello (bytes for binary frames): room for a builder's whole restore,
 * sent right after its hello.  More is closed with 1013 (try again later).
 */
export const MAX_QUEUED_CHARS = 16 * 1024 * 1024;

/**
 * Most connections that have not said hello yet: a newcomer past it closes
 * the oldest (code 1013), so upgrades that never say hello hold at most
 * this many descriptors and cannot keep out a builder, which says hello at
 * once.
 */
export const MAX_PENDING_HELLOS = 64;

/**
 * Most cookies a connection remembers as granted on it before its
 * `restored` marker (ours sends it at once; one that never does stops
 * remembering, and is then never answered with a dropped grant's).
 */
const MAX_GRANTED_HERE = 10_000;

/** The one `changed` action: it carries nothing, so it is shared. */
const CHANGED: ChangedAction = Object.freeze({ type: "changed" });

/** Stale liveness checks tolerated beyond the connections' count. */
const STALE_CHECKS = 64;

/** The server's protocol logic: events in, actions out. */
export class ServerCore {
  #allocator: Allocator;
  #log: ActionLog;
  #hash: Hash;
  #tokens: readonly TokenDigest[] | undefined;
  #mutant: Mutant | undefined;
  #heartbeat: number;
  #heartbeatMs: number;
  /** Seconds a builder may go without a round trip before it fences. */
  #fence: number;
  #helloTimeoutMs: number;
  #maxBuilders: number;
  /** Every open connection, by the shell's id. */
  #conns = new Map<ConnId, Conn>();
  /** Welcomed connections, by owner (session). */
  #sessions = new Map<string, Conn>();
  /** Connections yet to say hello, oldest first. */
  #pending = new Set<Conn>();
  /** Hellos of new sessions waiting for the state file, against the cap. */
  #helloing = 0;
  /**
   * Connections whose hello passed the name check and waits for the state
   * file: their names are taken already.
   */
  #claims = new Map<Conn, { name: string; owner: string }>();
  /** Public ids by session, kept while the session lives. */
  #publicIds = new Map<string, string>();
  #nextPublicId = 1;
  #nextAnonymous = 1;
  /** Liveness and hello checks by time; stale entries are skipped. */
  #checks = new MinHeap<Conn>();
  #grace: BuilderGrace;
  #guard: RestartGuard<Conn>;
  #progress: QueueProgress;
  #delivery: OutcomeDelivery;
  #operator: OperatorActions;
  #processes: LeaseProcesses;
  #stats: ServerStats = zeroStats();
  #waits = new WaitHistogram();
  /** The monotonic time of the event being handled. */
  #now = 0;
  /** Wall-clock minus monotonic time, by the event's tick. */
  #wallOffset = 0;
  /** The event's actions. */
  #out: ServerAction[] = [];
  /** Something the status shows moved during the event. */
  #changed = false;
  /** The wake-up last asked for, until it comes. */
  #wakeAt: number | undefined;
  /** The ticket of the admin call being handled, if it made one. */
  #ticket: number | false | undefined;
  #stopped = false;

  constructor(options: ServerCoreOptions) {
    this.#hash = options.hash;
    this.#tokens = options.builderTokens;
    this.#mutant = options.mutant;
    this.#log = new ActionLog(
      options.logLevel ?? "info",
      (line) => this.#out.push(line),
    );
    this.#helloTimeoutMs = options.helloTimeoutMs ?? 5000;
    this.#maxBuilders = options.maxBuilders ?? DEFAULT_MAX_BUILDERS;
    this.#heartbeat = options.heartbeat ?? 10;
    this.#heartbeatMs = this.#heartbeat * 1000;
    const grace = options.builderGrace ?? 4 * this.#heartbeat;
    this.#fence = Math.round(grace / 2 * 1000) / 1000;
    const allocator = this.#allocator = new Allocator(options.budgets, {
      now: () => this.#now,
      idPrefix: options.idPrefix ?? "",
      // Past a lease's end, its builder ends it and tells the holder; a
      // builder frozen across that end cannot.  Its silence is noticed
      // within a heartbeat, and then its leases wait for the builder grace
      // (builder_grace.ts): until then the margin keeps them counted.
      expiryMarginMs: this.#heartbeatMs + EXPIRY_MARGIN_MS,
      ...(options.maxLease !== undefined && { maxLease: options.maxLease }),
      ...(options.policy !== undefined && { policy: options.policy }),
      ...(options.maxQueuedPerBuilder !== undefined &&
        { maxQueuedPerOwner: options.maxQueuedPerBuilder }),
      ...(this.#mutant === "restore-unbounded" && { restoreUnbounded: true }),
    });
    this.#processes = new LeaseProcesses((owner, cookie) =>
      allocator.lookup(owner, cookie) !== undefined
    );
    this.#progress = new QueueProgress({
      allocator,
      send: (owner, msg) => this.#send(this.#sessions.get(owner), msg),
      intervalMs: options.progressIntervalMs ?? 250,
    });
    this.#grace = new BuilderGrace({
      allocator,
      stats: this.#stats,
      log: this.#log,
      progress: this.#progress,
      // From when the server last heard the builder, which pings at least
      // every half heartbeat (the welcome says so): a builder frozen for
      // less than the builder grace wakes, and fences, before its leases
      // are dropped here, with half a heartbeat to spare.
      graceMs: (grace + this.#heartbeat) * 1000,
      apply: (outcomes) => this.#apply(outcomes),
      forget: (owner) => this.#publicIds.delete(owner),
    });
    this.#delivery = new OutcomeDelivery({
      stats: this.#stats,
      waits: this.#waits,
      log: this.#log,
      progress: this.#progress,
      send: (owner, msg) => {
        const c = this.#sessions.get(owner);
        if (c?.grantedHere && "amount" in msg) {
          if (c.grantedHere.size >= MAX_GRANTED_HERE) c.grantedHere = undefined;
          else c.grantedHere.add(msg.cookie);
        }
        this.#send(c, msg);
      },
      pid: (owner) => this.#pid(owner),
      now: () => this.#now,
      wall: (at) => this.#wall(at),
    });
    this.#operator = new OperatorActions({
      allocator,
      log: this.#log,
      stats: this.#stats,
      sessions: () => this.#sessions.values(),
      send: (owner, msg) => this.#send(this.#sessions.get(owner), msg),
      apply: (outcomes) => this.#apply(outcomes),
      progress: this.#progress,
      config: options.budgets,
      persist: () => {
        this.#ticket = this.#guard.persist();
      },
    });
    this.#guard = new RestartGuard<Conn>({
      path: options.stateFile,
      reclaimMs: (options.reclaimGrace ?? grace) * 1000,
      fence: this.#fence,
      log: this.#log,
      current: () => this.#currentDigests(),
      overrides: () => this.#operator.overrides(),
      restoreOverrides: (overrides) => this.#operator.restore(overrides),
      begin: () => allocator.beginReclaim(),
      end: () => {
        this.#progress.touchAll();
        this.#apply(allocator.endReclaim());
      },
      write: (seq, state) => this.#out.push({ type: "write", seq, state }),
      recorded: (conn) => this.#recorded(conn),
      persisted: (upTo, ok) => this.#out.push({ type: "persisted", upTo, ok }),
      noReclaimGrace: this.#mutant === "no-reclaim-grace",
    });
  }

  /** The allocator, for reading (status, benchmarks); change it through events. */
  get allocator(): Allocator {
    return this.#allocator;
  }

  /** How long granted requests waited, for `/metrics`. */
  get waits(): WaitHistogram {
    return this.#waits;
  }

  /** The budgets in force, by resource. */
  budgets(): Map<string, number> {
    return this.#allocator.budgets();
  }

  // --- Events ------------------------------------------------------------

  /**
   * The server starts, with what the shell found in the state file
   * (ignored without one): after a crash, or a file it cannot trust, the
   * reclaim grace begins.  Its `write` (the file marked dirty) must succeed
   * before the shell listens.  Call once, first.
   */
  start(stored: StoredState, tick: Tick): ServerAction[] {
    this.#begin(tick);
    this.#guard.start(stored, this.#now);
    return this.#end();
  }

  /** A builder's WebSocket is open; `peer` is its address, `HOST:PORT`. */
  open(conn: ConnId, peer: string, tick: Tick): ServerAction[] {
    this.#begin(tick);
    if (this.#conns.has(conn)) {
      throw new TypeError(`Cannot open connection "${conn}": it is open`);
    }
    const now = this.#now;
    const c: Conn = {
      id: conn,
      owner: undefined,
      publicId: "",
      name: undefined,
      unconfirmed: undefined,
      peer,
      connectedAt: now,
      lastHeard: now,
      digest: undefined,
      helloBy: now + this.#helloTimeoutMs,
      admitted: undefined,
      backlog: undefined,
      backlogSize: 0,
      checkAt: 0,
      closing: false,
    };
    this.#conns.set(conn, c);
    if (this.#stopped) {
      this.#close(c, 1001, "server shutting down");
      return this.#end();
    }
    this.#schedule(c, Math.min(c.helloBy!, now + this.#heartbeatMs / 2));
    this.#pending.add(c);
    if (this.#pending.size > MAX_PENDING_HELLOS) {
      const [oldest] = this.#pending;
      this.#reject(oldest!, "too many connections waiting to say hello", {
        limit: MAX_PENDING_HELLOS,
      }, 1013);
    }
    return this.#end();
  }

  /** A text message from a connection. */
  message(conn: ConnId, text: string, tick: Tick): ServerAction[] {
    this.#begin(tick);
    const c = this.#conns.get(conn);
    if (c !== undefined && !c.closing && !this.#stopped) {
      c.lastHeard = this.#now;
      if (c.backlog !== undefined) this.#hold(c, text, text.length);
      else this.#receive(c, text);
    }
    return this.#end();
  }

  /** A binary message (`bytes` long) from a connection: refused. */
  binary(conn: ConnId, bytes: number, tick: Tick): ServerAction[] {
    this.#begin(tick);
    const c = this.#conns.get(conn);
    if (c !== undefined && !c.closing && !this.#stopped) {
      c.lastHeard = this.#now;
      if (c.backlog !== undefined) this.#hold(c, bytes, bytes);
      else this.#reject(c, "binary frames are not accepted");
    }
    return this.#end();
  }

  /**
   * A connection showed it is alive without a message: a pong, a ping, a
   * fragment of a message.
   */
  heard(conn: ConnId, tick: Tick): ServerAction[] {
    this.#begin(tick);
    const c = this.#conns.get(conn);
    if (c !== undefined) c.lastHeard = this.#now;
    return this.#end();
  }

  /** A connection is gone, whoever closed it. */
  closed(conn: ConnId, tick: Tick): ServerAction[] {
    this.#begin(tick);
    const c = this.#conns.get(conn);
    if (c === undefined) return this.#end();
    this.#conns.delete(conn);
    this.#pending.delete(c);
    this.#abandon(c);
    this.#guard.restored(c, undefined);
    const owner = c.owner;
    // A connection replaced by a newer one of the same builder owns nothing.
    if (owner === undefined || this.#sessions.get(owner) !== c) {
      return this.#end();
    }
    this.#sessions.delete(owner);
    this.#log.info("builder disconnected", {
      builder: c.publicId,
      name: c.name,
    });
    if (!this.#stopped) this.#grace.detach(c, owner, this.#now);
    return this.#end();
  }

  /**
   * The time asked for by the last {@linkcode WakeAction} has come (or
   * any time: what is not due waits).  Leases expire, graces end, queue
   * positions are pushed, a failed write is retried, silent links are
   * pinged or dropped and late hellos refused.
   */
  wake(tick: Tick): ServerAction[] {
    this.#begin(tick);
    this.#wakeAt = undefined;
    if (this.#stopped) return this.#end();
    const now = this.#now;
    this.#apply(this.#allocator.expire());
    this.#checkConns(now);
    this.#grace.wake(now);
    this.#guard.wake(now);
    this.#progress.wake(now);
    return this.#end();
  }

  /** The outcome of the state file write `seq`: done, or failed with `error`. */
  written(
    seq: number,
    ok: boolean,
    error: string | undefined,
    tick: Tick,
  ): ServerAction[] {
    this.#begin(tick);
    this.#guard.written(seq, ok, error, this.#now);
    return this.#end();
  }

  /** The server stops: the state file's last write, and every builder closed. */
  shutdown(tick: Tick): ServerAction[] {
    this.#begin(tick);
    if (this.#stopped) return this.#end();
    this.#stopped = true;
    this.#progress.close();
    for (const c of this.#conns.values()) this.#abandon(c);
    this.#guard.shutdown(
      this.#allocator.status().some((r) => r.allocated > 0),
    );
    for (const s of this.#sessions.values()) {
      this.#close(s, 1001, "server shutting down");
    }
    return this.#end();
  }

  // --- Operator actions ----------------------------------------------------

  /** The admin API sets a budget (adding the resource if new): an override. */
  setBudget(
    name: string,
    budget: number,
    by: Actor,
    tick: Tick,
  ): AdminCall<BudgetChange> {
    return this.#admin(tick, () => this.#operator.setBudget(name, budget, by));
  }

  /** The admin API removes a resource that holds no lease. */
  removeResource(name: string, by: Actor, tick: Tick): AdminCall<RemoveResult> {
    return this.#admin(tick, () => this.#operator.removeResource(name, by));
  }

  /** The admin API hands a resource's budget back to the config. */
  clearOverride(name: string, by: Actor, tick: Tick): AdminCall<ClearResult> {
    return this.#admin(tick, () => this.#operator.clearOverride(name, by));
  }

  /** The admin API ends a lease of a connected builder (by id or name). */
  forceRelease(
    builder: string,
    cookie: string,
    by: Actor,
    tick: Tick,
  ): AdminCall<ForceReleaseResult> {
    return this.#admin(
      tick,
      () => this.#operator.forceRelease(builder, cookie, by),
    );
  }

  /**
   * A new config (SIGHUP), applied by the admin rules; budgets set through
   * the admin API win.  Returns the resources left draining and those that
   * keep an override.
   */
  reload(
    budgets: Map<string, number>,
    tick: Tick,
  ): AdminCall<{ draining: string[]; kept: KeptOverride[] }> {
    return this.#admin(
      tick,
      () => this.#operator.reload(budgets, { addr: "SIGHUP" }),
    );
  }

  #admin<R>(tick: Tick, action: () => R): AdminCall<R> {
    this.#begin(tick);
    this.#ticket = undefined;
    const result = action();
    const persist = this.#ticket;
    this.#ticket = undefined;
    return { result, persist, actions: this.#end() };
  }

  // --- Status --------------------------------------------------------------

  /** The `/api/status` document (and what `/metrics` renders), at `tick`. */
  status(tick: Tick): StatusDocument {
    if (tick.mono > this.#now) this.#now = tick.mono;
    this.#wallOffset = tick.wall - tick.mono;
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
    const wall = (at: number) => this.#wall(at);
    const reclaimUntil = this.#guard.reclaimUntil;
    return {
      version: 1,
      time: wall(this.#now),
      reclaimUntil: reclaimUntil === null ? null : wall(reclaimUntil),
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

  // --- The event's frame -----------------------------------------------------

  #begin(tick: Tick): void {
    // Monotonic: a tick from before the last one cannot move time back.
    if (tick.mono > this.#now) this.#now = tick.mono;
    this.#wallOffset = tick.wall - tick.mono;
    this.#out = [];
    this.#changed = false;
  }

  /** Closes the event: the status moved, the next wake-up. */
  #end(): ServerAction[] {
    const out = this.#out;
    if (this.#changed) out.push(CHANGED);
    if (!this.#stopped) {
      const at = this.#next();
      // A wake-up asked for earlier stays: it finds nothing due, and asks
      // for what is next then.  The earliest lease is the one most often
      // released, so asking anew at every change cost a timer per lease.
      if (
        at !== undefined && (this.#wakeAt === undefined || at < this.#wakeAt)
      ) {
        this.#wakeAt = at;
        out.push({ type: "wake", at } satisfies WakeAction);
      }
    }
    return out;
  }

  /** The earliest deadline (monotonic ms), if any: after every event. */
  #next(): number | undefined {
    // Plain comparisons: no closure or array on the hot path.
    let at = this.#allocator.nextExpiry();
    let t = this.#nextCheck();
    if (t !== undefined && (at === undefined || t < at)) at = t;
    t = this.#grace.next;
    if (t !== undefined && (at === undefined || t < at)) at = t;
    t = this.#guard.next;
    if (t !== undefined && (at === undefined || t < at)) at = t;
    t = this.#progress.due;
    if (t !== undefined && (at === undefined || t < at)) at = t;
    return at;
  }

  #wall(at: number): number {
    return Math.round(at + this.#wallOffset);
  }

  // --- Connections -------------------------------------------------------------

  /** Checks `c` (its hello, its liveness) next at `at`. */
  #schedule(c: Conn, at: number): void {
    c.checkAt = at;
    this.#checks.push(at, c);
    if (this.#checks.size > 2 * this.#conns.size + STALE_CHECKS) {
      this.#checks.retain((key, conn) => this.#isChecked(conn, key));
    }
  }

  #isChecked(c: Conn, at: number): boolean {
    return c.checkAt === at && !c.closing && this.#conns.get(c.id) === c;
  }

  #nextCheck(): number | undefined {
    for (;;) {
      const c = this.#checks.peek();
      if (c === undefined) return undefined;
      const at = this.#checks.peekKey()!;
      if (this.#isChecked(c, at)) return at;
      this.#checks.pop();
    }
  }

  /**
   * Refuses hellos that did not come in time; pings a link silent half a
   * heartbeat, and drops one silent a whole heartbeat (a dead route, a
   * frozen peer: nothing closes it otherwise).  A builder pings at least
   * every half heartbeat itself (the welcome says so), so its link is
   * pinged only when it is in trouble.
   */
  #checkConns(now: number): void {
    for (;;) {
      const at = this.#checks.peekKey();
      if (at === undefined || at > now) return;
      const c = this.#checks.pop()!;
      if (!this.#isChecked(c, at)) continue;
      if (c.helloBy !== undefined && now >= c.helloBy) {
        this.#reject(c, "no hello in time");
        continue;
      }
      const silent = now - c.lastHeard;
      if (silent >= this.#heartbeatMs) {
        this.#log.info("builder link silent: dropped", {
          connection: c.id,
          ...(c.publicId !== "" && { builder: c.publicId }),
          silent_ms: Math.round(silent),
        });
        this.#close(c, 1006, "silent past the heartbeat");
        continue;
      }
      let next: number;
      if (silent >= this.#heartbeatMs / 2) {
        this.#out.push({ type: "ping", conn: c.id });
        next = c.lastHeard + this.#heartbeatMs;
      } else next = c.lastHeard + this.#heartbeatMs / 2;
      if (c.helloBy !== undefined) next = Math.min(next, c.helloBy);
      this.#schedule(c, next);
    }
  }

  /** Holds what a connection sends while its hello waits, up to a bound. */
  #hold(c: Conn, item: string | number, size: number): void {
    c.backlogSize += size;
    if (c.backlogSize > MAX_QUEUED_CHARS) {
      this.#log.warn("builder refused", {
        connection: c.id,
        reason: "too much sent before its hello was answered",
      });
      this.#close(c, 1013, "too much sent before the welcome; try again");
      return;
    }
    c.backlog!.push(item);
  }

  /** Closes a connection: nothing more is acted on or sent. */
  #close(c: Conn, code: number, reason: string): void {
    if (c.closing) return;
    c.closing = true;
    this.#pending.delete(c);
    this.#abandon(c);
    this.#out.push({ type: "close", conn: c.id, code, reason });
  }

  /** A hello waiting for the state file will never be welcomed. */
  #abandon(c: Conn): void {
    const admitted = c.admitted;
    c.backlog = undefined;
    if (admitted === undefined) return;
    c.admitted = undefined;
    this.#guard.abandon(c);
    this.#claims.delete(c);
    if (admitted.counted) this.#helloing--;
  }

  #reject(c: Conn, reason: string, fields: Fields = {}, code = 1008): void {
    this.#log.warn("builder refused", {
      connection: c.id,
      ...(c.name !== undefined && { name: c.name }),
      ...fields,
      reason,
    });
    // A close reason is limited to 123 bytes.
    this.#close(c, code, reason.slice(0, 120));
  }

  #send(c: Conn | undefined, msg: ServerMessage): void {
    if (c === undefined || c.closing) return;
    this.#out.push({ type: "send", conn: c.id, text: encode(msg) });
  }

  // --- Messages ------------------------------------------------------------

  #receive(c: Conn, text: string): void {
    let msg;
    try {
      msg = parseBuilderMessage(text);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      if (c.owner === undefined) {
        this.#reject(c, err.message);
        return;
      }
      this.#log.warn("bad message from builder", {
        builder: c.publicId,
        error: err.message,
      });
      this.#send(c, {
        schema: SCHEMA,
        cookie: err.cookie ?? "",
        error: err.message,
      });
      if (err.cookie !== undefined) this.#count("invalid");
      return;
    }
    if (isHello(msg)) {
      this.#hello(c, msg.hello);
      return;
    }
    const owner = c.owner;
    if (owner === undefined) {
      this.#reject(c, "the first message must be a hello");
      return;
    }
    if (isPing(msg)) {
      this.#send(c, { schema: SCHEMA, pong: msg.ping });
      return;
    }
    if (isRestored(msg)) {
      c.grantedHere = undefined;
      this.#dropUnconfirmed(c, owner);
      this.#guard.restored(c, c.digest);
      return;
    }
    // A lease the server counts that the builder re-sends as waiting (its
    // grant never arrived, or a yield of it was lost and the cookie is in
    // use again), or re-sends as held under another grant: nobody holds
    // this one.  It is dropped, so that the re-sent request is taken for
    // what it is, never answered with that old grant (whose time was
    // running out, or whose amount was another).
    if (isRequest(msg) && msg.restore) {
      const known = this.#allocator.lookup(owner, msg.cookie);
      if (known?.state === "leased" && msg.restore === "queued") {
        // Granted on this connection: the grant is on its way, and crossed
        // the re-sent request.  Nothing to do but take it as re-sent.
        if (c.grantedHere?.has(msg.cookie) ?? true) {
          c.unconfirmed?.delete(msg.cookie);
          return;
        }
        this.#dropLease(c, owner, msg.cookie, "re-sent as waiting");
      } else if (
        known?.state === "leased" && msg.id !== undefined &&
        msg.id !== known.id && this.#mutant !== "stale-yield"
      ) {
        this.#dropLease(c, owner, msg.cookie, "re-sent under another grant");
      }
    }
    // Only a re-sent restore confirms a cookie: a new request refused as a
    // duplicate must not keep a lease whose holder is gone.
    if (isRequest(msg) && msg.restore) c.unconfirmed?.delete(msg.cookie);
    if (isRequest(msg)) {
      if (this.#log.enabled("debug")) {
        this.#log.debug("request", { builder: this.#pid(owner), ...msg });
      }
      if (msg.restore === "lease") {
        const why = this.#guard.restoreRefusal(c.digest ?? ANONYMOUS);
        if (why !== undefined) {
          this.#count("restore-not-recorded");
          this.#log.warn("restore refused", {
            builder: this.#pid(owner),
            cookie: msg.cookie,
            reason: why,
          });
          this.#send(c, {
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
          this.#progress.watch(owner, msg.cookie, queued.resnames, this.#now);
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
      // The simulator's mutant: a late yield ends whatever the cookie is now.
      this.#mutant === "stale-yield" ? undefined : msg.id,
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
    const ran = found === "lease" && expires <= this.#now;
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
      this.#progress.forget(owner, msg.cookie);
    }
    this.#apply(outcomes);
  }

  /** Drops a lease nobody holds (see where the builder re-sends it). */
  #dropLease(c: Conn, owner: string, cookie: string, why: string): void {
    const held = this.#allocator.lookup(owner, cookie);
    for (const name of held?.resnames ?? []) this.#progress.touch(name);
    const { found, outcomes } = this.#allocator.release(owner, cookie);
    if (found === "lease") this.#stats.drops++;
    this.#log.info("dropped: nobody holds it", {
      builder: c.publicId,
      cookie,
      why,
    });
    this.#processes.forget(owner, cookie);
    this.#progress.forget(owner, cookie);
    this.#apply(outcomes);
  }

  /** Drops what a reconnected builder did not re-send. */
  #dropUnconfirmed(c: Conn, owner: string): void {
    const stale = c.unconfirmed;
    c.unconfirmed = undefined;
    for (const [cookie, id] of stale ?? []) {
      const held = this.#allocator.lookup(owner, cookie);
      // Ended since (an expiry, say), and the cookie is a new request's.
      if (held === undefined || held.id !== id) continue;
      for (const name of held?.resnames ?? []) this.#progress.touch(name);
      const { found, outcomes } = this.#allocator.release(owner, cookie);
      if (found === "lease") this.#stats.drops++;
      if (found === "queued") this.#stats.withdrawals++;
      this.#log.info("dropped after reconnect: not restored", {
        builder: c.publicId,
        cookie,
        was: found,
      });
      this.#progress.forget(owner, cookie);
      this.#apply(outcomes);
    }
  }

  // --- Hello and welcome ---------------------------------------------------

  #hello(c: Conn, hello: Hello): void {
    if (c.name !== undefined || !this.#pending.delete(c)) {
      this.#reject(c, "hello sent twice");
      return;
    }
    c.helloBy = undefined;
    // A builder resuming its session always gets back in; a new one only
    // while there is room (the cap keeps descriptors for everyone else).
    const resuming = hello.session !== undefined &&
      (this.#sessions.has(hello.session) ||
        this.#grace.get(hello.session) !== undefined);
    if (
      !resuming && this.#sessions.size + this.#helloing >= this.#maxBuilders
    ) {
      this.#reject(
        c,
        `too many builders: the server takes --max-builders ${this.#maxBuilders}`,
        { name: hello.name },
        1013,
      );
      return;
    }
    this.#admit(c, hello, resuming);
  }

  /** The rest of a hello: authentication, the name, the state file. */
  #admit(c: Conn, hello: Hello, resuming: boolean): void {
    if (
      this.#tokens &&
      !verifyToken(this.#tokens, hello.name, hello.token, this.#hash)
    ) {
      this.#reject(
        c,
        hello.token === undefined
          ? "authentication failed: no token"
          : "authentication failed: wrong token for this builder name",
        { name: hello.name },
      );
      return;
    }
    if (hello.session !== undefined && hello.session.length < 16) {
      this.#reject(c, "a session must be 16 to 64 characters", {
        name: hello.name,
      });
      return;
    }
    // Without a session a builder gets an owner nobody can name (a space
    // is in no session): nothing it holds can be resumed, or taken over.
    const owner = hello.session ?? `anonymous ${this.#nextAnonymous++}`;
    const previous = this.#sessions.get(owner);
    const detached = this.#grace.get(owner);
    if (
      (previous && previous.name !== hello.name) ||
      (detached && detached.name !== hello.name)
    ) {
      this.#reject(c, "this session belongs to another builder", {
        name: hello.name,
      });
      return;
    }
    const other = this.#nameHolder(c, hello.name, owner);
    if (other && !previous && !detached) {
      // Two machines under one name (a cloned host name, the default):
      // the newcomer is refused, and exits naming the other.
      this.#reject(c, `${NAME_IN_USE}${other.peer}`, {
        name: hello.name,
        peer: c.peer,
      });
      return;
    }
    if (other) {
      // Resuming its own session: its holders keep their leases.  The
      // other took the name while this one was away.
      this.#log.warn("two live builders share a name", {
        name: hello.name,
        peer: c.peer,
        other: other.peer,
        hint: "give one of them another --name",
      });
    }
    const admitted = {
      name: hello.name,
      owner,
      digest: hello.session === undefined
        ? ANONYMOUS
        : this.#hash(hello.session),
      counted: !resuming,
    };
    // On disk before the welcome: a restart must wait for this builder.
    // While the state file cannot be written the hello waits (the write
    // is retried), and what the builder sends meanwhile waits behind it.
    if (this.#guard.recordSession(c, admitted.digest)) {
      this.#welcome(c, admitted);
      return;
    }
    c.admitted = admitted;
    c.backlog = [];
    c.backlogSize = 0;
    this.#claims.set(c, { name: hello.name, owner });
    if (admitted.counted) this.#helloing++;
  }

  /** The state file records a waiting hello's session. */
  #recorded(c: Conn): void {
    const admitted = c.admitted;
    const backlog = c.backlog;
    if (admitted === undefined || c.closing) return;
    c.admitted = undefined;
    c.backlog = undefined;
    this.#claims.delete(c);
    if (admitted.counted) this.#helloing--;
    this.#welcome(c, admitted);
    for (const item of backlog ?? []) {
      if (c.closing) break;
      if (typeof item === "string") this.#receive(c, item);
      else this.#reject(c, "binary frames are not accepted");
    }
  }

  #welcome(
    c: Conn,
    admitted: { name: string; owner: string; digest: string },
  ): void {
    const { name, owner, digest } = admitted;
    const previous = this.#sessions.get(owner);
    const detached = this.#grace.get(owner);
    c.digest = digest;
    c.name = name;
    c.owner = owner;
    let publicId = this.#publicIds.get(owner);
    if (publicId === undefined) {
      publicId = `b${this.#nextPublicId++}`;
      this.#publicIds.set(owner, publicId);
    }
    c.publicId = publicId;
    this.#sessions.set(owner, c);
    c.grantedHere = new Set();
    this.#grace.resume(owner);
    if (previous || detached) {
      // The same builder process is back (perhaps before its old
      // connection was seen to drop): keep its leases and queue places,
      // close the old, and drop at its `restored` marker whatever it does
      // not re-send (a yield lost with the old link, a lease it fenced).
      c.unconfirmed = new Map(
        this.#allocator.cookiesOf(owner).map((cookie) => [
          cookie,
          this.#allocator.lookup(owner, cookie)?.id ?? "",
        ]),
      );
      if (previous) this.#close(previous, 1000, "replaced by a new connection");
    }
    this.#guard.restoring(c, digest);
    this.#log.info(
      previous || detached ? "builder reconnected" : "builder connected",
      { builder: publicId, name, peer: c.peer },
    );
    this.#send(c, {
      schema: SCHEMA,
      welcome: { id: publicId, fence: this.#fence, heartbeat: this.#heartbeat },
    });
    this.#changed = true;
  }

  /**
   * A live connection of another session that holds `name`: welcomed, or
   * with its hello past this check.  A builder whose link is lost holds
   * none: a restarted builder (a new session) takes its name back at once.
   */
  #nameHolder(c: Conn, name: string, owner: string): Conn | undefined {
    // A scan: hellos are rare (a thousand builders reconnecting at once
    // cost a million comparisons, a few ms).
    for (const s of this.#sessions.values()) {
      if (s !== c && s.name === name && s.owner !== owner) return s;
    }
    for (const [s, claim] of this.#claims) {
      if (s !== c && claim.name === name && claim.owner !== owner) return s;
    }
    return undefined;
  }

  // --- Shared ----------------------------------------------------------------

  /** Digests of the builders that may hold leases: connected, or in their grace. */
  #currentDigests(): string[] {
    const digests: string[] = [];
    for (const s of this.#sessions.values()) {
      digests.push(s.digest ?? ANONYMOUS);
    }
    for (const [, d] of this.#grace.entries()) {
      digests.push(d.digest ?? ANONYMOUS);
    }
    return digests;
  }

  /** The public id of a builder session, for status and logs. */
  #pid(owner: string): string {
    return this.#publicIds.get(owner) ?? "";
  }

  #count(reason: RefusalReason): void {
    this.#stats.refusals[reason] = (this.#stats.refusals[reason] ?? 0) + 1;
  }

  /** Delivers outcomes: counted, logged and sent. */
  #apply(outcomes: Outcome[]): void {
    this.#delivery.deliver(outcomes);
    this.#progress.arm(this.#now);
    this.#changed = true;
  }
}
