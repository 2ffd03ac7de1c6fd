/**
 * What keeps the budget across a server restart: the state file (was the
 * last run's end clean, which builders may still hold leases) and the
 * reclaim grace it starts after a crash.  It fails closed: a state file
 * that cannot be read or trusted starts the full grace.
 *
 * @module
 */

import type { Logger } from "../shared/log.ts";
import { ReclaimGrace } from "./reclaim.ts";
import {
  ANONYMOUS,
  readState,
  StateWriter,
  type StoredState,
} from "./state_file.ts";

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
}

/** The state file and the reclaim grace of one server run. */
export class RestartGuard {
  #opts: RestartGuardOptions;
  #writer: StateWriter | undefined;
  /** Digests recorded as possibly holding leases. */
  #builders = new Set<string>();
  #reclaim: ReclaimGrace | undefined;

  private constructor(options: RestartGuardOptions) {
    this.#opts = options;
    if (options.path !== undefined) {
      this.#writer = new StateWriter(options.path);
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
        for (const d of stored.state.builders) guard.#builders.add(d);
      }
      // Should this run crash before its grace ends, the next start must
      // not trust the file either: ANONYMOUS is never known to be back.
      if (stored.kind === "unknown") guard.#builders.add(ANONYMOUS);
      await guard.#write(false);
    } catch (err) {
      throw new Error(
        `Cannot use the state file "${path}": ${
          (err as Error).message
        }; pass --state-file PATH, a file only sai-server writes`,
      );
    }
    if (options.reclaimMs <= 0) return guard;
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
    } else return guard;
    options.begin();
    guard.#reclaim = new ReclaimGrace({
      graceMs,
      expected,
      onEnd: (reason) => {
        options.log.info("reclaim grace ended", { reason });
        guard.#reclaim = undefined;
        // Builders that never came back have fenced by now.
        guard.#builders = new Set(options.current());
        guard.#write(false).catch((err) => guard.#error(err));
        options.end();
      },
    }, options.now());
    if (stored.kind === "unknown") {
      options.log.warn("reclaim grace: the state file cannot be trusted", {
        path,
        reason: stored.reason,
        seconds: graceMs / 1000,
        hint:
          "any builder may hold leases: only restores are admitted until the grace ends",
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

  /** Until when (epoch ms) only restores are admitted, or null. */
  get reclaimUntil(): number | null {
    return this.#reclaim?.until ?? null;
  }

  /**
   * A builder session said hello: recorded on disk before its welcome, so
   * that a restart waits for it.
   */
  async recordSession(digest: string): Promise<void> {
    if (!this.#writer || this.#builders.has(digest)) return;
    this.#builders.add(digest);
    try {
      await this.#write(false);
    } catch (err) {
      this.#error(err);
    }
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
    if (!held) this.#builders.clear();
    await this.#write(!held).catch((err) => this.#error(err));
  }

  #write(clean: boolean): Promise<void> {
    if (!this.#writer) return Promise.resolve();
    return this.#writer.write({
      version: 1,
      clean,
      fence: this.#opts.fence,
      builders: clean ? [] : [...this.#builders],
    });
  }

  #error(err: unknown): void {
    this.#opts.log.error("cannot write the state file", {
      path: this.#writer?.path,
      error: (err as Error).message,
    });
  }
}
