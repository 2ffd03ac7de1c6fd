/**
 * What keeps the budget across a server restart: the state file (was the
 * last run's end clean, which builders may still hold leases) and the
 * reclaim grace it starts after a crash.  It fails closed: a state file
 * that cannot be read or trusted starts the full grace, and a builder is
 * welcomed only once the file records it.
 *
 * It decides what to write and when, and retries a failed write every
 * second; the shell writes ({@linkcode RestartGuardOptions.write}) and
 * reports the outcome ({@linkcode RestartGuard.written}).  One write is in
 * flight at a time, and each attempt writes the latest state.
 *
 * @module
 */

import type { Log } from "./log.ts";
import { ReclaimGrace } from "./reclaim.ts";
import {
  ANONYMOUS,
  type ServerState,
  STATE_VERSION,
  type StoredState,
} from "./state.ts";

/** Between a failed write and the next attempt, in ms. */
export const WRITE_RETRY_MS = 1000;

/** Options for {@linkcode RestartGuard}; `K` names a connection. */
export interface RestartGuardOptions<K> {
  /**
   * The state file's path, for logs; without one every start counts as a
   * first start and nothing is written.
   */
  path: string | undefined;
  /** Longest reclaim grace, in ms; 0: none. */
  reclaimMs: number;
  /** The fence (seconds) this run announces to its builders. */
  fence: number;
  log: Log;
  /** Digests of the builders that may hold leases now. */
  current: () => Iterable<string>;
  /** Hold back new grants (the grace begins). */
  begin: () => void;
  /** Grant again (the grace ended). */
  end: () => void;
  /** The budget overrides to record (see budget_sources.ts). */
  overrides: () => Record<string, number | null>;
  /**
   * The overrides a trusted state file recorded, before anything is
   * written or granted: the server applies them.
   */
  restoreOverrides: (overrides: Record<string, number | null>) => void;
  /**
   * Write `state` atomically and durably, then report the outcome to
   * {@linkcode RestartGuard.written} with `seq`.
   */
  write: (seq: number, state: ServerState) => void;
  /** The state file records this connection's session: welcome it. */
  recorded: (conn: K) => void;
  /** Every {@linkcode RestartGuard.persist} ticket up to `upTo` is settled. */
  persisted: (upTo: number, ok: boolean) => void;
  /** The simulator's `no-reclaim-grace` mutant: a crash costs no grace. */
  noReclaimGrace?: boolean;
}

/** What an untrusted state file costs besides the reclaim grace. */
const LOST_OVERRIDES =
  "budgets set through the admin API, if it recorded any, are the config's again";

/** The state file and the reclaim grace of one server run. */
export class RestartGuard<K> {
  #opts: RestartGuardOptions<K>;
  /** Digests recorded as possibly holding leases (or about to be). */
  #builders = new Set<string>();
  /** Digests in the state file as last written. */
  #durable = new Set<string>();
  /** Hellos waiting for the state file to record their session. */
  #waiters = new Map<K, string>();
  #reclaim: ReclaimGrace | undefined;
  /**
   * The sessions that may hold leases from the last run (ANONYMOUS: the
   * file could not be trusted, any may), kept in the file until the
   * reclaim grace ends; only they may restore leases during it.
   */
  #previous = new Set<string>();
  /** Whether the last run's sessions are still kept (until the grace ends). */
  #keepPrevious = true;
  /** When a failed write was last logged (monotonic ms). */
  #failureLoggedAt = -Infinity;
  /** Failed attempts since the last write that succeeded. */
  #failures = 0;
  /** The write in flight, if any. */
  #inFlight: { seq: number; state: ServerState } | undefined;
  #seq = 0;
  /** A newer state is to be written. */
  #dirty = false;
  /** When a failed write is tried again (monotonic ms). */
  #retryAt: number | undefined;
  /** Stopped: no more writes but the last. */
  #closed = false;
  #finalSeq: number | undefined;
  /** Counts calls to persist(): a write settles the tickets it includes. */
  #generation = 0;
  #generations = new Map<number, number>();
  /** The last ticket settled. */
  #settled = 0;

  constructor(options: RestartGuardOptions<K>) {
    this.#opts = options;
  }

  /** Whether there is a state file at all. */
  get enabled(): boolean {
    return this.#opts.path !== undefined;
  }

