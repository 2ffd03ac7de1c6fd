/**
 * The builder grace: a builder whose link is lost keeps its leases counted
 * until their own end or the grace, from when the server last heard it,
 * whichever comes first.  The builder fences itself well before that if it
 * cannot resume its session, so no holder outlives its count.
 *
 * @module
 */

import type { Allocator, Outcome } from "../allocator/allocator.ts";
import type { Logger } from "../shared/log.ts";
import type { QueueProgress } from "./progress.ts";
import type { Detached, Session } from "./sessions.ts";
import { ANONYMOUS } from "./core/state.ts";
import type { ServerStats } from "./status_document.ts";

/** What the builder grace needs from the server. */
export interface BuilderGraceOptions {
  allocator: Allocator;
  stats: ServerStats;
  log: Logger;
  progress: QueueProgress;
  /**
   * How long after the server last heard a lost builder its leases are
   * dropped, in ms: the builder grace plus a heartbeat (see server_app.ts).
   */
  graceMs: number;
  now: () => number;
  /** Delivers outcomes. */
  apply: (outcomes: Outcome[]) => void;
  /** The builder session is gone for good (its public id may go). */
  forget: (owner: string) => void;
}

/** Builders whose link is lost while their leases are still counted. */
export class BuilderGrace {
  #opts: BuilderGraceOptions;
  #detached = new Map<string, Detached>();

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

  /** The builder is back with its session: its grace ends, it keeps all. */
  resume(owner: string): void {
    const d = this.#detached.get(owner);
    if (!d) return;
    clearTimeout(d.timer);
    this.#detached.delete(owner);
  }

  /** Stops every timer (server shutting down). */
  close(): void {
    for (const d of this.#detached.values()) clearTimeout(d.timer);
  }

  /**
   * A builder's link is lost.  Its queued requests are withdrawn (it
   * re-sends them when it is back); its leases stay counted until their
   * own end or the builder grace, from when it was last heard: the builder
   * fences itself before that if it cannot resume its session.
   */
  detach(conn: Session, owner: string): void {
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
    if (conn.digest === ANONYMOUS) {
      // Without a session it can never resume: nothing to keep them for.
      this.#opts.apply(out);
      this.#detached.set(owner, {
        name: conn.name ?? "",
        publicId: conn.publicId,
        digest: conn.digest,
        timer: undefined,
      });
      this.drop(owner);
      return;
    }
    const wait = Math.max(
      0,
      conn.lastHeard + this.#opts.graceMs - this.#opts.now(),
    );
    this.#detached.set(owner, {
      name: conn.name ?? "",
      publicId: conn.publicId,
      digest: conn.digest,
      timer: setTimeout(() => this.drop(owner), wait),
    });
    this.#opts.log.info("builder leases kept for the builder grace", {
      builder: conn.publicId,
      leases,
      seconds: Math.round(wait) / 1000,
    });
    this.#opts.apply(out);
  }

  /** The builder grace ran out: its leases are dropped. */
  drop(owner: string): void {
    const d = this.#detached.get(owner);
    if (!d) return;
    this.#detached.delete(owner);
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
}
