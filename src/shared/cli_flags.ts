/**
 * Checks shared by the programs' command lines.  Each throws `TypeError`,
 * which the entry point turns into a message, the usage and exit code 2.
 *
 * @module
 */

import type { LogFormat } from "./log.ts";

/** A positive integer flag value. */
export function positiveInt(flag: string, value: string): number {
  if (!/^[1-9][0-9]*$/.test(value)) {
    throw new TypeError(`${flag} must be a positive integer, got "${value}"`);
  }
  return Number(value);
}

/** A positive number of seconds, fractions allowed. */
export function positiveSeconds(flag: string, value: string): number {
  const n = Number(value);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(value) || !(n > 0)) {
    throw new TypeError(
      `${flag} must be a positive number of seconds, got "${value}"`,
    );
  }
  return n;
}

/** The contents of a file a flag names. */
export async function readFlagFile(
  flag: string,
  path: string,
): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new TypeError(
      `cannot read ${flag} "${path}": ${(err as Error).message}`,
    );
  }
}

/** A `--log-format` value. */
export function parseLogFormat(value: string): LogFormat {
  if (value !== "text" && value !== "json") {
    throw new TypeError(`--log-format must be text or json, got "${value}"`);
  }
  return value;
}
