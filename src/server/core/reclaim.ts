/**
 * The reclaim grace after a server start that follows a crash: only
 * restores are admitted and nothing new is granted, until every builder
 * that may hold leases has re-sent them (known from the state file) or the
 * grace runs out.  It never ends while a builder it waits for is between
 * its hello and its `restored` marker.  A builder recorded without a
 * session ({@linkcode ANONYMOUS}) cannot be told from another, so it is
 * never known to be back; when the state file could not be trusted, any
 * builder may hold leases, and only time ends the grace.
 *
 * Its end by time is {@linkcode ReclaimGrace.until}; the server wakes it
 * then ({@linkcode ReclaimGrace.wake}).
 *
 * @module
 */

import { ANONYMOUS } from "./state.ts";

/** Options for {@linkcode ReclaimGrace}. */
export interface ReclaimOptions {
  /** How long at most, in ms. */
  graceMs: number;
  /**
   * Digests of the builder sessions that may hold leases, or "unknown":
   * any builder may (the grace then ends only when its time is up).
   */
  expected: Iterable<string> | "unknown";
  /** Called once, when the grace ends. */
  onEnd: (reason: "time" | "all builders restored") => void;
}

/** One reclaim grace, from its start. */
export class ReclaimGrace {
  #waiting: Set<string>;
  /** Every builder may hold leases: nobody's `restored` ends the grace. */
  #unknown: boolean;
  /** Connections between their hello and their `restored`. */
  #restoring = new Set<unknown>();
  #timeUp = false;
  #ended = false;
  #onEnd: ReclaimOptions["onEnd"];
  /** When the grace runs out (monotonic ms). */
  readonly until: number;

  /** A grace that starts at `now` (monotonic ms). */
  constructor(options: ReclaimOptions, now: number) {
    this.#unknown = options.expected === "unknown";
    this.#waiting = new Set(
      options.expected === "unknown" ? [] : options.expected,
    );
    this.#onEnd = options.onEnd;
    this.until = now + options.graceMs;
  }

  /**
   * When it must be woken to end by time (monotonic ms); undefined once its
   * time is up, when only a restore under way keeps it (its `restored`, or
   * its connection's end, ends it then).
   */
  get next(): number | undefined {
    return this.#timeUp || this.#ended ? undefined : this.until;
  }

  /** Its time is up at `now` or before: it ends unless a restore is under way. */
  wake(now: number): void {
    if (this.#ended || this.#timeUp || now < this.until) return;
    this.#timeUp = true;
    this.#check("time");
  }

  get ended(): boolean {
    return this.#ended;
  }

  /**
   * A builder said hello: if it may hold leases from before, it is
   * restoring until its `restored` marker.
   */
  restoring(connection: unknown, digest: string): void {
    if (this.#unknown || this.#waiting.has(digest)) {
      this.#restoring.add(connection);
    }
  }

  /** A builder connection sent `restored` (or closed). */
  restored(connection: unknown, digest: string | undefined): void {
    this.#restoring.delete(connection);
    // Any builder without a session is "anonymous": its `restored` says
    // nothing about the one recorded.
    if (digest !== undefined && digest !== ANONYMOUS) {
      this.#waiting.delete(digest);
    }
    this.#check(this.#timeUp ? "time" : "all builders restored");
  }

  #check(reason: "time" | "all builders restored"): void {
    if (this.#ended || this.#restoring.size > 0) return;
    if (!this.#timeUp && (this.#unknown || this.#waiting.size > 0)) return;
    this.#ended = true;
    this.#onEnd(reason);
  }
}
