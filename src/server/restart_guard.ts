/**
 * What keeps the budget across a server restart: the state file (was the
 * last run's end clean, which builders may still hold leases) and the
 * reclaim grace it starts after a crash.  It fails closed: a state file
 * that cannot be read or trusted starts the full grace, and a builder is
 * welcomed only once the file records it.
 *
 * @module
 */

import type { Logger } from "../shared/log.ts";
import { ReclaimGrace } from "./reclaim.ts";
import { readState, StateWriter } from "./state_file.ts";
import {
  ANONYMOUS,
  type ServerState,
  STATE_VERSION,
  type StoredState,
} from "./core/state.ts";

/** Options for {@linkcode RestartGuard.load}. */
export interface RestartGuardOptions {
  /** The state file; without one every start counts as a first start. */
  path: string | undefined;
  /** Longest reclaim grace, in ms; 0: none. */
  reclaimMs: number;
  /** The fence (seconds) this run announces to its builders. */
  fence: number;
  log: Logger;
  now: () => number;
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
}

/** What an untrusted state file costs besides the reclaim grace. */
const LOST_OVERRIDES =
  "budgets set through the admin API, if it recorded any, are the config's again";

/** A hello waiting for the state file to record its session. */
interface Waiter {
  digest: string;
  /** Whether its connection has gone: then it is never welcomed. */
  gone: () => boolean;
  resolve: (recorded: boolean) => void;
}

/** The state file and the reclaim grace of one server run. */
export class RestartGuard {
  #opts: RestartGuardOptions;
  #writer: StateWriter | undefined;
  /** Digests recorded as possibly holding leases (or about to be). */
  #builders = new Set<string>();
  /** Digests in the state file as last written. */
  #durable = new Set<string>();
  #waiters = new Set<Waiter>();
  #reclaim: ReclaimGrace | undefined;
  /**
   * The sessions that may hold leases from the last run (ANONYMOUS: the
   * file could not be trusted, any may), kept in the file until the
   * reclaim grace ends; only they may restore leases during it.
   */
  #previous = new Set<string>();
  /** Whether the last run's sessions are still kept (until the grace ends). */
  #keepPrevious = true;
  /** When a failed write was last logged (ms, by `now`). */
  #failureLoggedAt = -Infinity;
  /** Counts calls to persist(): a snapshot records the count it saw. */
  #generation = 0;
  #generations = new WeakMap<ServerState, number>();
  /** persist() calls waiting for a write that includes their change. */
  #persisting: { generation: number; resolve: (ok: boolean) => void }[] = [];

