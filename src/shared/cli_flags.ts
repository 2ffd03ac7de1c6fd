/**
 * Checks shared by the programs' command lines.  Each throws `TypeError`,
 * which the entry point turns into a message, the usage and exit code 2.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { LogFormat } from "./log.ts";

/** A positive integer flag value. */
export function positiveInt(flag: string, value: string): number {
  if (!/^[1-9][0-9]*$/.test(value)) {
    throw new TypeError(`${flag} must be a positive integer, got "${value}"`);
  }
  return Number(value);
}

/**
 * An integer flag value from `min` to `max`, written in decimal; `maxFrom`
 * names the flag `max` comes from, for the message.
 */
export function intInRange(
  flag: string,
  value: string,
  options: { min: number; max: number; maxFrom?: string },
): number {
  const { min, max, maxFrom } = options;
  const n = Number(value);
  if (!/^(0|[1-9][0-9]*)$/.test(value) || n < min || n > max) {
    const upTo = maxFrom === undefined ? `${max}` : `${max} (${maxFrom})`;
    throw new TypeError(
      `${flag} must be an integer from ${min} to ${upTo}, got "${value}"`,
    );
  }
  return n;
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

/** A number of seconds (fractions allowed) from `min` to `max`. */
export function secondsInRange(
  flag: string,
  value: string,
  range: { min: number; max: number },
): number {
  const n = Number(value);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(value) || n < range.min || n > range.max) {
    throw new TypeError(
      `${flag} must be from ${range.min} to ${range.max} seconds, got "${value}"`,
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

/** The `options` of `node:util`'s `parseArgs`. */
export type FlagOptions = ParseConfig["options"];

type ParseConfig = NonNullable<Parameters<typeof parseArgs>[0]>;

/**
 * True when `--help` or `-h` is given as a flag (not as the value of
 * another flag, as in `--config -h`).  Checked before anything else, so that
 * help never depends on the rest of the command line being valid.
 */
export function wantsHelp(args: string[], options: FlagOptions = {}): boolean {
  const { values } = parseArgs({
    args,
    options: { ...options, help: { type: "boolean", short: "h" } },
    strict: false,
    allowPositionals: true,
  });
  return values.help === true;
}

/** Marks a negative number so that `parseArgs()` does not take it for flags. */
const NUMBER_MARK = "\u0000";

function unmark<V>(value: V): V {
  if (typeof value === "string" && value.startsWith(NUMBER_MARK)) {
    return value.slice(NUMBER_MARK.length) as V;
  }
  return Array.isArray(value) ? value.map(unmark) as V : value;
}

/**
 * `parseArgs()` with two changes.  A negative number such as `-1` is an
 * argument (or a flag's value), so that `sai-resource r -1 30` hears that
 * AMOUNT must be positive rather than that `-1` is an unknown option.  And
 * its errors are ours: `node:util` says "Unknown option '--x'. To specify a
 * positional argument starting with a '-', place it at the end of the
 * command after '--', as in '-- "--x"", whose quotes do not balance and
 * whose advice would make `sai-resource` launch a command.
 */
export function parseFlags<T extends ParseConfig>(
  config: T,
): ReturnType<typeof parseArgs<T>> {
  const args = config.args?.map((arg) =>
    /^-[0-9]/.test(arg) ? NUMBER_MARK + arg : arg
  );
  let parsed;
  try {
    parsed = parseArgs({ ...config, ...(args && { args }) });
  } catch (err) {
    const code = (err as { code?: string }).code;
    const message = unmark((err as Error).message);
    const quoted = /'([^']*)'/.exec(message)?.[1];
    if (quoted === undefined) throw err;
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      throw new TypeError(`unknown option "${quoted}"`);
    }
    if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
      throw new TypeError(`unexpected argument "${quoted}"`);
    }
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      const flag = quoted.split(" ")[0];
      throw new TypeError(
        /does not take/.test(message)
          ? `${flag} takes no value`
          : /ambiguous/.test(message)
          ? `${flag} needs a value; write ${flag}=VALUE for one that starts with "-"`
          : `${flag} needs a value`,
      );
    }
    throw err;
  }
  const values = Object.fromEntries(
    Object.entries(parsed.values).map(([k, v]) => [k, unmark(v)]),
  );
  return {
    ...parsed,
    values,
    positionals: parsed.positionals.map(unmark),
  } as ReturnType<typeof parseArgs<T>>;
}
