/**
 * The builder grace: a builder whose link is lost keeps its leases counted
 * until their own end or the grace, from when the server last heard it,
 * whichever comes first.  The builder fences itself well before that if it
 * cannot resume its session, so no holder outlives its count.
 *
 * It keeps the time of the next drop ({@linkcode BuilderGrace.next}); the
 * server wakes it then ({@linkcode BuilderGrace.wake}).
 *
 * @module
 */

import type { Allocator, Outcome } from "../../allocator/allocator.ts";
import type { Log } from "./log.ts";
import type { QueueProgress } from "./progress.ts";
import { ANONYMOUS } from "./state.ts";
import type { ServerStats } from "./stats.ts";

/** A builder whose link is lost while its leases are still counted. */
export interface Detached {
  name: string;
  publicId: string;
  digest: string | undefined;
  /** When its leases are dropped (monotonic ms). */
  dropAt: number;
}

/** What a lost builder's connection tells the grace. */
export interface LostLink {
  name: string | undefined;
  publicId: string;
  digest?: string | undefined;
  /** When the server last heard from it (monotonic ms). */
  lastHeard: number;
}

/** What the builder grace needs from the server. */
export interface BuilderGraceOptions {
  allocator: Allocator;
  stats: ServerStats;
  log: Log;
  progress: QueueProgress;
  /**
   * How long after the server last heard a lost builder its leases are
   * dropped, in ms: the builder grace plus a heartbeat (see server_core.ts).
   */
  graceMs: number;
  /** Delivers outcomes. */
  apply: (outcomes: Outcome[]) => void;
  /** The builder session is gone for good (its public id may go). */
  forget: (owner: string) => void;
}

/** Builders whose link is lost while their leases are still counted. */
export class BuilderGrace {
  #opts: BuilderGraceOptions;
  #detached = new Map<string, Detached>();
  /** The earliest dropAt, kept as builders come and go. */
  #next: number | undefined;

  constructor(options: BuilderGraceOptions) {
    this.#opts = options;
  }

  /** A lost builder, if its grace still runs. */
  get(owner: string): Detached | undefined {
    return this.#detached.get(owner);
  }

  /** Every lost builder whose grace still runs, by owner. */
  entries(): IterableIterator<[string, Detached]> {
    return this.#detached.entries();
  }

  /** When the next builder's leases are dropped (monotonic ms), if any. */
  get next(): number | undefined {
    return this.#next;
  }

  /** The builder is back with its session: its grace ends, it keeps all. */
  resume(owner: string): void {
    if (!this.#detached.delete(owner)) return;
    this.#opts.allocator.resumeExpiries(owner);
    this.#recompute();
  }

  /**
   * A builder's link is lost.  Its queued requests are withdrawn (it
   * re-sends them when it is back); its leases stay counted until the
   * builder grace, from when it was last heard, even past their own end:
   * a builder that is frozen cannot tell its holders that a lease ended
   * until it wakes, and it wakes (and fences) within the grace.  A builder
   * that is not frozen ends them itself at their end, link or no link.
   */
  detach(link: LostLink, owner: string, now: number): void {
    this.#opts.progress.forgetOwner(owner);
    this.#opts.progress.touchAll();
    const out: Outcome[] = [];
    let leases = 0;
    for (const cookie of this.#opts.allocator.cookiesOf(owner)) {
      if (this.#opts.allocator.lookup(owner, cookie)?.state === "leased") {
        leases++;
        continue;
      }
      const { found, outcomes } = this.#opts.allocator.release(owner, cookie);
      if (found === "queued") this.#opts.stats.withdrawals++;
      out.push(...outcomes);
    }
    if (leases === 0) {
      this.#opts.forget(owner);
      this.#opts.apply(out);
      return;
    }
    const detached: Detached = {
      name: link.name ?? "",
      publicId: link.publicId,
      digest: link.digest,
      dropAt: link.lastHeard + this.#opts.graceMs,
    };
    if (link.digest === ANONYMOUS) {
      // Without a session it can never resume: nothing to keep them for.
      this.#opts.apply(out);
      this.#detached.set(owner, detached);
      this.#drop(owner);
      return;
    }
    const wait = Math.max(0, detached.dropAt - now);
    this.#detached.set(owner, detached);
    this.#opts.allocator.holdExpiries(owner);
    if (this.#next === undefined || detached.dropAt < this.#next) {
      this.#next = detached.dropAt;
    }
    this.#opts.log.info("builder leases kept for the builder grace", {
      builder: link.publicId,
      leases,
      seconds: Math.round(wait) / 1000,
    });
    this.#opts.apply(out);
  }

  /** Drops the leases of every builder whose grace ran out by `now`. */
  wake(now: number): void {
    if (this.#next === undefined || this.#next > now) return;
    for (const [owner, d] of [...this.#detached]) {
      if (d.dropAt <= now) this.#drop(owner);
    }
  }

  /** The builder grace ran out: its leases are dropped. */
  #drop(owner: string): void {
    const d = this.#detached.get(owner);
    if (!d) return;
    this.#detached.delete(owner);
    this.#recompute();
    this.#opts.forget(owner);
    let leases = 0;
    for (const cookie of this.#opts.allocator.cookiesOf(owner)) {
      if (this.#opts.allocator.lookup(owner, cookie)?.state === "leased") {
        leases++;
      }
    }
    this.#opts.stats.drops += leases;
    this.#opts.log.warn(
      "builder gone: leases dropped after the builder grace",
      {
        builder: d.publicId,
        name: d.name,
        leases,
      },
    );
    this.#opts.progress.touchAll();
    this.#opts.apply(this.#opts.allocator.dropOwner(owner));
  }

  #recompute(): void {
    let next: number | undefined;
    for (const d of this.#detached.values()) {
      if (next === undefined || d.dropAt < next) next = d.dropAt;
    }
    this.#next = next;
  }
}