  /**
   * A start: what the state file held decides whether the reclaim grace
   * starts (the last run did not end cleanly, or the file cannot be
   * trusted), and the file is marked dirty before anything can be granted.
   * That first write must succeed before the server listens.
   */
  start(stored: StoredState, now: number): void {
    const options = this.#opts;
    if (!this.enabled) return;
    if (stored.kind === "state" && !stored.state.clean) {
      for (const d of stored.state.builders) this.#previous.add(d);
    }
    if (stored.kind === "state") {
      options.restoreOverrides(stored.state.overrides);
    }
    // Should this run crash before its grace ends, the next start must
    // not trust the file either: ANONYMOUS is never known to be back.
    if (stored.kind === "unknown") this.#previous.add(ANONYMOUS);
    for (const d of this.#previous) this.#builders.add(d);
    this.#write();
    if (options.reclaimMs <= 0 || options.noReclaimGrace) {
      this.#keepPrevious = false;
      if (stored.kind === "unknown") {
        options.log.warn("the state file cannot be trusted", {
          path: options.path,
          reason: stored.reason,
          hint: LOST_OVERRIDES,
        });
      }
      return;
    }
    let graceMs: number;
    let expected: string[] | "unknown";
    if (stored.kind === "unknown") {
      graceMs = Math.max(options.reclaimMs, options.fence * 1000);
      expected = "unknown";
    } else if (
      stored.kind === "state" && !stored.state.clean &&
      stored.state.builders.length > 0
    ) {
      // Builders fence by the fence the last run announced: wait that long.
      graceMs = Math.max(options.reclaimMs, stored.state.fence * 1000);
      expected = stored.state.builders;
    } else {
      this.#keepPrevious = false;
      return;
    }
    options.begin();
    this.#reclaim = new ReclaimGrace({
      graceMs,
      expected,
      onEnd: (reason) => {
        options.log.info("reclaim grace ended", { reason });
        this.#reclaim = undefined;
        this.#keepPrevious = false;
        // Builders that never came back have fenced by now; those still
        // waiting for their welcome are yet to be recorded.
        this.#builders = new Set([
          ...options.current(),
          ...this.#waiters.values(),
        ]);
        this.#schedule();
        options.end();
      },
    }, now);
    if (stored.kind === "unknown") {
      options.log.warn("reclaim grace: the state file cannot be trusted", {
        path: options.path,
        reason: stored.reason,
        seconds: graceMs / 1000,
        hint:
          `any builder may hold leases: only restores are admitted until the grace ends; ${LOST_OVERRIDES}`,
      });
    } else {
      options.log.warn("reclaim grace: the last run did not end cleanly", {
        seconds: graceMs / 1000,
        builders: (expected as string[]).length,
        hint: "only restores are admitted until the builders are back",
      });
    }
  }

  /** Until when (monotonic ms) only restores are admitted, or null. */
  get reclaimUntil(): number | null {
    return this.#reclaim?.until ?? null;
  }

  /** When the guard must be woken next (monotonic ms), if ever. */
  get next(): number | undefined {
    const until = this.#reclaim?.next;
    if (until === undefined) return this.#retryAt;
    return this.#retryAt === undefined ? until : Math.min(until, this.#retryAt);
  }

  /** Ends the reclaim grace and retries a failed write, when due. */
  wake(now: number): void {
    this.#reclaim?.wake(now);
    if (this.#retryAt !== undefined && this.#retryAt <= now) {
      this.#retryAt = undefined;
      if (this.#dirty && !this.#inFlight && !this.#closed) this.#write();
    }
  }

  /**
   * Why a builder session may not restore a lease now, if it may not.
   * During the reclaim grace only the sessions the state file records as
   * possibly holding leases may: any other's restore would be a new grant
   * in disguise, taking units a recorded builder's holders still use before
   * it is back.  With a file that could not be trusted no session is known,
   * so none may.
   */
  restoreRefusal(digest: string): string | undefined {
    if (!this.#reclaim) return undefined;
    if (this.#previous.has(ANONYMOUS)) {
      return "the state file could not be trusted, so no lease is restored during the reclaim grace";
    }
    if (digest === ANONYMOUS || !this.#previous.has(digest)) {
      return "this builder held no leases before the server restarted (the state file does not record its session)";
    }
    return undefined;
  }

  /**
   * A builder session said hello on `conn`: true if the state file records
   * it already (welcome it now); else it waits, the file is written (a
   * failed write is retried until one succeeds), and `recorded(conn)` is
   * called once it records it, unless {@linkcode abandon} comes first.
   */
  recordSession(conn: K, digest: string): boolean {
    if (!this.enabled || this.#durable.has(digest)) return true;
    this.#builders.add(digest);
    this.#waiters.set(conn, digest);
    this.#schedule();
    return false;
  }

  /**
   * A connection waiting for its session to be recorded has gone: it is
   * never welcomed, and its session leaves the file at the next write
   * unless something else keeps it (it held nothing).
   */
  abandon(conn: K): void {
    this.#waiters.delete(conn);
  }

  /**
   * The budget overrides changed: a ticket that the `persisted` callback
   * settles once the state file holds the change (true), or a write fails
   * (false; it is retried every second, and logged, until one succeeds);
   * false now if there is no state file.
   */
  persist(): number | false {
    if (!this.enabled || this.#closed) return false;
    const ticket = ++this.#generation;
    this.#schedule();
    return ticket;
  }

  /** A builder connection said hello (see {@linkcode ReclaimGrace}). */
  restoring(connection: K, digest: string): void {
    this.#reclaim?.restoring(connection, digest);
  }

  /** A builder connection sent `restored`, or closed (no digest). */
  restored(connection: K, digest: string | undefined): void {
    this.#reclaim?.restored(connection, digest);
  }

  /**
   * A clean stop: the file is clean only if nothing is held, else the next
   * start reclaims.  Nothing is written after this last write.
   */
  shutdown(held: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#reclaim = undefined;
    this.#retryAt = undefined;
    this.#waiters.clear();
    this.#settle(this.#generation, false);
    if (!this.enabled) return;
    if (!held) this.#builders.clear();
    this.#finalSeq = this.#write({ ...this.#snapshot(), clean: !held });
  }

  /** The shell's report on write `seq`: done, or failed with `error`. */
  written(seq: number, ok: boolean, error: string | undefined, now: number) {
    if (seq === this.#finalSeq) {
      if (!ok) {
        this.#opts.log.error("cannot write the state file", {
          path: this.#opts.path,
          error,
        });
      }
      return;
    }
    const inFlight = this.#inFlight;
    if (inFlight === undefined || inFlight.seq !== seq) return;
    this.#inFlight = undefined;
    if (this.#closed) return;
    if (!ok) {
      this.#failed(error, now);
      return;
    }
    const state = inFlight.state;
    this.#durable = new Set(state.builders);
    this.#settle(this.#generations.get(seq) ?? 0, true);
    this.#generations.delete(seq);
    const failures = this.#failures;
    this.#failures = 0;
    for (const [conn, digest] of this.#waiters) {
      if (!this.#durable.has(digest)) continue;
      this.#waiters.delete(conn);
      this.#opts.recorded(conn);
    }
    if (failures > 0) {
      this.#opts.log.info("state file written", {
        path: this.#opts.path,
        failures,
      });
    }
    if (this.#dirty && !this.#inFlight && this.#retryAt === undefined) {
      this.#write();
    }
  }

  /** A newer state is to be written: now, or after the one in flight. */
  #schedule(): void {
    this.#dirty = true;
    if (this.#inFlight || this.#retryAt !== undefined || this.#closed) return;
    this.#write();
  }

  /** Hands the latest state (or `state`) to the shell to write. */
  #write(state: ServerState = this.#snapshot()): number {
    this.#dirty = false;
    const seq = ++this.#seq;
    if (!this.#closed) {
      this.#inFlight = { seq, state };
      this.#generations.set(seq, this.#generation);
    }
    this.#opts.write(seq, state);
    return seq;
  }

  /** Settles every ticket up to `upTo` not settled yet. */
  #settle(upTo: number, ok: boolean): void {
    if (upTo <= this.#settled) return;
    this.#settled = upTo;
    this.#opts.persisted(upTo, ok);
  }

  /** Retried after a second; logged at most once a second, with the count. */
  #failed(error: string | undefined, now: number): void {
    this.#dirty = true;
    this.#failures++;
    this.#retryAt = now + WRITE_RETRY_MS;
    // Not on disk yet: an operator is told so rather than kept waiting.
    this.#settle(this.#generation, false);
    if (now - this.#failureLoggedAt < 1000) return;
    this.#failureLoggedAt = now;
    this.#opts.log.error("cannot write the state file", {
      path: this.#opts.path,
      error,
      failures: this.#failures,
      hint:
        "retrying every second; builders it does not record yet are not welcomed, budgets set through the admin API since are not kept yet",
    });
  }

  /**
   * What to write now: the sessions that may hold leases, the connected,
   * those in their builder grace, those waiting to be recorded and, until
   * the reclaim grace ends, the last run's.  A session that left holding
   * nothing holds nothing, so the file stays as small as the live farm
   * (sessions that came and went cannot swell it past what can be read).
   */
  #snapshot(): ServerState {
    const keep = new Set<string>(this.#opts.current());
    for (const d of this.#waiters.values()) keep.add(d);
    if (this.#keepPrevious) { for (const d of this.#previous) keep.add(d); }
    for (const d of this.#builders) if (!keep.has(d)) this.#builders.delete(d);
    return {
      version: STATE_VERSION,
      clean: false,
      fence: this.#opts.fence,
      builders: [...this.#builders],
      overrides: this.#opts.overrides(),
    };
  }
}
