/**
 * A small structured logger for the programs: human-readable lines by
 * default, or one JSON object per line, on stderr.
 *
 * @module
 */

/** Log levels, least to most verbose. */
export const LEVELS = ["error", "warn", "info", "debug"] as const;

/** A log level. */
export type Level = typeof LEVELS[number];

/** How log lines look. */
export type LogFormat = "text" | "json";

/** Fields attached to a log event. */
export type Fields = Record<string, unknown>;

/** Writes log events at or above a level. */
export class Logger {
  #rank: number;
  #format: LogFormat;
  #write: (line: string) => void;

  constructor(
    level: Level = "info",
    options?: { format?: LogFormat; write?: (line: string) => void },
  ) {
    this.#rank = LEVELS.indexOf(level);
    this.#format = options?.format ?? "text";
    const encoder = new TextEncoder();
    this.#write = options?.write ??
      ((line) => Deno.stderr.writeSync(encoder.encode(line + "\n")));
  }

  /** Whether events at this level are written. */
  enabled(level: Level): boolean {
    return LEVELS.indexOf(level) <= this.#rank;
  }

  log(level: Level, event: string, fields: Fields = {}): void {
    if (!this.enabled(level)) return;
    const time = new Date().toISOString();
    if (this.#format === "json") {
      this.#write(JSON.stringify({ time, level, event, ...fields }));
      return;
    }
    const rest = Object.entries(fields)
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" ");
    this.#write(
      `${time} ${level.toUpperCase()} ${event}${rest ? " " + rest : ""}`,
    );
  }

  error(event: string, fields?: Fields): void {
    this.log("error", event, fields);
  }
  warn(event: string, fields?: Fields): void {
    this.log("warn", event, fields);
  }
  info(event: string, fields?: Fields): void {
    this.log("info", event, fields);
  }
  debug(event: string, fields?: Fields): void {
    this.log("debug", event, fields);
  }
}

/** Parses a `--log-level` value; throws `RangeError` for others. */
export function parseLevel(value: string): Level {
  if ((LEVELS as readonly string[]).includes(value)) return value as Level;
  throw new RangeError(
    `Cannot parse --log-level: expected one of ${
      LEVELS.join(", ")
    }, got "${value}"`,
  );
}