  private constructor(options: RestartGuardOptions) {
    this.#opts = options;
    if (options.path !== undefined) {
      this.#writer = new StateWriter(options.path, {
        snapshot: () => this.#snapshot(),
        onWritten: (state, failures) => this.#written(state, failures),
        onFailed: (err, failures) => this.#failed(err, failures),
      });
    }
  }

  /**
   * Reads the state file, starts the reclaim grace if the last run did not
   * end cleanly (or the file cannot be trusted), and marks the file dirty
   * before anything can be granted.
   */
  static async load(options: RestartGuardOptions): Promise<RestartGuard> {
    const guard = new RestartGuard(options);
    const path = options.path;
    if (path === undefined) return guard;
    let stored: StoredState;
    try {
      stored = await readState(path);
      if (stored.kind === "state" && !stored.state.clean) {
        for (const d of stored.state.builders) guard.#previous.add(d);
      }
      if (stored.kind === "state") {
        options.restoreOverrides(stored.state.overrides);
      }
      // Should this run crash before its grace ends, the next start must
      // not trust the file either: ANONYMOUS is never known to be back.
      if (stored.kind === "unknown") guard.#previous.add(ANONYMOUS);
      for (const d of guard.#previous) guard.#builders.add(d);
      const state = guard.#snapshot();
      await guard.#writer!.writeOnce(state);
      guard.#durable = new Set(state.builders);
    } catch (err) {
      throw new Error(
        `Cannot use the state file "${path}": ${
          (err as Error).message
        }; pass --state-file PATH, a file only sai-server writes`,
      );
    }
    if (options.reclaimMs <= 0) {
      guard.#keepPrevious = false;
      if (stored.kind === "unknown") {
        options.log.warn("the state file cannot be trusted", {
          path,
          reason: stored.reason,
          hint: LOST_OVERRIDES,
        });
      }
      return guard;
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
      guard.#keepPrevious = false;
      return guard;
    }
    options.begin();
    guard.#reclaim = new ReclaimGrace({
      graceMs,
      expected,
      onEnd: (reason) => {
        options.log.info("reclaim grace ended", { reason });
        guard.#reclaim = undefined;
        guard.#keepPrevious = false;
        // Builders that never came back have fenced by now; those still
        // waiting for their welcome are yet to be recorded.
        guard.#builders = new Set([
          ...options.current(),
          ...[...guard.#waiters].map((w) => w.digest),
        ]);
        guard.#writer?.schedule();
        options.end();
      },
    }, options.now());
    if (stored.kind === "unknown") {
      options.log.warn("reclaim grace: the state file cannot be trusted", {
        path,
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
    return guard;
  }

  /** Until when (monotonic ms) only restores are admitted, or null. */
  get reclaimUntil(): number | null {
    return this.#reclaim?.until ?? null;
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
   * A builder session said hello: resolves true once the state file
   * records it, so that a restart waits for it; a failed write is retried
   * until one succeeds.  Resolves false if `gone()` turns true first (its
   * connection closed): it must not be welcomed then.
   */
  recordSession(digest: string, gone: () => boolean): Promise<boolean> {
    if (!this.#writer || this.#durable.has(digest)) {
      return Promise.resolve(true);
    }
    this.#builders.add(digest);
    const { promise, resolve } = Promise.withResolvers<boolean>();
    this.#waiters.add({ digest, gone, resolve });
    this.#writer.schedule();
    return promise;
  }

  /**
   * The budget overrides changed: resolves true once the state file holds
   * the change, false if there is no state file or a write failed (it is
   * retried every second, and logged, until one succeeds).
   */
  persist(): Promise<boolean> {
    if (!this.#writer) return Promise.resolve(false);
    const { promise, resolve } = Promise.withResolvers<boolean>();
    this.#persisting.push({ generation: ++this.#generation, resolve });
    this.#writer.schedule();
    return promise;
  }

  /** A builder connection said hello (see {@linkcode ReclaimGrace}). */
  restoring(connection: string, digest: string): void {
    this.#reclaim?.restoring(connection, digest);
  }

  /** A builder connection sent `restored`, or closed (no digest). */
  restored(connection: string, digest: string | undefined): void {
    this.#reclaim?.restored(connection, digest);
  }

  /** A clean stop: clean only if nothing is held, else the next start reclaims. */
  async shutdown(held: boolean): Promise<void> {
    this.#reclaim?.close();
    for (const w of this.#waiters) w.resolve(false);
    this.#waiters.clear();
    for (const p of this.#persisting.splice(0)) p.resolve(false);
    if (!this.#writer) return;
    this.#writer.close();
    if (!held) this.#builders.clear();
    await this.#writer.writeOnce({ ...this.#snapshot(), clean: !held })
      .catch((err) => {
        this.#opts.log.error("cannot write the state file", {
          path: this.#writer?.path,
          error: (err as Error).message,
        });
      });
  }

  /**
   * What to write now.  A hello whose connection has gone is dropped
   * first, with its session unless something else keeps it: it was never
   * welcomed, so it holds nothing.
   */
  #snapshot(): ServerState {
    for (const w of this.#waiters) {
      if (!w.gone()) continue;
      this.#waiters.delete(w);
      w.resolve(false);
      const kept = this.#durable.has(w.digest) ||
        [...this.#waiters].some((o) => o.digest === w.digest);
      if (!kept) this.#builders.delete(w.digest);
    }
    this.#prune();
    const state: ServerState = {
      version: STATE_VERSION,
      clean: false,
      fence: this.#opts.fence,
      builders: [...this.#builders],
      overrides: this.#opts.overrides(),
    };
    this.#generations.set(state, this.#generation);
    return state;
  }

  /**
   * Keeps only the sessions that may hold leases: the connected, those in
   * their builder grace, those waiting to be recorded and, until the
   * reclaim grace ends, the last run's.  A session that left holding
   * nothing holds nothing, so the file stays as small as the live farm
   * (sessions that came and went cannot swell it past what can be read).
   */
  #prune(): void {
    const keep = new Set<string>(this.#opts.current());
    for (const w of this.#waiters) keep.add(w.digest);
    if (this.#keepPrevious) { for (const d of this.#previous) keep.add(d); }
    for (const d of this.#builders) if (!keep.has(d)) this.#builders.delete(d);
  }

  #written(state: ServerState, failures: number): void {
    this.#durable = new Set(state.builders);
    const generation = this.#generations.get(state) ?? 0;
    this.#persisting = this.#persisting.filter((p) => {
      if (p.generation > generation) return true;
      p.resolve(true);
      return false;
    });
    for (const w of this.#waiters) {
      if (!this.#durable.has(w.digest)) continue;
      this.#waiters.delete(w);
      w.resolve(true);
    }
    if (failures > 0) {
      this.#opts.log.info("state file written", {
        path: this.#writer?.path,
        failures,
      });
    }
  }

  /** Logged at most once a second, with the count of failures so far. */
  #failed(err: unknown, failures: number): void {
    // Not on disk yet: an operator is told so rather than kept waiting.
    for (const p of this.#persisting.splice(0)) p.resolve(false);
    const now = this.#opts.now();
    if (now - this.#failureLoggedAt < 1000) return;
    this.#failureLoggedAt = now;
    this.#opts.log.error("cannot write the state file", {
      path: this.#writer?.path,
      error: (err as Error).message,
      failures,
      hint:
        "retrying every second; builders it does not record yet are not welcomed, budgets set through the admin API since are not kept yet",
    });
  }
}
