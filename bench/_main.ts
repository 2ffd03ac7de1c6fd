// deno-lint-ignore-file no-console -- prints a benchmark's usage and errors
/**
 * Runs a benchmark's `main()`: `--help` prints its usage (exit 0), and a
 * flag the benchmark does not know, or a bad value for one, is a one-line
 * error (exit 2) instead of a stack trace.
 *
 * @module
 */

/** A flag's value that a benchmark cannot run with. */
export class BenchUsageError extends Error {
  override name = "BenchUsageError";
}

/**
 * A number flag: `value` (or `fallback` when the flag is absent) must be a
 * number from `min` to `max`, and an integer unless `fraction`.
 */
export function numberFlag(
  flag: string,
  value: string | undefined,
  options: { fallback: number; min: number; max: number; fraction?: boolean },
): number {
  if (value === undefined) return options.fallback;
  const n = Number(value);
  const kind = options.fraction ? "a number" : "an integer";
  if (
    value.trim() === "" || !Number.isFinite(n) ||
    (!options.fraction && !Number.isInteger(n)) || n < options.min ||
    n > options.max
  ) {
    throw new BenchUsageError(
      `${flag} must be ${kind} from ${options.min} to ${options.max}, got "${value}"`,
    );
  }
  return n;
}

/** Runs `main(Deno.args)` with `usage` for `--help` and bad flags. */
export async function runBench(
  main: (args: string[]) => unknown,
  usage: string,
): Promise<void> {
  if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
    console.log(usage);
    return;
  }
  try {
    await main(Deno.args);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const badFlag = typeof code === "string" &&
      code.startsWith("ERR_PARSE_ARGS");
    if (!badFlag && !(err instanceof BenchUsageError)) throw err;
    // node:util's messages can run over several lines: one is enough.
    const message = (err as Error).message.replace(/\s*\n\s*/g, " ");
    console.error(`error: ${message} (try --help)`);
    Deno.exit(2);
  }
}
