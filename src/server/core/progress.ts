/**
 * Queue progress: pushes each waiting request's position and estimated
 * start to its builder when they change, at most once per interval, only
 * for the resources that changed, and only for the requests that asked
 * (`"progress": true`).  The C client never asks; under load, positions
 * move on every grant, and pushing them to every queued request made up
 * most of the server's messages (a snapshot of the queue and one message
 * per queued request, four times a second, that the builder dropped).
 *
 * It keeps the time of its next push ({@linkcode QueueProgress.due}); the
 * server wakes it then ({@linkcode QueueProgress.wake}).
 *
 * @module
 */

import type { Allocator, QueuedStatus } from "../../allocator/allocator.ts";
import { type QueuedMessage, SCHEMA } from "../../protocol/protocol.ts";

/** Options for {@linkcode QueueProgress}. */
export interface QueueProgressOptions {
  allocator: Allocator;
  /** Delivers a message to the builder that owns a request. */
  send: (owner: string, msg: QueuedMessage) => void;
  /** How often positions are pushed at most, in ms. */
  intervalMs: number;
}

/** Tracks changed resources and pushes the positions that moved. */
export class QueueProgress {
  #opts: QueueProgressOptions;
  /** When the next push is due (monotonic ms), if one is. */
  #due: number | undefined;
  #dirty = new Set<string>();
  /**
   * The requests that asked for progress, by owner then cookie, with what
   * was last pushed to each ("" before the first push).
   */
  #last = new Map<string, Map<string, string>>();
  #closed = false;

  constructor(options: QueueProgressOptions) {
    this.#opts = options;
  }

  /** A resource's queue may have moved. */
  touch(resname: string): void {
    // Nobody watches: nothing to push (watch() marks its own resources).
    if (this.#last.size === 0) return;
    this.#dirty.add(resname);
  }

  /** Whether any queued request asked for progress. */
  get watching(): boolean {
    return this.#last.size > 0;
  }

  /** Every resource's queue may have moved. */
  touchAll(): void {
    for (const name of this.#opts.allocator.budgets().keys()) {
      this.#dirty.add(name);
    }
  }

  /**
   * A queued request asked for progress: push it its positions in the
   * queues of `resnames`, the first soon.
   */
  watch(owner: string, cookie: string, resnames: string[], now: number): void {
    let mine = this.#last.get(owner);
    if (!mine) this.#last.set(owner, mine = new Map());
    if (!mine.has(cookie)) mine.set(cookie, "");
    for (const name of resnames) this.#dirty.add(name);
    this.arm(now);
  }

  /** A request is no longer queued: forget what was last pushed for it. */
  forget(owner: string, cookie: string): void {
    // On every grant and release: two lookups, no key string to build.
    const mine = this.#last.get(owner);
    if (mine?.delete(cookie) && mine.size === 0) this.#last.delete(owner);
  }

  /** A builder is gone: forget what was last pushed for its requests. */
  forgetOwner(owner: string): void {
    this.#last.delete(owner);
  }

  /** Pushes within the interval from `now` if anything changed. */
  arm(now: number): void {
    if (this.#dirty.size === 0) return;
    if (this.#last.size === 0) {
      // Nobody is watching: nothing to push, and nothing to compare with
      // later (a request that asks gets its first position in full).
      this.#dirty.clear();
      return;
    }
    if (this.#due !== undefined || this.#closed) return;
    this.#due = now + this.#opts.intervalMs;
  }

  /** When the next push is due (monotonic ms), if one is. */
  get due(): number | undefined {
    return this.#due;
  }

  /** Pushes what moved, if the push is due by `now`. */
  wake(now: number): void {
    if (this.#due === undefined || this.#due > now) return;
    this.#due = undefined;
    this.#push(now);
  }

  /** No more pushes (the server is stopping). */
  close(): void {
    this.#closed = true;
    this.#due = undefined;
  }

  #push(now: number): void {
    const allocator = this.#opts.allocator;
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
      const res = allocator.queued(name) === 0
        ? undefined
        : allocator.statusOf(name);
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
        const names = allocator.lookup(q.owner, q.cookie)?.resnames;
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
        const mine = this.#last.get(q.owner);
        const last = mine?.get(q.cookie);
        if (last === undefined || last === sig) continue;
        mine!.set(q.cookie, sig);
        this.#opts.send(q.owner, {
          schema: SCHEMA,
          cookie: q.cookie,
          queued: { position, eta },
        });
      }
    }
  }
}
