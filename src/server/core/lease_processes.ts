/**
 * Which process each lease is held for, as our holders say in their
 * requests (`"process"`): shown in the status so that an operator can tell
 * a fixture held for a running ctest from one nobody watches.  Kept beside
 * the allocator, not in it: it is display data, and the allocator's state
 * stays what the budget needs.
 *
 * @module
 */

import type { OwnerProcess } from "../../protocol/protocol.ts";

/** Process tags by builder session and cookie. */
export class LeaseProcesses {
  #tags = new Map<string, OwnerProcess>();
  #isLive: (owner: string, cookie: string) => boolean;
  #limit = 1024;

  /** `isLive` says whether the allocator still knows a request or lease. */
  constructor(isLive: (owner: string, cookie: string) => boolean) {
    this.#isLive = isLive;
  }

  /** Records a request's tag; a request without one clears an old one. */
  note(owner: string, cookie: string, process: OwnerProcess | undefined): void {
    // The C client sends no tag: no key string to build while none is kept.
    if (process === undefined && this.#tags.size === 0) return;
    const key = `${owner}\0${cookie}`;
    if (process) this.#tags.set(key, process);
    else this.#tags.delete(key);
    if (this.#tags.size > this.#limit) this.#prune();
  }

  /** The tag of a lease or queued request, if it has one. */
  get(owner: string, cookie: string): OwnerProcess | undefined {
    return this.#tags.get(`${owner}\0${cookie}`);
  }

  /** Forgets the tag of a lease that ended. */
  forget(owner: string, cookie: string): void {
    if (this.#tags.size === 0) return;
    this.#tags.delete(`${owner}\0${cookie}`);
  }

  /** How many tags are kept (for tests). */
  get size(): number {
    return this.#tags.size;
  }

  /**
   * Drops the tags of leases that ended some other way (expiry, refusal,
   * a builder dropped): amortised, the limit doubles with what stays.
   */
  #prune(): void {
    for (const key of this.#tags.keys()) {
      const at = key.indexOf("\0");
      if (!this.#isLive(key.slice(0, at), key.slice(at + 1))) {
        this.#tags.delete(key);
      }
    }
    this.#limit = Math.max(1024, this.#tags.size * 2);
  }
}
