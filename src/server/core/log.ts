/**
 * Logging in the core: log lines become {@linkcode LogAction}s for the
 * shell's logger.  Fields are built only for the levels that are written,
 * as the shell's logger did (`enabled()` first on hot paths).
 *
 * @module
 */

import type { LogAction } from "../../shared/core_io.ts";
import type { Fields, Level } from "../../shared/log.ts";

/** What the core's modules log through (the shell's `Logger` fits it too). */
export interface Log {
  /** Whether lines at this level are written. */
  enabled(level: Level): boolean;
  error(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  debug(msg: string, fields?: Fields): void;
}

const RANK: Record<Level, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** A {@linkcode Log} that appends log actions to the current event's list. */
export class ActionLog implements Log {
  #rank: number;
  #emit: (action: LogAction) => void;

  /** Hands lines at `level` and more severe to `emit`. */
  constructor(level: Level, emit: (action: LogAction) => void) {
    this.#rank = RANK[level];
    this.#emit = emit;
  }

  enabled(level: Level): boolean {
    return RANK[level] <= this.#rank;
  }

  #log(level: Level, msg: string, fields: Fields | undefined): void {
    if (RANK[level] > this.#rank) return;
    this.#emit({ type: "log", level, msg, fields: fields ?? {} });
  }

  error(msg: string, fields?: Fields): void {
    this.#log("error", msg, fields);
  }
  warn(msg: string, fields?: Fields): void {
    this.#log("warn", msg, fields);
  }
  info(msg: string, fields?: Fields): void {
    this.#log("info", msg, fields);
  }
  debug(msg: string, fields?: Fields): void {
    this.#log("debug", msg, fields);
  }
}
